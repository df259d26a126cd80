"""One worker process: a DEALER socket on an I/O thread, and ``slots`` executors.

Slot 0 runs tasks on the main thread (so a soft time limit can interrupt a
blocking call with a signal); further slots are threads.  The I/O thread
owns the socket: executors hand outcomes back through a deque and a
:class:`Waker`, and the I/O thread sends whatever piled up as one batch.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections import deque
from pathlib import Path

import zmq

from celeriac import protocol
from celeriac.addresses import normalize
from celeriac.errors import SoftTimeLimitExceeded
from celeriac.protocol import Message, ProtocolError
from celeriac.security import secure_client
from celeriac.serialize import LoadedFunctions, dumps_exception
from celeriac.transport import drain
from celeriac.wakeup import Waker
from celeriac.worker.execute import Assignment, run_task
from celeriac.worker.limits import ControlChannel, SoftLimits

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
        control_fd: int | None = None,
        keys: Path | None = None,
        max_tasks: int | None = None,
        max_memory: int | None = None,
        parent_pid: int | None = None,
    ) -> None:
        self.address = normalize(address)
        self.slots = max(1, slots)
        self.queues = queues
        self.name = name or f"{os.uname().nodename}-{os.getpid()}"
        self.identity = identity or uuid.uuid4().bytes
        self.keys = keys
        self.max_tasks = max_tasks
        self.max_memory = max_memory
        self._completed = 0
        self._parent = parent_pid  # exit when it does (checked with each heartbeat)
        self._control = ControlChannel(control_fd)
        self._soft_limits = SoftLimits()
        self._functions = LoadedFunctions()
        self._todo: deque[Assignment] = deque()
        self._todo_ready = threading.Condition()
        self._dropped: set[str] = set()
        self._running: dict[str, int] = {}  # key -> executing thread's id
        self._outbox: deque[Message] = deque()
        self._waker = Waker()
        self._closing = False
        self._stopped = False
        self._heartbeat_interval = 0.5
        self._scheduler_timeout = 5.0
        self._last_heard = time.monotonic()
        self._scheduler_silent = False
        self._registering = True  # hello sent, no welcome yet

    # -- control -------------------------------------------------------------

    def request_close(self) -> None:
        """Graceful stop (SIGTERM): hand back unstarted work, finish the rest."""
        self._closing = True
        self._waker.wake()

    def run(self) -> None:
        """Serve until closed.  Call from the main thread."""
        self._soft_limits.install()
        io_thread = threading.Thread(target=self._io_main, name="celeriac-io", daemon=True)
        io_thread.start()
        for i in range(1, self.slots):
            threading.Thread(
                target=self._execute_loop, name=f"celeriac-slot-{i}", daemon=True
            ).start()
        self._execute_loop()
        io_thread.join()

    def _stop_executors(self) -> None:
        with self._todo_ready:
            self._stopped = True
            self._todo_ready.notify_all()

    # -- I/O thread ----------------------------------------------------------------

    def _io_main(self) -> None:
        context = zmq.Context()
        socket = context.socket(zmq.DEALER)
        socket.setsockopt(zmq.LINGER, 2000)
        socket.setsockopt(zmq.ROUTING_ID, self.identity)
        if self.keys is not None:
            secure_client(socket, self.keys, "worker")
        socket.connect(self.address)
        try:
            self._io_loop(socket)
        except Exception:
            log.exception("worker %s: I/O loop failed", self.name)
        finally:
            self._stop_executors()
            socket.close()
            context.term()
            self._waker.close()

    def _io_loop(self, socket: zmq.Socket) -> None:
        self._send(socket, [self._hello()])
        log.info("worker %s connecting to %s with %d slots", self.name, self.address, self.slots)
        poller = zmq.Poller()
        poller.register(socket, zmq.POLLIN)
        poller.register(self._waker.fd, zmq.POLLIN)
        next_heartbeat = time.monotonic() + self._heartbeat_interval
        handed_back = False
        while True:
            wake_at = min(next_heartbeat, self._soft_limits.next_deadline() or next_heartbeat)
            ready = dict(poller.poll(int(max(0.0, wake_at - time.monotonic()) * 1000)))
            if socket in ready:
                self._read_available(socket)
            self._waker.clear()
            self._soft_limits.enforce()
            if self._closing and not handed_back:
                self._hand_back()
                handed_back = True
            self._flush(socket)
            if handed_back and self._idle():
                self._send(socket, [Message("goodbye")])
                log.info("worker %s closed", self.name)
                return
            if time.monotonic() >= next_heartbeat:
                if not self._heartbeat(socket):
                    return
                next_heartbeat = time.monotonic() + self._heartbeat_interval

    def _heartbeat(self, socket: zmq.Socket) -> bool:
        """Send a heartbeat; False when this process should stop (its parent died)."""
        message = Message("heartbeat", {"memory": rss_bytes(), "running": len(self._running)})
        try:  # never block on a heartbeat: a long-gone scheduler must not freeze this loop
            socket.send_multipart(protocol.encode([message]), zmq.NOBLOCK)
        except zmq.Again:
            pass
        self._check_scheduler()
        if self._parent is not None and os.getppid() != self._parent:
            log.warning("worker %s: parent process exited; stopping", self.name)
            os._exit(1)  # a task may hold the main thread; do not wait for it
        return True

    def _read_available(self, socket: zmq.Socket) -> None:
        for messages in drain(socket):
            self._heard_from_scheduler()
            for msg in messages:
                try:
                    self._on_message(socket, msg)
                except Exception:  # one bad message must not stop the worker
                    log.exception("worker %s: could not handle %r", self.name, msg.op)

    def _heard_from_scheduler(self) -> None:
        self._last_heard = time.monotonic()
        if self._scheduler_silent:
            log.info("worker %s: the scheduler answers again", self.name)
            self._scheduler_silent = False

    def _check_scheduler(self) -> None:
        """Heartbeats go both ways: say so when the scheduler stops answering."""
        silent_for = time.monotonic() - self._last_heard
        if not self._scheduler_silent and silent_for > self._scheduler_timeout:
            log.warning(
                "worker %s: no word from the scheduler at %s for %.0f s; still trying",
                self.name,
                self.address,
                silent_for,
            )
            self._scheduler_silent = True

    def _on_message(self, socket: zmq.Socket, msg: Message) -> None:
        if msg.op == "run":
            self._queue_task(msg)
        elif msg.op == "drop":
            self._drop(socket, msg["key"], msg.get("terminate", False))
        elif msg.op == "welcome":
            self._registering = False
            self._heartbeat_interval = _clamp(msg.get("heartbeat_interval"), 0.01, 60.0, 0.5)
            self._scheduler_timeout = _clamp(msg.get("worker_timeout"), 0.1, 3600.0, 5.0)
            log.info("worker %s registered with the scheduler", self.name)
        elif msg.op == "reregister" and not self._registering:
            # Heartbeats queued while the scheduler was down each draw a
            # "reregister": answer the first, until the welcome arrives.
            log.warning("scheduler does not know worker %s (restarted?); registering", self.name)
            self._registering = True
            self._send(socket, [self._hello()])
        elif msg.op == "shutdown":
            self.request_close()
        elif msg.op == "error":
            log.error("scheduler reported an error: %s", msg["text"])
            if msg.get("about") == "hello-worker":
                log.error("worker %s: refused by the scheduler; exiting", self.name)
                os._exit(78)  # EX_CONFIG

    def _queue_task(self, msg: Message) -> None:
        if len(msg.payloads) != 2 + len(msg["deps"]):
            text = f"'run' carries {len(msg.payloads)} payloads for {len(msg['deps'])} deps"
            log.error("worker %s: %s", self.name, text)
            error = dumps_exception(ProtocolError(text))
            fields = {"key": msg["key"], "kind": "serialize", "text": text}
            self._outbox.append(Message("task-failed", fields, [error]))
            return
        deps = dict(zip(msg["deps"], msg.payloads[2:], strict=True))
        task = Assignment(
            key=msg["key"],
            name=msg.get("name", msg["key"]),
            function=msg.payloads[0],
            args=msg.payloads[1],
            deps=deps,
            attempt=msg.get("attempt", 0),
            time_limit=msg.get("time_limit"),
            soft_time_limit=msg.get("soft_time_limit"),
        )
        with self._todo_ready:
            self._todo.append(task)
            self._todo_ready.notify()

    def _drop(self, socket: zmq.Socket, key: str, terminate: bool) -> None:
        with self._todo_ready:
            running = key in self._running
            self._dropped.add(key)
        if running and terminate:
            log.warning("worker %s: task %s revoked with terminate; stopping", self.name, key)
            self._hand_back()
            self._flush(socket)
            if self._control.supervised:
                self._control.kill_me(key, "terminated")
            else:
                os._exit(1)

    def _hand_back(self) -> None:
        with self._todo_ready:
            keys = [task.key for task in self._todo]
            self._todo.clear()
        log.info("worker %s closing: handing back %d queued tasks", self.name, len(keys))
        self._outbox.append(Message("worker-leaving", {"keys": keys}))

    def _idle(self) -> bool:
        with self._todo_ready:
            return not self._running and not self._todo and not self._outbox

    def _flush(self, socket: zmq.Socket) -> None:
        batch = []
        while self._outbox:
            batch.append(self._outbox.popleft())
        if batch:
            self._send(socket, _drop_redundant_started(batch))

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

    # -- executors ---------------------------------------------------------------------

    def _next_task(self) -> Assignment | None:
        with self._todo_ready:
            while True:
                # Closing: start nothing new; the I/O thread hands the queue back.
                while (not self._todo or self._closing) and not self._stopped:
                    self._todo_ready.wait()
                if self._stopped:
                    return None
                task = self._todo.popleft()
                if task.key in self._dropped:
                    self._dropped.discard(task.key)
                    continue
                self._running[task.key] = threading.get_ident()
                return task

    def _execute_loop(self) -> None:
        while True:
            try:
                if not self._execute_next():
                    return
            except SoftTimeLimitExceeded:  # a limit that fired as its task ended
                log.warning("worker %s: a late soft time limit was ignored", self.name)

    def _execute_next(self) -> bool:
        """Run the next task; False once the worker stops."""
        task = self._next_task()
        if task is None:
            return False
        # No wake-up: the notice rides along with the next batch or heartbeat.
        self._outbox.append(Message("started", {"key": task.key}))
        outcome = self._run_with_limits(task)
        with self._todo_ready:
            self._running.pop(task.key, None)
            dropped = task.key in self._dropped
            self._dropped.discard(task.key)
        if not dropped:
            self._outbox.append(outcome)
        self._check_recycle()
        self._waker.wake()
        return True

    def _check_recycle(self) -> None:
        """Retire this process between tasks once it did enough, or grew too big.

        It closes like on SIGTERM (queued tasks handed back, nothing lost) and
        the supervisor starts a fresh one: the cure for slow leaks.
        """
        self._completed += 1
        if self._closing:
            return
        if self.max_tasks is not None and self._completed >= self.max_tasks:
            log.info("worker %s: recycling after %d tasks", self.name, self._completed)
            self.request_close()
        elif self.max_memory is not None and (rss := rss_bytes()) > self.max_memory:
            log.info("worker %s: recycling at %d MiB resident", self.name, rss >> 20)
            self.request_close()

    def _run_with_limits(self, task: Assignment) -> Message:
        if task.time_limit is not None:
            self._control.deadline(task.key, task.time_limit)
        try:
            if task.soft_time_limit is not None:
                self._soft_limits.start(task.key, task.soft_time_limit)
                self._waker.wake()  # the I/O thread must wake up for the new deadline
            return run_task(task, self._functions)
        except SoftTimeLimitExceeded as exc:
            # Landed outside the task's own code (a limit of zero, or a signal
            # racing the task's end): still the task's failure, not the worker's.
            text = "soft time limit exceeded"
            fields = {"key": task.key, "kind": "remote", "text": text}
            return Message("task-failed", fields, [dumps_exception(exc)])
        finally:
            if task.soft_time_limit is not None:
                self._soft_limits.stop(task.key)
            if task.time_limit is not None:
                self._control.clear(task.key)


def _clamp(value: float | None, low: float, high: float, default: float) -> float:
    """A timing from the network, kept sane (the protocol already refuses NaN and inf)."""
    return default if value is None else min(high, max(low, float(value)))


def _drop_redundant_started(batch: list[Message]) -> list[Message]:
    """A ``started`` notice is moot when the outcome goes out in the same batch."""
    finished = {m.fields["key"] for m in batch if m.op in ("task-done", "task-failed")}
    if not finished:
        return batch
    return [m for m in batch if m.op != "started" or m.fields["key"] not in finished]
