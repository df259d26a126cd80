"""A worker process's decisions, as a pure state machine (Dask's worker state
machine is the model): events in, instructions out.

No sockets, no threads, no clock: :class:`~celeriac.worker.process.WorkerProcess`
feeds it what the scheduler sent, what its executors finished and what its
heartbeat measured, under one lock, and carries out the instructions it
returns (send a message, keep or free a result, spill, stop).  Its executors
take tasks from it (:meth:`WorkerState.take`).  Tests drive it directly and
compare the instructions as lists (``tests/unit/worker/test_state.py``).
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import Any

from celeriac.wire.protocol import Message, Payload, ProtocolError, nbytes
from celeriac.wire.serialize import dumps_exception
from celeriac.worker.execute import RunRequest
from celeriac.worker.memory import decide

log = logging.getLogger("celeriac.worker")


@dataclass(frozen=True)
class Send:
    """Send ``msg`` to the scheduler (with the next batch)."""

    msg: Message


@dataclass(frozen=True)
class Keep:
    """Keep ``payload``, the result of ``key``, for peers to fetch."""

    key: str
    payload: Payload


@dataclass(frozen=True)
class Free:
    """Forget these kept results."""

    keys: tuple[str, ...]


@dataclass(frozen=True)
class Spill:
    """Move at least this many bytes of kept results to disk."""

    nbytes: int


@dataclass(frozen=True)
class Terminate:
    """The task ``key``, running here, was revoked with terminate: hand back the
    rest and have this process killed."""

    key: str


@dataclass(frozen=True)
class Recycle:
    """Retire this process between tasks (``why``), as on SIGTERM: nothing is lost."""

    why: str


Instruction = Send | Keep | Free | Spill | Terminate | Recycle


@dataclass
class WorkerLimits:
    """What the process was told at start: recycling, memory, and whether it keeps results."""

    max_tasks: int | None = None
    max_memory: int | None = None  # resident bytes past which it recycles between tasks
    memory_limit: int = 0  # --memory-limit in bytes (0: none)
    keeps: bool = False  # it serves results to peers, so it may keep them


class WorkerState:
    """What one worker process has to do, and what it decides.

    ``limits``: :class:`WorkerLimits`.  The queue of tasks (``todo``) is in
    the order the scheduler sent them; ``running`` maps a running task's key to
    the executor (a thread id) running it.
    """

    def __init__(self, limits: WorkerLimits | None = None) -> None:
        self.limits = limits or WorkerLimits()
        self.todo: deque[RunRequest] = deque()
        self.running: dict[str, int] = {}
        self.dropped: set[str] = set()
        self.closing = False
        self.paused = False
        self.completed = 0

    # -- from the scheduler ------------------------------------------------------------

    def run(self, msg: Message) -> list[Instruction]:
        """A ``run``: queue the task (or, closing, hand it straight back)."""
        if len(msg.payloads) != 2 + len(msg["deps"]):
            text = f"'run' carries {len(msg.payloads)} payloads for {len(msg['deps'])} deps"
            log.error("%s", text)
            fields = {"key": msg["key"], "kind": "serialize", "text": text}
            return [Send(Message("task-failed", fields, [dumps_exception(ProtocolError(text))]))]
        task = _request(msg, self.limits.keeps)
        if self.closing:
            # Sent before the scheduler read our 'worker-leaving' (a recycle or
            # SIGTERM crossed it): hand it back too, or it would never run and
            # this process never be idle enough to leave.
            return [Send(Message("worker-leaving", {"keys": [task.key]}))]
        self.todo.append(task)
        return []

    def drop(self, key: str, terminate: bool) -> list[Instruction]:
        """A ``drop``: forget the task if queued; kill the process if it runs and ``terminate``."""
        self.dropped.add(key)
        if key in self.running and terminate:
            return [*self.close(), Terminate(key)]
        return []

    def steal(self, keys: set[str]) -> list[Instruction]:
        """A ``steal``: give back those of ``keys`` not started, and say which."""
        given = [task.key for task in self.todo if task.key in keys]
        if given:
            self.todo = deque(task for task in self.todo if task.key not in keys)
            log.info("%d queued task(s) go to an idle worker", len(given))
        return [Send(Message("handed-back", {"keys": given}))]

    def free(self, keys: list[str]) -> list[Instruction]:
        """A ``free``: nobody needs these kept results any more."""
        return [Free(tuple(keys))]

    def close(self) -> list[Instruction]:
        """Graceful stop: start nothing new, hand back what is queued (once)."""
        if self.closing:
            return []
        self.closing = True
        keys = [task.key for task in self.todo]
        self.todo.clear()
        log.info("closing: handing back %d queued tasks", len(keys))
        return [Send(Message("worker-leaving", {"keys": keys}))]

    # -- from the executors ------------------------------------------------------------

    def take(self, executor: int) -> RunRequest | None:
        """The next task for ``executor`` to run, if any (none once closing)."""
        while self.todo and not self.closing:
            task = self.todo.popleft()
            if task.key in self.dropped:
                self.dropped.discard(task.key)
                continue
            self.running[task.key] = executor
            return task
        return None

    def finished(self, task: RunRequest, outcome: Message, rss: int = 0) -> list[Instruction]:
        """``task`` ran and ``outcome`` is its ``task-done`` or ``task-failed``; ``rss``:
        resident memory now (read only when ``max_memory`` is set).

        A dropped task's outcome is not sent; a large result is kept when the
        scheduler asked (``keep``); then maybe this process retires.
        """
        self.running.pop(task.key, None)
        out: list[Instruction] = []
        if task.key in self.dropped:
            self.dropped.discard(task.key)
        elif task.keep and outcome.op == "task-done":
            out += _kept(task, outcome)
        else:
            out.append(Send(outcome))
        self.completed += 1
        if not self.closing:
            out += self._recycle(rss)
        return out

    def _recycle(self, rss: int) -> list[Instruction]:
        limits = self.limits
        if limits.max_tasks is not None and self.completed >= limits.max_tasks:
            return [Recycle(f"recycling after {self.completed} tasks")]
        if limits.max_memory is not None and rss > limits.max_memory:
            return [Recycle(f"recycling at {rss >> 20} MiB resident")]
        return []

    # -- from the heartbeat ------------------------------------------------------------

    def heartbeat(self, rss: int, kept_in_memory: int) -> list[Instruction]:
        """Memory measured: spill, pause or resume (``worker.memory``'s thresholds)."""
        action = decide(self.limits.memory_limit, rss, kept_in_memory)
        out: list[Instruction] = [Spill(action.spill)] if action.spill else []
        if action.paused != self.paused:
            self.paused = action.paused
            log.warning(
                "at %d MiB resident: %s", rss >> 20, "pausing" if self.paused else "resuming"
            )
        return out

    def idle(self) -> bool:
        """Nothing runs and nothing waits."""
        return not self.running and not self.todo


def _request(msg: Message, keeps: bool) -> RunRequest:
    """The task a valid ``run`` describes; inputs kept on other workers are ``remote``."""
    deps = dict(zip(msg["deps"], msg.payloads[2:], strict=True))
    remote: dict[str, str] = {}
    if (where := msg.get("where")) is not None:
        remote = {key: at for key, at in zip(msg["deps"], where, strict=False) if at}
        for key in remote:
            del deps[key]
    return RunRequest(
        key=msg["key"],
        name=msg.get("name", msg["key"]),
        function=msg.payloads[0],
        args=msg.payloads[1],
        deps=deps,
        attempt=msg.get("attempt", 0),
        time_limit=msg.get("time_limit"),
        soft_time_limit=msg.get("soft_time_limit"),
        remote=remote,
        keep=msg.get("keep", 0) if keeps else 0,
    )


def _kept(task: RunRequest, outcome: Message) -> list[Instruction]:
    """A result over the ``keep`` size stays here: the scheduler hears its size only."""
    payload = outcome.payloads[0]
    size = sum(nbytes(frame) for frame in payload)
    if size <= task.keep:
        return [Send(outcome)]
    fields: dict[str, Any] = {**outcome.fields, "kept": size}
    return [Keep(task.key, payload), Send(Message("task-done", fields, [[]]))]
