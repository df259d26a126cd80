"""Fake peers on real sockets: a scheduler we control for worker tests, a raw DEALER."""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from collections.abc import Callable
from typing import IO, Any

import cloudpickle
import msgpack
import zmq

from celeriac.wire import protocol
from celeriac.wire.protocol import Message
from celeriac.wire.serialize import dumps, loads
from celeriac.worker.settings import WorkerSettings, child_command


def header(messages: list[dict[str, Any]], version: Any = protocol.VERSION) -> bytes:
    """A message header frame built by hand (any fields, any version): for bad input.

    ``messages`` are the raw maps (``"op"`` included), packed unchecked.
    """
    packed: bytes = msgpack.packb([version, messages], use_bin_type=True)
    return packed


def function_payload(fn: Callable[..., Any]) -> list[bytes]:
    """The function frame of a ``submit`` or ``run``."""
    return [cloudpickle.dumps(fn, protocol=5)]


def args_payload(*args: Any, **kwargs: Any) -> list[Any]:
    """The arguments frames of a ``submit`` or ``run``."""
    return dumps((args, kwargs))


class RawPeer:
    """A raw DEALER socket with a fixed identity, and a barrier to sync on its replies.

    A barrier is a message with an unknown op, ``barrier-N``: the scheduler
    (and only a scheduler) answers it with ``bad message: unknown op
    'barrier-N'``, whoever we are, so every reply before it answers what we
    sent before it.

    ``context`` makes the socket; it connects to ``address`` as ``identity``
    (the routing id the scheduler sees).  Sends give up after 10 s.
    """

    def __init__(self, context: zmq.Context, address: str, identity: bytes) -> None:
        self.identity = identity
        self.socket = context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.ROUTING_ID, identity)
        self.socket.setsockopt(zmq.SNDTIMEO, 10_000)
        self.socket.connect(address)
        self._barriers = 0

    def send(self, frames: list[Any]) -> None:
        """Send frames as they are, valid or not."""
        self.socket.send_multipart(frames, copy=False)

    def send_messages(self, *messages: Message) -> None:
        """Send well-formed messages in one batch."""
        self.send(protocol.encode(list(messages)))

    def recv(self, timeout: float) -> list[dict[str, Any]] | None:
        """The next batch's messages as plain dicts, or ``None`` after ``timeout`` seconds."""
        if not self.socket.poll(int(timeout * 1000)):
            return None
        frames = self.socket.recv_multipart()
        batch: list[dict[str, Any]] = msgpack.unpackb(frames[0], raw=False)[1]
        return batch

    def sync(self, timeout: float = 15.0) -> list[dict[str, Any]]:
        """Everything the scheduler answered to what we sent so far (barrier excluded).

        Raises ``AssertionError`` when the barrier is not answered within ``timeout`` seconds.
        """
        self._barriers += 1
        marker = f"barrier-{self._barriers}"
        self.send([header([{"op": marker}])])
        replies: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while True:
            batch = self.recv(max(0.0, deadline - time.monotonic()))
            if batch is None:
                raise AssertionError(
                    f"peer {self.identity!r}: no answer to {marker} in {timeout} s"
                )
            for reply in batch:
                if reply.get("op") == "error" and f"'{marker}'" in reply.get("text", ""):
                    return replies
                replies.append(reply)

    def close(self) -> None:
        """Close the socket, dropping anything not yet sent."""
        self.socket.close(linger=0)


