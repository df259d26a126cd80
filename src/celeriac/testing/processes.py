"""Real processes for tests: clusters torn down afterwards, a restartable deployment, waits."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from celeriac.client.client import Client
from celeriac.client.cluster import LocalCluster

#: Short timeouts, for tests of fault detection only: a worker is declared lost
#: after a second without heartbeats (starved live ones too, on a loaded machine).
FAST_SCHEDULER = ("--worker-timeout", "1.0", "--heartbeat-interval", "0.1")
#: ``python -m celeriac``: the real command line.
CELERIAC = (sys.executable, "-m", "celeriac")


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll ``predicate`` until it returns something truthy (returned), or fail at the deadline.

    ``timeout`` is the seconds until ``AssertionError``; ``interval`` the sleep
    between calls.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {predicate}")
        time.sleep(interval)


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def kill(pid: int) -> None:
    """SIGKILL ``pid`` if it still exists."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def worker_pids(client: Client) -> list[int]:
    """The pids of the worker processes registered with ``client``'s scheduler."""
    return [w["pid"] for w in client.scheduler_info()["workers"]]


def descendants(root: int) -> list[int]:
    """Live (not zombie) descendant pids of ``root``, from ``/proc``."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, stack = [], [root]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


class ClusterFactory:
    """Start real clusters (:class:`LocalCluster`) and tear every one down at :meth:`close`.

    Keywords go to ``LocalCluster`` (``log_level`` defaults to ``"INFO"``).  The
    scheduler keeps its default timeouts, long enough for a loaded machine; a
    test of fault detection passes ``scheduler_args=FAST_SCHEDULER``.  As a
    pytest fixture::

        @pytest.fixture
        def cluster_factory():
            with ClusterFactory() as make:
                yield make
    """

    def __init__(self) -> None:
        self.started: list[LocalCluster] = []

    def __call__(
        self, n_workers: int = 2, threads_per_worker: int = 1, **kwargs: Any
    ) -> LocalCluster:
        """A started cluster of ``n_workers`` processes with ``threads_per_worker`` slots each.

        ``kwargs`` are ``LocalCluster``'s keywords (``timeout``, ``log_level``,
        ``scheduler_args``, ``worker_args``).
        """
        kwargs.setdefault("log_level", "INFO")
        cluster = LocalCluster(n_workers, threads_per_worker, **kwargs)
        self.started.append(cluster)
        return cluster

    def close(self) -> None:
        """Close every cluster started so far."""
        for cluster in self.started:
            cluster.close()
        self.started.clear()

    def __enter__(self) -> ClusterFactory:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Deployment:
    """A scheduler on a fixed port and journal that a test can kill -9 and restart.

    Started through the real CLI (``python -m celeriac scheduler``), with
    workers started by :meth:`start_worker`; :meth:`stop` ends them all.
    ``journal`` is the journal's path; the port is one that was free at creation.
    """

    def __init__(self, journal: Path) -> None:
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.journal = journal
        self.scheduler: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []

    def start_scheduler(self, *extra: str) -> None:
        """Start the scheduler on this deployment's port and journal.

        With a 2 s worker timeout and a dashboard on a free port; ``extra`` are
        more command-line arguments.  Returns at once, before it listens.
        """
        cmd = [*CELERIAC, "scheduler", "--port", str(self.port), "--journal", str(self.journal)]
        cmd += ["--dashboard-port", "0"]  # tests run side by side: no fixed dashboard port
        cmd += ["--worker-timeout", "2", "--heartbeat-interval", "0.2", "--log-level", "WARNING"]
        self.scheduler = subprocess.Popen([*cmd, *extra], stdout=subprocess.DEVNULL)

    def kill_scheduler(self) -> None:
        """SIGKILL the scheduler and reap it."""
        assert self.scheduler is not None
        self.scheduler.send_signal(signal.SIGKILL)
        self.scheduler.wait()

    def start_worker(self, nprocs: int = 2) -> None:
        """Start ``celeriac worker`` with ``nprocs`` processes."""
        cmd = [*CELERIAC, "worker", self.address, "--nprocs", str(nprocs), "--log-level", "WARNING"]
        self.workers.append(subprocess.Popen(cmd))

    def stop(self) -> None:
        """SIGTERM everything still running (SIGKILL after 20 s) and reap it."""
        for popen in [*self.workers, self.scheduler]:
            if popen is not None and popen.poll() is None:
                popen.terminate()
                try:
                    popen.wait(20)
                except subprocess.TimeoutExpired:
                    popen.kill()
                    popen.wait()
