"""An embedded cluster: a scheduler and workers on this machine, as subprocesses.

What ``Client()`` starts when no address is given (Dask's ``LocalCluster``).
Every process it starts watches its parent and exits with it, so a crashed
user process leaves nothing behind.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import subprocess
import sys
import time
from typing import IO

log = logging.getLogger("celeriac.cluster")

LISTENING = "celeriac scheduler listening at "
DASHBOARD_AT = "celeriac dashboard at "


class ClusterStartError(RuntimeError):
    pass


class LocalCluster:
    def __init__(
        self,
        n_workers: int | None = None,
        threads_per_worker: int = 1,
        *,
        timeout: float = 10.0,
        log_level: str = "WARNING",
        scheduler_args: tuple[str, ...] = (),
        worker_args: tuple[str, ...] = (),
    ) -> None:
        self.n_workers = n_workers or os.cpu_count() or 1
        base = [sys.executable, "-m", "celeriac"]
        level = ["--log-level", log_level]
        self._scheduler = subprocess.Popen(
            [
                *base,
                "scheduler",
                *level,
                "--port",
                "0",
                "--parent-pid",
                str(os.getpid()),
                *scheduler_args,
            ],
            stdout=subprocess.PIPE,
        )
        self._workers: subprocess.Popen[bytes] | None = None
        try:
            self.address, self.dashboard_address = _read_addresses(self._scheduler, timeout)
            self._workers = subprocess.Popen(
                [
                    *base,
                    "worker",
                    self.address,
                    *level,
                    "--nprocs",
                    str(self.n_workers),
                    "--nthreads",
                    str(threads_per_worker),
                    "--parent-pid",
                    str(os.getpid()),
                    *worker_args,
                ]
            )
        except BaseException:
            self.close()
            raise

    def close(self, timeout: float = 10.0) -> None:
        """Stop workers first (they finish or hand back), then the scheduler."""
        for popen in (self._workers, self._scheduler):
            if popen is not None and popen.poll() is None:
                popen.send_signal(signal.SIGTERM)
                try:
                    popen.wait(timeout)
                except subprocess.TimeoutExpired:
                    log.warning("pid %d did not stop in %g s; killing it", popen.pid, timeout)
                    popen.kill()
                    popen.wait()
        if self._scheduler.stdout is not None:
            self._scheduler.stdout.close()

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _read_addresses(popen: subprocess.Popen[bytes], timeout: float) -> tuple[str, str | None]:
    """The scheduler's address (and dashboard's, if any), as it prints them once bound."""
    stream: IO[bytes] | None = popen.stdout
    assert stream is not None
    deadline = time.monotonic() + timeout
    dashboard, pending = None, b""
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        # Raw reads: a buffered readline could hide a second line from select().
        while time.monotonic() < deadline:
            if not selector.select(max(0.0, deadline - time.monotonic())):
                continue
            chunk = os.read(stream.fileno(), 4096)
            if not chunk:
                break
            *lines, pending = (pending + chunk).split(b"\n")
            for line in (raw.decode() for raw in lines):
                if line.startswith(DASHBOARD_AT):
                    dashboard = line[len(DASHBOARD_AT) :].strip()
                elif line.startswith(LISTENING):
                    return line[len(LISTENING) :].strip(), dashboard
    code = popen.poll()
    raise ClusterStartError(
        f"the embedded scheduler did not start within {timeout:g} s"
        + (f" (it exited with code {code})" if code is not None else "")
    )
