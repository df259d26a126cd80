"""One worker process: executors that do their own socket I/O, and a helper thread.

Slot 0 runs tasks on the main thread (so a soft time limit can interrupt a
blocking call with a signal); further slots are threads.  The socket is a
:class:`SharedSocket`: an idle main thread waits on it and reads its next
task itself, and an executor sends its outcome itself, so a task costs no
hand-off between threads.  The helper thread sends heartbeats, enforces
soft time limits, and reads the socket while the main thread is busy, so a
revoke with ``terminate`` still reaches a long task.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

import zmq

from celeriac.errors import FutureLostError, SoftTimeLimitExceeded
from celeriac.parent import parent_gone
from celeriac.wire import protocol, sharedmem
from celeriac.wire.addresses import normalize, tcp_address
from celeriac.wire.peers import PeerClient
from celeriac.wire.protocol import Message
from celeriac.wire.serialize import LoadedFunctions, dumps_exception
from celeriac.wire.transport import RECHECK_MS, Registration, SharedSocket, scheduler_dealer
from celeriac.wire.wakeup import Waker
from celeriac.worker.data import (
    DataServer,
    ResultStore,
    host_port,
    listen_host,
    spill_directory,
)
from celeriac.worker.execute import RunRequest, run_task
from celeriac.worker.limits import ControlChannel, SoftLimits
from celeriac.worker.memory import TARGET, limit_of
from celeriac.worker.settings import ChildSettings, WorkerSettings
from celeriac.worker.state import (
    Free,
    Instruction,
    Keep,
    Recycle,
    Send,
    Spill,
    Terminate,
    WorkerLimits,
    WorkerState,
)

log = logging.getLogger("celeriac.worker")

#: While prefetched tasks wait, outcomes pile up and go out together (what keeps
#: a burst of tiny tasks fast), but never longer than this, and at most this many.
#: 5 ms is the queued work per slot the scheduler's adaptive prefetch allows
#: (``prefetch_seconds``); 2 ms cost a quarter of the throughput of tiny tasks.
HOLD_SECONDS = 0.005
HOLD_MAX = 100


def rss_bytes() -> int:
    """Resident memory of this process (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class WorkerProcess:
    """One worker process: it connects to the scheduler and runs the tasks it is sent.

    ``settings``: the :class:`WorkerSettings` of the ``celeriac worker`` that
    started it; it uses ``address``, ``nthreads`` (its slots), ``queues``,
    ``name`` (with ``child.index``: ``NAME-INDEX``; without a name, host name and
    pid), ``keys``, ``max_tasks_per_child`` and ``max_memory_per_child`` (0 or
    None: never recycle).  ``child``: what is this process's own
    (:class:`ChildSettings`: routing id, the supervisor's control pipe, index,
    parent pid); by default a random id, no pipe, no parent.  Nothing connects
    before :meth:`run`.
    """

    def __init__(self, settings: WorkerSettings, child: ChildSettings | None = None) -> None:
        child = child or ChildSettings()
        self.address = normalize(settings.address)
        self.nthreads = max(1, settings.nthreads)
        self.queues = settings.queues
        self.name = child.name(settings) or f"{os.uname().nodename}-{os.getpid()}"
        self.identity = child.identity or uuid.uuid4().bytes
        self.keys = settings.keys or None
        # the decisions; 0 is off, as unset is (the supervisor never passed a 0 on)
        limits = WorkerLimits(
            max_tasks=settings.max_tasks_per_child or None,
            max_memory=settings.max_memory_per_child or None,
            memory_limit=limit_of(settings.memory_limit, settings.nprocs),
        )
        self._state = WorkerState(limits)
        self._parent = child.parent_pid  # exit when it does (checked with each heartbeat)
        self._control = ControlChannel(child.control_fd)
        self._soft_limits = SoftLimits()
        self._functions = LoadedFunctions()
        self._todo_ready = threading.Condition()  # guards _state; executors wait on it
        self._outbox: deque[Message] = deque()
        self._waker = Waker()  # wakes the helper thread
        self._main_waker = Waker()  # wakes the main thread while it waits for work
        self._main_waiting = False
        self._send_by: float | None = None  # held outcomes go out by then
        self._main_thread = threading.main_thread().ident
        self._close_requested = False  # set by request_close (a signal handler, maybe)
        self._stopped = False
        self._heartbeat_interval = 0.5
        self._scheduler_timeout = 5.0
        self._max_result_bytes = protocol.DEFAULT_MAX_MESSAGE_BYTES  # the welcome says
        self._last_heard = time.monotonic()
        self._scheduler_silent = False
        self._registration = Registration()
        self._settings, self._index = settings, child.index or 0
        # results kept here for peers (between hosts), spilled to disk past the target
        self._store = ResultStore(
            target=TARGET * limits.memory_limit if limits.memory_limit else float("inf"),
            directory=spill_directory(settings.local_directory, os.getpid(), self.identity),
        )
        self._data_server: DataServer | None = None
        self._peer: str | None = None  # where peers fetch them, once serving
        self._fetcher: PeerClient | None = None

    # -- control -------------------------------------------------------------

    def request_close(self) -> None:
        """Graceful stop (SIGTERM): hand back unstarted work, finish the rest.

        Safe in a signal handler: it only sets a flag and wakes the threads,
        which close the state under its lock.
        """
        self._close_requested = True
        self._waker.wake()
        self._main_waker.wake()

    def run(self) -> None:
        """Serve until closed.  Call from the main thread."""
        self._soft_limits.install()
        context = zmq.Context()
        socket = scheduler_dealer(
            context,
            self.address,
            role="worker",
            keys=self.keys,
            routing_id=self.identity,
            linger_ms=2000,
        )
        self._socket = SharedSocket(socket, self._on_batch)
        self._serve_results(context)
        self._fetcher = PeerClient(context, keys=self.keys, role="worker")
        helper = threading.Thread(target=self._helper_main, name="celeriac-helper", daemon=True)
        helper.start()
        for i in range(1, self.nthreads):
            threading.Thread(target=self._slot_loop, name=f"celeriac-slot-{i}", daemon=True).start()
        try:
            self._main_loop()
        finally:
            helper.join()
            if self._data_server is not None:
                self._data_server.close()
            self._fetcher.close()
            self._store.close()
            socket.close()
            context.term()
            self._waker.close()
            self._main_waker.close()

    def _serve_results(self, context: zmq.Context) -> None:
        """Listen for peers fetching the results this process keeps; without a
        listener (refused, or it cannot bind), results go through the scheduler.

        Not for a scheduler on a Unix socket: that is this host, whose
        ``/dev/shm`` carries large results better (and the embedded cluster
        opens no TCP port at all, issue 13 C1).
        """
        settings = self._settings
        if self.address.startswith("ipc://") and settings.listen_address is None:
            return
        listen = _nth_port(settings.listen_address or listen_host(self.address), self._index)
        contact = settings.contact_address and _nth_port(settings.contact_address, self._index)
        server = DataServer(
            context,
            self._store,
            listen=listen,
            contact=contact,
            keys=self.keys,
            insecure=settings.insecure,
            wildcard_host=listen_host(self.address),
        )
        try:
            self._peer = server.start()
        except (ValueError, zmq.ZMQError) as exc:
            log.warning(
                "worker %s serves no results to peers (%s): they go through the scheduler",
                self.name,
                exc,
            )
            return
        self._data_server = server
        self._state.limits.keeps = True
        log.info("worker %s serves kept results at %s", self.name, self._peer)

    def _stop_executors(self) -> None:
        with self._todo_ready:
            self._stopped = True
            self._todo_ready.notify_all()
        self._main_waker.wake()

    # -- helper thread -----------------------------------------------------------------

    def _helper_main(self) -> None:
        try:
            self._helper_loop()
        except Exception:
            log.exception("worker %s: helper thread failed", self.name)
        finally:
            self._stop_executors()

    def _helper_loop(self) -> None:
        self._socket.send([self._hello()])
        log.info("worker %s connecting to %s with %d slots", self.name, self.address, self.nthreads)
        own_only = select.poll()
        own_only.register(self._waker.fd, select.POLLIN)
        with_socket = select.poll()
        with_socket.register(self._waker.fd, select.POLLIN)
        with_socket.register(self._socket.fd, select.POLLIN)
        next_heartbeat = time.monotonic() + self._heartbeat_interval
        while True:
            wake_at = min(
                next_heartbeat,
                self._soft_limits.next_deadline() or next_heartbeat,
                self._send_by or next_heartbeat,
            )
            # An idle main thread reads the socket itself: polling it here too
            # would only race it for every message.
            poller = own_only if self._main_waiting and self.nthreads == 1 else with_socket
            poller.poll(max(0, int((wake_at - time.monotonic()) * 1000)))
            self._waker.clear()
            self._soft_limits.enforce()
            if self._close_requested:
                with self._todo_ready:
                    self._apply(self._state.close())
            self._flush()
            if self._state.closing and self._idle():
                self._socket.send([Message("goodbye")])
                log.info("worker %s closed", self.name)
                return
            if time.monotonic() >= next_heartbeat:
                self._heartbeat()
                next_heartbeat = time.monotonic() + self._heartbeat_interval

    def _heartbeat(self) -> None:
        rss = rss_bytes()
        with self._todo_ready:
            self._apply(self._state.heartbeat(rss, self._store.in_memory))
            fields = {"memory": rss, "running": len(self._state.running)}
            fields["paused"] = self._state.paused
        if len(self._store):
            fields |= {"managed": self._store.in_memory, "spilled": self._store.spilled}
        message = Message("heartbeat", fields)
        try:  # never block on a heartbeat: a long-gone scheduler must not freeze this loop
            self._socket.send([message], zmq.NOBLOCK)
        except zmq.Again:
            pass
        self._check_scheduler()
        if parent_gone(self._parent):
            log.warning("worker %s: parent process exited; stopping", self.name)
            os._exit(1)  # a task may hold the main thread; do not wait for it

    def _apply(self, instructions: list[Instruction]) -> None:
        """Carry out what the state decided; a message waits in the outbox for a flush."""
        for instruction in instructions:
            if isinstance(instruction, Send):
                self._outbox.append(instruction.msg)
            elif isinstance(instruction, Keep):
                self._store.put(instruction.key, instruction.payload)
            elif isinstance(instruction, Free):
                self._store.drop(list(instruction.keys))
            elif isinstance(instruction, Spill):
                moved = self._store.spill(instruction.nbytes)
                log.info("worker %s: spilled %d MiB to disk", self.name, moved >> 20)
            elif isinstance(instruction, Recycle):
                log.info("worker %s: %s", self.name, instruction.why)
                self.request_close()
            elif isinstance(instruction, Terminate):
                self._terminate(instruction.key)

    def _terminate(self, key: str) -> None:
        log.warning("worker %s: task %s revoked with terminate; stopping", self.name, key)
        self._flush()
        if self._control.supervised:
            self._control.kill_me(key, "terminated")
        else:
            os._exit(1)

    # -- messages from the scheduler (on whichever thread reads) -----------------------

    def _on_batch(self, messages: list[Message]) -> None:
        self._heard_from_scheduler()
        for msg in messages:
            try:
                self._on_message(msg)
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

    def _on_message(self, msg: Message) -> None:
        if msg.op == "run":
            self._queue_task(msg)
        elif msg.op == "drop":
            self._decide(self._state.drop, msg["key"], msg.get("terminate", False))
        elif msg.op == "steal":
            self._decide(self._state.steal, set(msg["keys"]))
        elif msg.op == "free":
            self._decide(self._state.free, msg["keys"])
        elif msg.op == "upload":
            self._upload(msg["key"])
        elif msg.op == "welcome":
            self._registration.welcomed()
            self._heartbeat_interval = _clamp(msg.get("heartbeat_interval"), 0.01, 60.0, 0.5)
            self._scheduler_timeout = _clamp(msg.get("worker_timeout"), 0.1, 3600.0, 5.0)
            self._max_result_bytes = msg.get("max_message_bytes", self._max_result_bytes)
            self._socket.share_memory(msg)
            log.info("worker %s registered with the scheduler", self.name)
        elif msg.op == "reregister" and self._registration.reregister():
            log.warning("scheduler does not know worker %s (restarted?); registering", self.name)
            self._socket.send([self._hello()])
        elif msg.op == "shutdown":
            self.request_close()
        elif msg.op == "error":
            log.error("scheduler reported an error: %s", msg["text"])
            if msg.get("about") == "hello-worker":
                log.error("worker %s: refused by the scheduler; exiting", self.name)
                os._exit(78)  # EX_CONFIG

    def _decide(self, event: Callable[..., list[Instruction]], *args: Any) -> None:
        """Feed an event to the state and carry out what it says (the helper sends)."""
        with self._todo_ready:
            instructions = event(*args)
            self._apply(instructions)
        if any(isinstance(i, Send) for i in instructions):
            self._waker.wake()

    def _queue_task(self, msg: Message) -> None:
        with self._todo_ready:
            if self._close_requested:
                self._apply(self._state.close())
            refused = self._state.run(msg)
            self._apply(refused)
            if not refused:
                self._todo_ready.notify()
        if refused:
            self._waker.wake()
        elif self._main_waiting and threading.get_ident() != self._main_thread:
            self._main_waker.wake()

    def _upload(self, key: str) -> None:
        """Send a kept result to the scheduler, for a client that cannot reach us."""
        payload = self._store.get(key)
        if payload is None:
            self._outbox.append(Message("uploaded", {"key": key, "missing": True}))
        else:
            self._outbox.append(Message("uploaded", {"key": key}, [payload]))
        self._waker.wake()

    def _idle(self) -> bool:
        with self._todo_ready:
            return self._state.idle() and not self._outbox

    def _flush(self) -> None:
        """Send everything in the outbox as one batch (and read what came in)."""
        with self._socket.lock:
            self._send_by = None  # before taking the outbox: a later hold sets a new one
            batch = []
            while self._outbox:
                batch.append(self._outbox.popleft())
            if batch:
                self._socket.send(_drop_redundant_started(batch))
            else:
                self._socket.read()

    def _hello(self) -> Message:
        return Message(
            "hello-worker",
            {
                "version": protocol.VERSION,
                "slots": self.nthreads,
                "queues": list(self.queues),
                "name": self.name,
                "pid": os.getpid(),
                "memory": rss_bytes(),
                **sharedmem.hello_fields(),
                **({"peer": self._peer} if self._peer is not None else {}),
            },
        )

    # -- executors ---------------------------------------------------------------------

    def _next_task(self, block: bool) -> RunRequest | None:
        with self._todo_ready:
            while True:
                if self._close_requested:  # start nothing new; the queue goes back
                    self._apply(self._state.close())
                if self._stopped:
                    return None
                task = self._state.take(threading.get_ident())
                if task is not None or not block:
                    return task
                self._todo_ready.wait()

    def _main_loop(self) -> None:
        """Slot 0: run queued tasks; with none left, wait on the socket itself."""
        while True:
            self._socket.read()  # a revoke that came in drops a queued task first
            task = self._next_task(block=False)
            if task is not None:
                self._execute(task)
            elif self._stopped:
                return
            else:
                self._wait_for_work()

    def _wait_for_work(self) -> None:
        poller = select.poll()
        poller.register(self._socket.fd, select.POLLIN)
        poller.register(self._main_waker.fd, select.POLLIN)
        self._main_waiting = True
        try:
            while True:
                self._main_waker.clear()
                self._flush()
                with self._todo_ready:
                    state = self._state
                    if self._stopped or (
                        state.todo and not state.closing and not self._close_requested
                    ):
                        return
                poller.poll(RECHECK_MS)
        finally:
            self._main_waiting = False

    def _slot_loop(self) -> None:
        while (task := self._next_task(block=True)) is not None:
            self._execute(task)

    def _execute(self, task: RunRequest) -> None:
        # No send: the notice rides along with the outcome, or the next heartbeat.
        self._outbox.append(Message("started", {"key": task.key}))
        try:
            outcome = self._fetch_inputs(task) or self._run_with_limits(task)
        except SoftTimeLimitExceeded:  # a limit that fired as its task ended
            log.warning("worker %s: a soft time limit fired as task %s ended", self.name, task.key)
            outcome = _soft_limit_failure(task.key)
        rss = rss_bytes() if self._state.limits.max_memory is not None else 0
        with self._todo_ready:
            self._apply(self._state.finished(task, outcome, rss))
            more_queued = bool(self._state.todo)
        if more_queued and len(self._outbox) < HOLD_MAX and not self._close_requested:
            self._hold_outcomes()
        else:
            self._flush()

    def _fetch_inputs(self, task: RunRequest) -> Message | None:
        """Fill in the dependencies other workers keep (several fetches at once);
        ``None``, or the failure that names those it could not get."""
        if not task.remote:
            return None
        wanted: dict[str, list[str]] = {}
        for key, at in task.remote.items():
            payload = self._store.get(key)
            if payload is not None:  # kept here
                task.deps[key] = payload
            else:
                wanted.setdefault(at, []).append(key)
        if not wanted:
            return None
        assert self._fetcher is not None
        found, missing = self._fetcher.fetch(wanted, timeout=2 * self._scheduler_timeout)
        task.deps.update(found)
        if not missing:
            return None
        text = f"could not fetch {missing} from the workers keeping them ({sorted(wanted)})"
        fields = {"key": task.key, "kind": "missing", "text": text, "missing": missing}
        return Message("task-failed", fields, [dumps_exception(FutureLostError(text))])

    def _hold_outcomes(self) -> None:
        """Send with the next outcomes, or (the next task may be long) by a deadline."""
        if self._send_by is None:
            self._send_by = time.monotonic() + HOLD_SECONDS
            self._waker.wake()  # the helper thread sends them if we are still busy

    def _run_with_limits(self, task: RunRequest) -> Message:
        if task.time_limit is not None:
            self._control.deadline(task.key, task.time_limit)
        try:
            if task.soft_time_limit is not None:
                self._soft_limits.start(task.key, task.soft_time_limit)
                self._waker.wake()  # the helper thread must wake up for the new deadline
            return run_task(task, self._functions, self._max_result_bytes)
        except SoftTimeLimitExceeded:
            # Landed outside the task's own code (a limit of zero, or a signal
            # racing the task's end): still the task's failure, not the worker's.
            return _soft_limit_failure(task.key)
        finally:
            if task.soft_time_limit is not None:
                self._soft_limits.stop(task.key)
            if task.time_limit is not None:
                self._control.clear(task.key)


def _soft_limit_failure(key: str) -> Message:
    exc = SoftTimeLimitExceeded("soft time limit exceeded")
    fields = {"key": key, "kind": "remote", "text": "soft time limit exceeded"}
    return Message("task-failed", fields, [dumps_exception(exc)])


def _nth_port(address: str, index: int) -> str:
    """``tcp://HOST:PORT`` for the ``index``-th process: a port given counts up from there."""
    host, port = host_port(address)
    return tcp_address(host, port + index if port else 0)


def _clamp(value: float | None, low: float, high: float, default: float) -> float:
    """A timing from the network, kept sane (the protocol already refuses NaN and inf)."""
    return default if value is None else min(high, max(low, float(value)))


def _drop_redundant_started(batch: list[Message]) -> list[Message]:
    """A ``started`` notice is moot when the outcome goes out in the same batch."""
    finished = {m.fields["key"] for m in batch if m.op in ("task-done", "task-failed")}
    if not finished:
        return batch
    return [m for m in batch if m.op != "started" or m.fields["key"] not in finished]