class FakeScheduler:
    """A ROUTER we control, and one real worker process connected to it.

    ``context`` is the ZeroMQ context for the ROUTER; the worker's output goes
    to ``log_path`` (read it with :meth:`log`).  :meth:`pump` reads what the
    worker sends, welcoming it and recording heartbeats and outcomes.
    """

    def __init__(self, context: zmq.Context, log_path: str) -> None:
        self.router = context.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.setsockopt(zmq.SNDTIMEO, 10_000)
        # A ROUTER silently drops messages for a peer whose queue is full: a
        # test's last task must not be one of them while the worker is busy.
        self.router.setsockopt(zmq.SNDHWM, 0)
        port = self.router.bind_to_random_port("tcp://127.0.0.1")
        self.log_path = log_path
        self._log: IO[bytes] = open(log_path, "wb")  # noqa: SIM115 - closed in close()
        settings = WorkerSettings(address=f"tcp://127.0.0.1:{port}", log_level="WARNING")
        self.proc = subprocess.Popen(child_command(settings), stdout=self._log, stderr=self._log)
        self.identity: bytes | None = None
        self.received: Counter[str] = Counter()
        self.outcomes: dict[str, dict[str, Any]] = {}
        self.payloads: dict[str, list[bytes]] = {}
        self.last_heartbeat = 0.0

    def welcome(self, **fields: Any) -> None:
        """Send the worker a welcome (fields override the defaults)."""
        fields = {"version": protocol.VERSION, "heartbeat_interval": 0.1, **fields}
        self.send(protocol.encode([Message("welcome", fields)]))

    def send(self, frames: list[Any]) -> None:
        """Send frames to the worker as they are."""
        assert self.identity is not None
        self.router.send_multipart([self.identity, *frames], copy=False)

    def pump(self, timeout: float) -> None:
        """Read what the worker sent within ``timeout``; welcome it if it says hello."""
        deadline = time.monotonic() + timeout
        while self.router.poll(int(max(0.0, deadline - time.monotonic()) * 1000)):
            identity, *frames = self.router.recv_multipart()
            self.identity = identity
            for msg in protocol.decode(frames):
                self._record(msg)
            if time.monotonic() >= deadline:
                break

    def _record(self, msg: Message) -> None:
        self.received[msg.op] += 1
        if msg.op == "hello-worker":
            self.welcome()
        elif msg.op == "heartbeat":
            self.last_heartbeat = time.monotonic()
        elif msg.op in ("task-done", "task-failed"):
            self.outcomes[msg["key"]] = {"op": msg.op, **msg.fields}
            self.payloads[msg["key"]] = [bytes(f) for f in msg.payloads[0]]

    def wait_registered(self, timeout: float = 20.0) -> None:
        """Until the worker has said hello and heartbeats flow after the welcome.

        ``timeout`` bounds the wait for the hello; ``AssertionError`` if the worker
        exits, never says hello, or sends no heartbeat within 5 s of its welcome.
        """
        deadline = time.monotonic() + timeout
        while self.identity is None and time.monotonic() < deadline:
            self.pump(0.1)
            assert self.proc.poll() is None, self.log()
        assert self.received["hello-worker"] == 1, "the worker never said hello"
        assert self.heartbeats_flowing(), "no heartbeats after the welcome"

    def heartbeats_flowing(self, timeout: float = 5.0) -> bool:
        """Whether a heartbeat arrives within ``timeout`` seconds from now."""
        since = time.monotonic()
        deadline = since + timeout
        while time.monotonic() < deadline:
            self.pump(0.05)
            if self.last_heartbeat > since:
                return True
        return False

    def run_real_task(
        self, key: str, fn: Callable[..., Any], *args: Any, timeout: float = 15.0
    ) -> Any:
        """Have the worker run ``fn(*args)`` as task ``key``; its result, or an AssertionError.

        Fails when no outcome comes within ``timeout`` seconds or the task failed.
        """
        head = Message("run", {"key": key, "deps": [], "name": getattr(fn, "__name__", "fn")},
                       [function_payload(fn), args_payload(*args)])  # fmt: skip
        self.send(protocol.encode([head]))
        deadline = time.monotonic() + timeout
        while key not in self.outcomes and time.monotonic() < deadline:
            self.pump(0.05)
        outcome = self.outcomes.get(key)
        assert outcome is not None, f"no outcome for {key} in {timeout} s; {self.log()[-3000:]}"
        assert outcome["op"] == "task-done", outcome
        return loads(self.payloads[key])

    def log(self) -> str:
        """What the worker process wrote so far."""
        self._log.flush()
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def close(self) -> None:
        """Kill the worker and close the socket."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._log.close()
        self.router.close(linger=0)
