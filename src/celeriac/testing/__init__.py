"""Harnesses for testing Celeriac and code built on it, shipped with the package.

* :class:`SimulatedScheduler`: a pure ``SchedulerState`` driven with a fake
  clock; feed it messages, assert on the list of ``Send`` commands it returns.
* :class:`FakeScheduler`: a ZeroMQ ROUTER the test controls, with one real
  worker process connected to it, for worker tests.
* :class:`RawPeer`: a bare DEALER socket with a barrier, for hostile bytes.
* :class:`ClusterFactory` (real scheduler and workers on this machine, always
  torn down) and :class:`Deployment` (a scheduler on a fixed port and journal
  that a test can kill and restart, started through the real CLI).
* :func:`wait_until`: poll a condition with a deadline, never a bare sleep.

The like of dramatiq's ``StubBroker`` and ``trio.testing``: tests of this
project use them, and so can a user's own.
"""

from celeriac.testing.fakes import FakeScheduler, RawPeer
from celeriac.testing.processes import (
    FAST_SCHEDULER,
    ClusterFactory,
    Deployment,
    descendants,
    free_port,
    kill,
    wait_until,
    worker_pids,
)
from celeriac.testing.sim import SimulatedScheduler, checked, hello_worker, message, ops

__all__ = [
    "FAST_SCHEDULER",
    "ClusterFactory",
    "Deployment",
    "FakeScheduler",
    "RawPeer",
    "SimulatedScheduler",
    "checked",
    "descendants",
    "free_port",
    "hello_worker",
    "kill",
    "message",
    "ops",
    "wait_until",
    "worker_pids",
]
