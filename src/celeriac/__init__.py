"""Celeriac: Dask-style futures and Celery-style tasks on one ZeroMQ engine."""

from celeriac.app import App, Task
from celeriac.canvas import chain, chord, group
from celeriac.client import Client
from celeriac.cluster import LocalCluster
from celeriac.errors import (
    CancelledError,
    FutureLostError,
    KilledWorker,
    MaxRetriesExceededError,
    Retry,
    SchedulerUnavailable,
    SoftTimeLimitExceeded,
    TaskExpiredError,
    TaskRevokedError,
    TimeLimitExceeded,
    TimeoutError,
)
from celeriac.futures import Future, as_completed, fire_and_forget, wait
from celeriac.progress import progress
from celeriac.result import AsyncResult, GroupResult
from celeriac.schedules import at, crontab, every
from celeriac.serialize import RemoteError, SerializationError

__version__ = "0.1.0"

__all__ = [
    "App",
    "AsyncResult",
    "CancelledError",
    "Client",
    "Future",
    "FutureLostError",
    "GroupResult",
    "KilledWorker",
    "LocalCluster",
    "MaxRetriesExceededError",
    "RemoteError",
    "Retry",
    "SchedulerUnavailable",
    "SerializationError",
    "SoftTimeLimitExceeded",
    "Task",
    "TaskExpiredError",
    "TaskRevokedError",
    "TimeLimitExceeded",
    "TimeoutError",
    "as_completed",
    "at",
    "chain",
    "chord",
    "crontab",
    "every",
    "fire_and_forget",
    "group",
    "progress",
    "wait",
]
