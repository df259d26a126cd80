"""Celeriac: Dask-style futures and Celery-style tasks on one ZeroMQ engine."""

from celeriac.client import Client
from celeriac.cluster import LocalCluster
from celeriac.errors import (
    CancelledError,
    FutureLostError,
    KilledWorker,
    SchedulerUnavailable,
    TimeoutError,
)
from celeriac.futures import Future, as_completed, fire_and_forget, wait
from celeriac.serialize import RemoteError, SerializationError

__version__ = "0.1.0"

__all__ = [
    "CancelledError",
    "Client",
    "Future",
    "FutureLostError",
    "KilledWorker",
    "LocalCluster",
    "RemoteError",
    "SchedulerUnavailable",
    "SerializationError",
    "TimeoutError",
    "as_completed",
    "fire_and_forget",
    "wait",
]
