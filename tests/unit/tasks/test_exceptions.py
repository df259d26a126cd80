"""``celeriac.exceptions``: Celery's exception names are Celeriac's classes, never second ones."""

from __future__ import annotations

import celeriac
from celeriac import errors, exceptions


def test_each_celery_name_is_the_celeriac_class() -> None:
    same = {
        "Retry": errors.Retry,
        "RetryTaskError": errors.Retry,
        "MaxRetriesExceededError": errors.MaxRetriesExceededError,
        "SoftTimeLimitExceeded": errors.SoftTimeLimitExceeded,
        "TimeLimitExceeded": errors.TimeLimitExceeded,
        "TaskRevokedError": errors.TaskRevokedError,
        "TimeoutError": TimeoutError,
        "WorkerLostError": errors.KilledWorker,
        "OperationalError": errors.SchedulerUnavailable,
    }
    assert {name: getattr(exceptions, name) for name in exceptions.__all__} == same
    assert exceptions.Retry is celeriac.Retry


def test_names_without_a_meaning_here_are_absent() -> None:
    for name in ("Reject", "Ignore", "ChordError", "NotRegistered", "BackendError"):
        assert not hasattr(exceptions, name)
