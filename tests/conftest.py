"""Shared fixtures: real scheduler and worker processes on loopback."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import cloudpickle
import pytest
import zmq

import tasks_for_tests
from celeriac import Client, LocalCluster

# Workers cannot import modules from tests/, so these functions travel by value.
cloudpickle.register_pickle_by_value(tasks_for_tests)

# Schedulers started by tests keep their default journals here, not in $HOME
# (removed when the test run ends).
if "XDG_STATE_HOME" not in os.environ:
    _state = tempfile.mkdtemp(prefix="celeriac-test-state-")
    os.environ["XDG_STATE_HOME"] = _state
    atexit.register(shutil.rmtree, _state, True)

#: Short timeouts so fault tests detect a dead worker in about a second.
FAST_SCHEDULER = ("--worker-timeout", "1.0", "--heartbeat-interval", "0.1")


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll ``predicate`` until it returns something truthy, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {predicate}")
        time.sleep(interval)


@pytest.fixture
def cluster_factory() -> Iterator[Callable[..., LocalCluster]]:
    """Start real clusters; every one is torn down after the test."""
    started: list[LocalCluster] = []

    def make(n_workers: int = 2, threads_per_worker: int = 1, **kwargs: Any) -> LocalCluster:
        kwargs.setdefault("scheduler_args", FAST_SCHEDULER)
        kwargs.setdefault("log_level", "INFO")
        cluster = LocalCluster(n_workers, threads_per_worker, **kwargs)
        started.append(cluster)
        return cluster

    yield make
    for cluster in started:
        cluster.close()


@pytest.fixture
def cluster(cluster_factory: Callable[..., LocalCluster]) -> LocalCluster:
    return cluster_factory()


@pytest.fixture
def client(cluster: LocalCluster) -> Iterator[Client]:
    with Client(cluster.address) as c:
        c.wait_for_workers(cluster.n_workers)
        yield c


@pytest.fixture
def raw(client: Client) -> Iterator[zmq.Socket]:
    """A bare DEALER socket connected to the client's scheduler: for hostile bytes."""
    context = zmq.Context()
    socket = context.socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    socket.setsockopt(zmq.RCVTIMEO, 5000)
    socket.connect(client.address)
    yield socket
    socket.close()
    context.term()


def worker_pids(client: Client) -> list[int]:
    return [w["pid"] for w in client.scheduler_info()["workers"]]


def kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _descendants(root: int) -> list[int]:
    """Live descendant pids of ``root``, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":  # zombies are already dead
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, stack = [], [root]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


@pytest.fixture(autouse=True, scope="session")
def no_process_left_behind() -> Iterator[None]:
    yield
    if not os.path.isdir("/proc"):
        return
    try:
        wait_until(lambda: not _descendants(os.getpid()), timeout=15)
    except AssertionError:
        leftovers = _descendants(os.getpid())
        for leftover in leftovers:
            kill(leftover)
        pytest.fail(f"processes left behind by the test suite: {leftovers}")
