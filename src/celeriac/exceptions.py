"""Celery's exception names (``celery.exceptions``), as the Celeriac classes they are.

``from celeriac.exceptions import Retry, SoftTimeLimitExceeded`` runs a Celery
program's imports unchanged.  Every name here *is* a class of
:mod:`celeriac.errors` (or a builtin), never a second class for one thing:
``except celeriac.exceptions.TimeLimitExceeded`` catches what
``celeriac.TimeLimitExceeded`` names.  A Celery name whose meaning Celeriac
does not have (``Reject``, ``Ignore``, ``ChordError``, the backend errors ...)
is absent rather than accepted and ignored: ``docs/tasks.md`` lists each one.
"""

from __future__ import annotations

from celeriac.errors import (
    KilledWorker,
    MaxRetriesExceededError,
    Retry,
    SchedulerUnavailable,
    SoftTimeLimitExceeded,
    TaskRevokedError,
    TimeLimitExceeded,
    TimeoutError,
)

#: Celery's old name for :class:`Retry`.
RetryTaskError = Retry

#: Celery raises it when the worker process running a task exits; Celeriac runs
#: such a task again and fails it with :class:`KilledWorker` only after its
#: workers died ``--allowed-failures`` times while running it.
WorkerLostError = KilledWorker

#: Celery's (kombu's) error for a broker it cannot reach when sending: here the
#: scheduler did not accept a task within ``App(timeout=)``.
OperationalError = SchedulerUnavailable

__all__ = [
    "MaxRetriesExceededError",
    "OperationalError",
    "Retry",
    "RetryTaskError",
    "SoftTimeLimitExceeded",
    "TaskRevokedError",
    "TimeLimitExceeded",
    "TimeoutError",
    "WorkerLostError",
]
