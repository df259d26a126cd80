"""One worker process: a DEALER socket, an I/O loop and ``slots`` executor threads.

The I/O loop (main thread) owns the socket.  Executor threads take tasks
from a local queue and hand their outcomes back through a deque and a
:class:`Waker`; the loop sends whatever piled up as one batch.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections import deque

import zmq

from celeriac import protocol
from celeriac.addresses import normalize
from celeriac.protocol import Message, ProtocolError
from celeriac.serialize import LoadedFunctions
from celeriac.wakeup import Waker
from celeriac.worker.execute import Assignment, run_task

log = logging.getLogger("celeriac.worker")


def rss_bytes() -> int:
    """Resident memory of this process (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class WorkerProcess:
    def __init__(
        self,
        address: str,
        *,
        slots: int = 1,
        queues: tuple[str, ...] = ("default",),
        name: str | None = None,
        identity: bytes | None = None,
        exit_with_parent: bool = False,
    ) -> None:
        self.address = normalize(address)
        self.slots = max(1, slots)
        self.queues = queues
        self.name = name or f"{os.uname().nodename}-{os.getpid()}"
        self.identity = identity or uuid.uuid4().bytes
        self._parent = os.getppid() if exit_with_parent else None
        self._functions = LoadedFunctions()
        self._todo: deque[Assignment] = deque()
        self._todo_ready = threading.Condition()
        self._dropped: set[str] = set()
        self._outbox: deque[Message] = deque()
        self._waker = Waker()
        self._running_count = 0
        self._closing = False
        self._stopped = False
        self._heartbeat_interval = 0.5
        self._scheduler_timeout = 5.0
        self._last_heard = time.monotonic()
        self._scheduler_silent = False

    # -- control -------------------------------------------------------------

    def request_close(self) -> None:
        """Graceful stop (SIGTERM): hand back unstarted work, finish the rest."""
        self._closing = True
        self._waker.wake()

    def run(self) -> None:
        context = zmq.Context()
        socket = context.socket(zmq.DEALER)
        socket.setsockopt(zmq.LINGER, 2000)
        socket.setsockopt(zmq.ROUTING_ID, self.identity)
        socket.connect(self.address)
        threads = [
            threading.Thread(target=self._execute_loop, name=f"celeriac-slot-{i}", daemon=True)
            for i in range(self.slots)
        ]
        for thread in threads:
            thread.start()
        try:
            self._io_loop(socket)
        finally:
            with self._todo_ready:
                self._stopped = True
                self._todo_ready.notify_all()
            socket.close()
            context.term()
            self._waker.close()

    # -- I/O loop ----------------------------------------------------------------

    def _io_loop(self, socket: zmq.Socket) -> None:
        self._send(socket, [self._hello()])
        log.info("worker %s connecting to %s with %d slots", self.name, self.address, self.slots)
        poller = zmq.Poller()
        poller.register(socket, zmq.POLLIN)
        poller.register(self._waker.fd, zmq.POLLIN)
        next_heartbeat = time.monotonic() + self._heartbeat_interval
        handed_back = False
        while True:
            timeout = max(0.0, next_heartbeat - time.monotonic())
            ready = dict(poller.poll(timeout * 1000))
            if socket in ready:
                self._read_available(socket)
            self._waker.clear()
            if self._closing and not handed_back:
                self._hand_back()
                handed_back = True
            self._flush(socket)
            if handed_back and self._idle():
                self._send(socket, [Message("goodbye")])
                log.info("worker %s closed", self.name)
                return
            if time.monotonic() >= next_heartbeat:
                self._send(socket, [self._heartbeat()])
                self._check_scheduler()
                next_heartbeat = time.monotonic() + self._heartbeat_interval
                if self._parent is not None and os.getppid() != self._parent:
                    log.warning("worker %s: parent process exited; stopping", self.name)
                    return

    def _read_available(self, socket: zmq.Socket) -> None:
        while True:
            try:
                frames = socket.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            try:
                messages = protocol.decode(frames)
            except ProtocolError as exc:
                log.error("bad message from the scheduler: %s", exc)
                continue
            self._heard_from_scheduler()
            for msg in messages:
                self._on_message(socket, msg)

    def _heard_from_scheduler(self) -> None:
        self._last_heard = time.monotonic()
        if self._scheduler_silent:
            log.info("worker %s: the scheduler answers again", self.name)
            self._scheduler_silent = False

    def _check_scheduler(self) -> None:
        """Heartbeats go both ways: say so when the scheduler stops answering."""
        if not self._scheduler_silent and time.monotonic() - self._last_heard > (
            self._scheduler_timeout
        ):
            log.warning(
                "worker %s: no word from the scheduler at %s for %.0f s; still trying",
                self.name,
                self.address,
                self._scheduler_timeout,
            )
            self._scheduler_silent = True

    def _on_message(self, socket: zmq.Socket, msg: Message) -> None:
        if msg.op == "run":
            deps = dict(zip(msg["deps"], msg.payloads[2:], strict=True))
            task = Assignment(msg["key"], msg.get("name", msg["key"]), *msg.payloads[:2], deps)
            with self._todo_ready:
                self._todo.append(task)
                self._todo_ready.notify()
        elif msg.op == "drop":
            with self._todo_ready:
                self._dropped.add(msg["key"])
        elif msg.op == "welcome":
            self._heartbeat_interval = msg.get("heartbeat_interval", self._heartbeat_interval)
            self._scheduler_timeout = msg.get("worker_timeout", self._scheduler_timeout)
            log.info("worker %s registered with the scheduler", self.name)
        elif msg.op == "reregister":
            log.warning("scheduler does not know worker %s (restarted?); registering", self.name)
            self._send(socket, [self._hello()])
        elif msg.op == "shutdown":
            self.request_close()
        elif msg.op == "error":
            log.error("scheduler reported an error: %s", msg["text"])
            if msg.get("about") == "hello-worker":
                raise SystemExit(f"scheduler refused this worker: {msg['text']}")

    def _hand_back(self) -> None:
        with self._todo_ready:
            keys = [task.key for task in self._todo]
            self._todo.clear()
        log.info("worker %s closing: handing back %d queued tasks", self.name, len(keys))
        self._outbox.append(Message("worker-leaving", {"keys": keys}))

    def _idle(self) -> bool:
        with self._todo_ready:
            return self._running_count == 0 and not self._todo and not self._outbox

    def _flush(self, socket: zmq.Socket) -> None:
        batch = []
        while self._outbox:
            batch.append(self._outbox.popleft())
        if batch:
            self._send(socket, batch)

    def _send(self, socket: zmq.Socket, messages: list[Message]) -> None:
        socket.send_multipart(protocol.encode(messages), copy=False)

    def _hello(self) -> Message:
        return Message(
            "hello-worker",
            {
                "version": protocol.VERSION,
                "slots": self.slots,
                "queues": list(self.queues),
                "name": self.name,
                "pid": os.getpid(),
                "memory": rss_bytes(),
            },
        )

    def _heartbeat(self) -> Message:
        return Message("heartbeat", {"memory": rss_bytes(), "running": self._running_count})

    # -- executor threads ------------------------------------------------------------

    def _execute_loop(self) -> None:
        while True:
            with self._todo_ready:
                while not self._todo and not self._stopped:
                    self._todo_ready.wait()
                if self._stopped:
                    return
                task = self._todo.popleft()
                if task.key in self._dropped:
                    self._dropped.discard(task.key)
                    continue
                self._running_count += 1
            # No wake-up: the notice rides along with the next batch or heartbeat.
            self._outbox.append(Message("started", {"key": task.key}))
            outcome = run_task(task, self._functions)
            with self._todo_ready:
                self._running_count -= 1
                dropped = task.key in self._dropped
                self._dropped.discard(task.key)
            if not dropped:
                self._outbox.append(outcome)
            self._waker.wake()
