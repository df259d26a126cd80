"""``celeriac worker``: start N worker processes, restart any that die.

The supervisor holds no socket: the scheduler learns of a dead child from
its missing heartbeats, and the replacement registers as a new worker.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

log = logging.getLogger("celeriac.worker")

#: A child that dies sooner than this after starting is "crashing": back off.
CRASH_WINDOW = 1.0
MAX_BACKOFF = 10.0


@dataclass
class WorkerOptions:
    address: str
    nprocs: int = 1
    nthreads: int = 1
    queues: tuple[str, ...] = ("default",)
    name: str | None = None
    log_level: str = "INFO"
    imports: tuple[str, ...] = ()
    stop_timeout: float = 30.0


@dataclass
class _Child:
    index: int
    popen: subprocess.Popen[bytes]
    started: float
    failures: int = 0
    restart_at: float | None = field(default=None)


class Supervisor:
    def __init__(self, options: WorkerOptions, *, exit_with_parent: bool = False) -> None:
        self.options = options
        self._children: dict[int, _Child] = {}
        self._stopping = False
        self._parent = os.getppid() if exit_with_parent else None

    def request_stop(self) -> None:
        self._stopping = True

    def run(self) -> int:
        for index in range(self.options.nprocs):
            self._children[index] = self._spawn(index, failures=0)
        log.info(
            "started %d worker processes x %d threads for %s",
            self.options.nprocs,
            self.options.nthreads,
            self.options.address,
        )
        while not self._stopping:
            self._reap()
            if self._parent is not None and os.getppid() != self._parent:
                log.warning("parent process exited; stopping workers")
                break
            time.sleep(0.05)
        self._stop_children()
        return 0

    def child_pids(self) -> list[int]:
        return [child.popen.pid for child in self._children.values()]

    def _command(self, index: int) -> list[str]:
        opts = self.options
        name = f"{opts.name}-{index}" if opts.name else None
        cmd = [sys.executable, "-m", "celeriac.worker", opts.address, "--nthreads"]
        cmd += [str(opts.nthreads), "--queues", ",".join(opts.queues)]
        cmd += ["--log-level", opts.log_level, "--exit-with-parent"]
        for module in opts.imports:
            cmd += ["--import", module]
        if name:
            cmd += ["--name", name]
        return cmd

    def _spawn(self, index: int, failures: int) -> _Child:
        popen = subprocess.Popen(self._command(index))
        return _Child(index, popen, time.monotonic(), failures)

    def _reap(self) -> None:
        now = time.monotonic()
        for index, child in list(self._children.items()):
            if child.restart_at is not None:
                if now >= child.restart_at:
                    self._children[index] = self._spawn(index, child.failures)
                continue
            code = child.popen.poll()
            if code is None:
                continue
            crashed = now - child.started < CRASH_WINDOW
            child.failures = child.failures + 1 if crashed else 0
            delay = min(MAX_BACKOFF, 0.1 * 2**child.failures) if crashed else 0.0
            log.warning(
                "worker process %d (pid %d) exited with %s; restarting in %.1fs",
                index,
                child.popen.pid,
                _describe_exit(code),
                delay,
            )
            child.restart_at = now + delay

    def _stop_children(self) -> None:
        live = [c.popen for c in self._children.values() if c.popen.poll() is None]
        log.info("stopping %d worker processes", len(live))
        for popen in live:
            popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.options.stop_timeout
        for popen in live:
            try:
                popen.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker pid %d did not stop in time; killing it", popen.pid)
                popen.kill()
                popen.wait()


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"code {code}"
