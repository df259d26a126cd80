"""One vocabulary of task states, and the names Dask and Celery users know them by.

The engine speaks :class:`TaskState` only.  What users see is mapped from it
in one place each: :class:`FutureStatus` is ``Future.status`` (Dask's names),
:class:`CeleryState` is ``AsyncResult.status`` (Celery's names).

=============  ==================  =====================================
``TaskState``  ``Future.status``   ``AsyncResult.status``
=============  ==================  =====================================
waiting        pending             PENDING (RETRY after a retry)
scheduled      pending             PENDING (RETRY after a retry)
queued         pending             PENDING (RETRY after a retry)
processing     pending             STARTED once running, else as queued
memory         finished            SUCCESS
erred          error               FAILURE
cancelled      cancelled           REVOKED
expired        cancelled           EXPIRED
(forgotten)    lost                UNKNOWN
=============  ==================  =====================================
"""

from __future__ import annotations

from enum import StrEnum


class TaskState(StrEnum):
    """Where a task is in the scheduler; the legal moves are ``scheduler/transitions.py``."""

    WAITING = "waiting"  # some dependency has not finished yet
    SCHEDULED = "scheduled"  # ready, but not before a time (eta, back-off, rate limit)
    QUEUED = "queued"  # ready, in its queue, not given to a worker
    PROCESSING = "processing"  # given to a worker (prefetched or running)
    MEMORY = "memory"  # finished; its result is kept
    ERRED = "erred"  # failed for good (after retries)
    CANCELLED = "cancelled"  # cancelled or revoked
    EXPIRED = "expired"  # its expiry time passed before it started

    @property
    def finished(self) -> bool:
        """Whether the task is done for good (no state follows)."""
        return self in FINISHED


FINISHED = frozenset({TaskState.MEMORY, TaskState.ERRED, TaskState.CANCELLED, TaskState.EXPIRED})


class FutureStatus(StrEnum):
    """``Future.status``, as Dask names it: what the client knows of a key."""

    PENDING = "pending"
    FINISHED = "finished"
    ERROR = "error"
    CANCELLED = "cancelled"
    LOST = "lost"  # the scheduler no longer knows the key (restarted, or forgotten)


class CeleryState(StrEnum):
    """``AsyncResult.status``, as Celery names it."""

    PENDING = "PENDING"
    STARTED = "STARTED"
    RETRY = "RETRY"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    REVOKED = "REVOKED"
    EXPIRED = "EXPIRED"
    UNKNOWN = "UNKNOWN"  # no record of the id (never submitted, or its outcome expired)


#: Celery states after which the outcome no longer changes (Celery's ``READY_STATES``).
READY_STATES = frozenset(
    {CeleryState.SUCCESS, CeleryState.FAILURE, CeleryState.REVOKED, CeleryState.EXPIRED}
)

#: A finished task's status in each vocabulary; unfinished ones are ``pending``.
DASK_STATUS = {
    TaskState.MEMORY: FutureStatus.FINISHED,
    TaskState.ERRED: FutureStatus.ERROR,
    TaskState.CANCELLED: FutureStatus.CANCELLED,
    TaskState.EXPIRED: FutureStatus.CANCELLED,
}
CELERY_STATE = {
    TaskState.MEMORY: CeleryState.SUCCESS,
    TaskState.ERRED: CeleryState.FAILURE,
    TaskState.CANCELLED: CeleryState.REVOKED,
    TaskState.EXPIRED: CeleryState.EXPIRED,
}


def dask_status(state: TaskState) -> FutureStatus:
    """``Future.status`` for a task in ``state``."""
    return DASK_STATUS.get(state, FutureStatus.PENDING)


def celery_state(state: TaskState | None, *, started: bool, retried: bool) -> CeleryState:
    """``AsyncResult.status`` for a task in ``state`` (``None``: no record of it).

    ``started``: its worker said it began running; ``retried``: it ran and
    failed before, and waits for another attempt.
    """
    if state is None:
        return CeleryState.UNKNOWN
    if state in CELERY_STATE:
        return CELERY_STATE[state]
    if state is TaskState.PROCESSING and started:
        return CeleryState.STARTED
    return CeleryState.RETRY if retried else CeleryState.PENDING
