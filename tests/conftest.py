"""Shared fixtures: real scheduler and worker processes on loopback (``celeriac.testing``)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import cloudpickle
import pytest
import zmq

import tasks_for_tests
from celeriac import Client, LocalCluster
from celeriac.testing import ClusterFactory, Deployment, descendants, kill, wait_until

# Workers cannot import modules from tests/, so these functions travel by value.
cloudpickle.register_pickle_by_value(tasks_for_tests)

# Every process the suite starts is configured by the test that starts it:
# nothing comes from the shell that ran pytest (CELERIAC_ADDRESS, _KEYS, ...).
for _name in [name for name in os.environ if name.startswith("CELERIAC_")]:
    del os.environ[_name]

# Schedulers started by tests keep their default journals here, not in $HOME
# (removed when the test run ends).
if "XDG_STATE_HOME" not in os.environ:
    _state = tempfile.mkdtemp(prefix="celeriac-test-state-")
    os.environ["XDG_STATE_HOME"] = _state
    atexit.register(shutil.rmtree, _state, True)


@pytest.fixture
def cluster_factory() -> Iterator[Callable[..., LocalCluster]]:
    """Start real clusters; every one is torn down after the test."""
    with ClusterFactory() as make:
        yield make


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


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    """A scheduler on a journal in ``tmp_path``, started through the CLI; stopped after."""
    d = Deployment(tmp_path / "journal.sqlite3")
    d.start_scheduler()
    yield d
    d.stop()


@pytest.fixture(autouse=True, scope="session")
def no_process_left_behind() -> Iterator[None]:
    yield
    if not os.path.isdir("/proc"):
        return
    try:
        wait_until(lambda: not descendants(os.getpid()), timeout=15)
    except AssertionError:
        leftovers = descendants(os.getpid())
        for leftover in leftovers:
            kill(leftover)
        pytest.fail(f"processes left behind by the test suite: {leftovers}")


INTEGRATION = Path(__file__).parent / "integration"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/integration is ``slow``: ``-m "not slow"`` is the quick loop."""
    for item in items:
        if INTEGRATION in item.path.parents:
            item.add_marker(pytest.mark.slow)
