"""``celeriac worker``: start N worker processes, restart any that die.

The supervisor chooses each child's routing id and, connected to the
scheduler as a client, reports a child's death at once (``worker-died``), so
its tasks are re-run without waiting for missed heartbeats.  Heartbeats stay
the backstop for a whole host that vanishes.

A child that exits :data:`~celeriac.worker.settings.EX_CONFIG` (78) could not
import its ``-A`` modules as it started: restarting it would fail the same way
forever, so the supervisor stops the others and exits 78 itself.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import zmq

from celeriac.parent import parent_gone
from celeriac.wire import protocol
from celeriac.wire.protocol import Message
from celeriac.wire.transport import Registration, drain, scheduler_dealer, send_frames
from celeriac.worker.data import remove_leftover_spills, remove_spill_directory, spill_directory
from celeriac.worker.memory import TERMINATE, limit_of, over_terminate, rss_of
from celeriac.worker.settings import EX_CONFIG, ChildSettings, WorkerSettings, child_command

log = logging.getLogger("celeriac.worker")

#: A child that dies sooner than this after starting is "crashing": back off.
CRASH_WINDOW = 1.0
MAX_BACKOFF = 10.0
#: Seconds between reads of each child's resident memory (the terminate threshold).
MEMORY_CHECK_INTERVAL = 0.5


@dataclass
class _Child:
    index: int
    popen: subprocess.Popen[bytes]
    identity: bytes
    started: float
    control: int  # read end of the pipe the child reports deadlines on
    failures: int = 0
    restart_at: float | None = None
    deadlines: dict[str, float] = field(default_factory=dict)  # hard limits, monotonic
    buffer: bytes = b""
    killed_for: tuple[str, str] | None = None  # (key, reason) when we killed it
    memory_checked: float = 0.0  # when its resident memory was last read (monotonic)


class Supervisor:
    """``celeriac worker``: keeps ``settings.nprocs`` worker processes running.

    ``settings``: the command's :class:`WorkerSettings`; each worker process gets
    the same object, with its own :class:`ChildSettings` (identity, control pipe,
    index, and this process as its parent).  ``parent_pid``: stop the workers and
    return when this process is gone (the embedded cluster).  The constructor
    connects to the scheduler, to report deaths; :meth:`run` starts the processes.
    """

    def __init__(self, settings: WorkerSettings, *, parent_pid: int | None = None) -> None:
        self.settings = settings
        self._children: dict[int, _Child] = {}
        self._stopping = False
        self._status = 0  # what run() returns
        self._parent = parent_pid
        self._reporter = DeathReporter(settings.address, settings.keys or None)
        self._memory_limit = limit_of(settings.memory_limit, settings.nprocs)

    def request_stop(self) -> None:
        """Stop gracefully (SIGTERM): children hand back what they have not started."""
        self._stopping = True

    def run(self) -> int:
        """Start the processes, restart dead ones, until :meth:`request_stop`; exit status 0
        (:data:`EX_CONFIG` when a process could not load its ``-A`` modules)."""
        if left := remove_leftover_spills(self.settings.local_directory):
            log.info("deleted %d spill directories of worker processes that are gone", left)
        for index in range(self.settings.nprocs):
            self._children[index] = self._spawn(index, failures=0)
        log.info(
            "started %d worker processes x %d threads for %s",
            self.settings.nprocs,
            self.settings.nthreads,
            self.settings.address,
        )
        try:
            while not self._stopping:
                self._reap()
                self._reporter.poll()
                self._reporter.vouch([c.identity for c in self._children.values()])
                if parent_gone(self._parent):
                    log.warning("parent process exited; stopping workers")
                    break
                time.sleep(0.05)
            self._stop_children()
        finally:
            self._reporter.close()
        return self._status

    def child_pids(self) -> list[int]:
        """The pids of the worker processes now running."""
        return [child.popen.pid for child in self._children.values()]

    def _command(self, index: int, identity: bytes, control_fd: int) -> list[str]:
        child = ChildSettings(identity, control_fd, index, parent_pid=os.getpid())
        return child_command(self.settings, child)

    def _spawn(self, index: int, failures: int) -> _Child:
        identity = uuid.uuid4().bytes
        read_end, write_end = os.pipe()
        os.set_blocking(read_end, False)
        try:
            popen = subprocess.Popen(
                self._command(index, identity, write_end), pass_fds=(write_end,)
            )
        finally:
            os.close(write_end)
        return _Child(index, popen, identity, time.monotonic(), read_end, failures)

    def _reap(self) -> None:
        now = time.monotonic()
        for index, child in list(self._children.items()):
            if child.restart_at is not None:
                if now >= child.restart_at:
                    self._children[index] = self._spawn(index, child.failures)
                continue
            self._read_control(child)
            self._enforce_limits(child, now)
            code = child.popen.poll()
            if code is not None:
                self._on_exit(child, code, now)

    def _on_exit(self, child: _Child, code: int, now: float) -> None:
        os.close(child.control)
        # What it spilled is lost with it; killed, it could not delete the files itself.
        remove_spill_directory(self._spill_directory(child))
        reason = _describe_exit(code)
        if child.killed_for is not None:
            key, why = child.killed_for
            self._reporter.report(child.identity, why, key)
        else:
            self._reporter.report(child.identity, reason)
        if code == EX_CONFIG and child.killed_for is None:
            log.error(
                "worker process %d (pid %d) could not load its -A modules (exit %d, its error "
                "is above); stopping the worker instead of restarting it",
                child.index,
                child.popen.pid,
                code,
            )
            del self._children[child.index]
            self._status = EX_CONFIG
            self._stopping = True
            return
        crashed = code != 0 and now - child.started < CRASH_WINDOW and child.killed_for is None
        child.failures = child.failures + 1 if crashed else 0
        delay = min(MAX_BACKOFF, 0.1 * 2**child.failures) if crashed else 0.0
        log.warning(
            "worker process %d (pid %d) exited with %s; restarting in %.1fs",
            child.index,
            child.popen.pid,
            reason,
            delay,
        )
        child.restart_at = now + delay

    def _read_control(self, child: _Child) -> None:
        try:
            while chunk := os.read(child.control, 65536):
                child.buffer += chunk
        except BlockingIOError:
            pass
        *lines, child.buffer = child.buffer.split(b"\n")
        for line in lines:
            try:
                command, key, value = json.loads(line)
            except ValueError:
                log.error("garbled control line from worker pid %d", child.popen.pid)
                continue
            if command == "deadline":
                child.deadlines[key] = float(value)
            elif command == "clear":
                child.deadlines.pop(key, None)
            elif command == "kill":
                self._kill(child, key, str(value))

    def _enforce_limits(self, child: _Child, now: float) -> None:
        if now >= child.memory_checked + MEMORY_CHECK_INTERVAL:
            child.memory_checked = now
            rss = rss_of(child.popen.pid)
            if over_terminate(self._memory_limit, rss) and child.popen.poll() is None:
                log.error(
                    "worker pid %d uses %d MiB, past %d%% of its --memory-limit of %d MiB; "
                    "restarting it",
                    child.popen.pid,
                    rss >> 20,
                    int(TERMINATE * 100),
                    self._memory_limit >> 20,
                )
                child.popen.kill()  # its death is reported as any other: work runs again
                return
        for key, deadline in child.deadlines.items():
            if deadline <= now:
                log.error(
                    "task %s passed its hard time limit; killing worker pid %d",
                    key,
                    child.popen.pid,
                )
                self._kill(child, key, "time-limit")
                return

    def _kill(self, child: _Child, key: str, reason: str) -> None:
        if child.killed_for is None and child.popen.poll() is None:
            child.killed_for = (key, reason)
            child.deadlines.clear()
            child.popen.kill()

    def _spill_directory(self, child: _Child) -> str:
        return spill_directory(self.settings.local_directory, child.popen.pid, child.identity)

    def _stop_children(self) -> None:
        live = [c.popen for c in self._children.values() if c.popen.poll() is None]
        log.info("stopping %d worker processes", len(live))
        for popen in live:
            popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.settings.stop_timeout
        for popen in live:
            try:
                popen.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker pid %d did not stop in time; killing it", popen.pid)
                popen.kill()
                popen.wait()
        for child in self._children.values():  # a killed one could not delete its own
            remove_spill_directory(self._spill_directory(child))


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"code {code}"


class DeathReporter:
    """The supervisor's line to the scheduler: dead children, and live ones."""

    #: Seconds between ``workers-alive`` messages.
    VOUCH_INTERVAL = 0.25

    def __init__(self, address: str, keys: str | Path | None = None) -> None:
        self._next_vouch = 0.0
        self._context = zmq.Context()
        self._socket = scheduler_dealer(self._context, address, role="worker", keys=keys)
        self._registration = Registration()
        self._hello()

    def report(self, identity: bytes, reason: str, key: str | None = None) -> None:
        """Tell the scheduler a child died (``reason``; ``key``: the task that killed it)."""
        fields = {"worker": identity.hex(), "reason": reason}
        if key is not None:
            fields["key"] = key
        msg = Message("worker-died", fields)
        self._send(msg)

    def vouch(self, identities: list[bytes]) -> None:
        """Say these children are alive (their own heartbeats may be stuck behind the GIL)."""
        now = time.monotonic()
        if now < self._next_vouch:
            return
        self._next_vouch = now + self.VOUCH_INTERVAL
        msg = Message("workers-alive", {"workers": [i.hex() for i in identities]})
        self._send(msg)

    def poll(self) -> None:
        """Answer a restarted scheduler's ``reregister``; ignore the rest."""
        for messages in drain(self._socket):
            for msg in messages:
                if msg.op == "welcome":
                    self._registration.welcomed()
                elif msg.op == "reregister" and self._registration.reregister():
                    self._hello()

    def close(self) -> None:
        """Say goodbye and close the socket."""
        self._send(Message("goodbye"))
        self._socket.close()
        self._context.term()

    def _send(self, msg: Message) -> None:
        """Never block: with the scheduler gone, a full queue must not freeze the
        supervisor (it still has children to restart and signals to obey)."""
        try:
            send_frames(self._socket, protocol.encode([msg]), zmq.NOBLOCK)
        except zmq.Again:
            log.debug("scheduler unreachable; dropped %r", msg.op)

    def _hello(self) -> None:
        hello = Message("hello-client", {"version": protocol.VERSION})
        self._send(hello)
