"""Celeriac: Dask-style futures and Celery-style tasks on one ZeroMQ engine.

The public names are re-exported here; the code lives in layers, each
importing only from the layers below it (``tests/unit/test_layers.py`` checks):

* shared vocabulary: ``errors``, ``schedules``, ``context``, ``logs``;
* ``wire``: message format, pickling, shared memory, sockets, keys;
* ``scheduler`` and ``worker``: the engine's processes (neither imports the other);
* ``client``: ``Client``, futures, the embedded cluster;
* ``tasks``: the Celery-style front door (``App``, ``Task``, canvas);
* ``cli`` and ``testing``: the ``celeriac`` command and the test harnesses.
"""

from celeriac import _moved
from celeriac.client import Client
from celeriac.client.cluster import LocalCluster
from celeriac.client.futures import Future, as_completed, fire_and_forget, wait
from celeriac.client.progress import progress
from celeriac.errors import (
    ArgumentTooLarge,
    CancelledError,
    FutureLostError,
    JournalUnavailable,
    KilledWorker,
    MaxRetriesExceededError,
    ResultTooLarge,
    Retry,
    SchedulerUnavailable,
    SoftTimeLimitExceeded,
    TaskExpiredError,
    TaskRevokedError,
    TimeLimitExceeded,
    TimeoutError,
)
from celeriac.schedules import at, crontab, every
from celeriac.tasks.app import App, Task
from celeriac.tasks.canvas import Signature, chain, chord, group, signature
from celeriac.tasks.maps import chunks, xmap, xstarmap
from celeriac.tasks.result import AsyncResult, GroupResult
from celeriac.tasks.shared import shared_task
from celeriac.wire.serialize import RemoteError, SerializationError

#: Celery's name for the app: ``from celeriac import Celery`` runs a Celery program.
Celery = App

__version__ = "0.1.0"

_moved.install()

__all__ = [
    "App",
    "ArgumentTooLarge",
    "AsyncResult",
    "CancelledError",
    "Celery",
    "Client",
    "Future",
    "FutureLostError",
    "GroupResult",
    "JournalUnavailable",
    "KilledWorker",
    "LocalCluster",
    "MaxRetriesExceededError",
    "RemoteError",
    "ResultTooLarge",
    "Retry",
    "SchedulerUnavailable",
    "SerializationError",
    "Signature",
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
    "chunks",
    "crontab",
    "every",
    "fire_and_forget",
    "group",
    "progress",
    "shared_task",
    "signature",
    "wait",
    "xmap",
    "xstarmap",
]
