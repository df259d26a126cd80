"""A simulated scheduler: the pure state machine, a fake clock and one connected client."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from celeriac.scheduler.records import SchedulerConfig, Send
from celeriac.scheduler.state import SchedulerState
from celeriac.wire.protocol import VERSION, Message, decode, encode

#: The client every simulation starts with.
CLIENT = b"client-1"


def message(op: str, payloads: Iterable[Any] = (), **fields: Any) -> Message:
    """A message as a peer would send it; each payload is a list of frames.

    ``op`` and ``fields`` are taken as given: nothing is validated.
    """
    return Message(op, fields, list(payloads))


def hello_worker(
    slots: int = 1, queues: Sequence[str] = ("default",), version: int = VERSION
) -> Message:
    """A worker's registration: ``slots`` tasks at once from ``queues``, speaking ``version``."""
    return message(
        "hello-worker", version=version, slots=slots, queues=list(queues), name="w", pid=1
    )


def ops(sends: Iterable[Send]) -> list[tuple[bytes, str, str | None]]:
    """``(to, op, key)`` of each command: what most assertions compare."""
    return [(s.to, s.msg.op, s.msg.get("key")) for s in sends]


def checked(sends: list[Send]) -> list[Send]:
    """Everything the scheduler emits must pass the wire format's own validation."""
    for send in sends:
        assert decode(encode([send.msg])) == [send.msg], send
    return sends


class SimulatedScheduler:
    """A :class:`SchedulerState`, a fake clock, and client :data:`CLIENT` already connected.

    Parameters are :class:`SchedulerConfig` fields (``prefetch=0``, ...).
    Calling the simulation with a sender and messages returns the commands the
    state emitted, each checked against the wire format; :meth:`tick` moves the
    fake clock.
    """

    def __init__(self, **config: Any) -> None:
        self.config = SchedulerConfig(**config)
        self.state = SchedulerState(self.config)
        self.now = 0.0
        welcome = ops(self(CLIENT, message("hello-client", version=VERSION)))
        assert welcome == [(CLIENT, "welcome", None)]

    def __call__(self, sender: bytes, *messages: Message) -> list[Send]:
        """Hand ``messages`` from ``sender`` (a peer's routing id) to the state, at :attr:`now`.

        Returns the commands it emitted, each checked against the wire format.
        """
        return checked(self.state.handle(sender, list(messages), now=self.now))

    def tick(self, now: float) -> list[Send]:
        """Move the clock to ``now`` and fire the timers due by then."""
        self.now = now
        return checked(self.state.tick(now))

    def add_worker(
        self, wid: bytes, slots: int = 1, queues: Sequence[str] = ("default",)
    ) -> list[Send]:
        """Register a worker; return what was sent besides its welcome.

        ``wid`` is its routing id; ``slots`` and ``queues`` as for :func:`hello_worker`.
        """
        out = self(wid, hello_worker(slots, queues))
        assert ops(out[:1]) == [(wid, "welcome", None)]
        return out[1:]

    def states(self) -> dict[str, str]:
        """Each known task's state, by key."""
        return {key: task.state.value for key, task in self.state.tasks.items()}
