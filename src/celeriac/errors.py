"""Exceptions users catch."""

from __future__ import annotations

from concurrent.futures import CancelledError, TimeoutError

__all__ = [
    "CancelledError",
    "FutureLostError",
    "JournalUnavailable",
    "KilledWorker",
    "MaxRetriesExceededError",
    "Retry",
    "SchedulerUnavailable",
    "SoftTimeLimitExceeded",
    "TaskExpiredError",
    "TaskRevokedError",
    "TimeLimitExceeded",
    "TimeoutError",
]


class KilledWorker(Exception):
    """The task was running on workers that died too often; it is not retried again."""


class FutureLostError(Exception):
    """The scheduler no longer knows this key (released, or lost in a restart)."""


class SchedulerUnavailable(ConnectionError):
    """No scheduler answered at the address within the timeout."""


class JournalUnavailable(SchedulerUnavailable):
    """The scheduler cannot write its journal, so it refused durable work.

    Raised by ``.delay()``, ``apply_async()``, canvas and ``Client.enqueue`` /
    periodic jobs instead of waiting out the timeout: the message names the
    cause and the file (``disk full at PATH``).  Nothing refused was
    recorded or will run; plain futures are still served, and durable work is
    accepted again as soon as the journal can be written.  A subclass of
    :class:`SchedulerUnavailable`: code that retries later on that retries on this.
    """


class TaskRevokedError(CancelledError):
    """The task was revoked (Celery-style ``revoke``) or cancelled."""


class TaskExpiredError(CancelledError):
    """The task's ``expires`` time passed before a worker started it."""


class TimeLimitExceeded(Exception):
    """The task ran past its hard ``time_limit``; its worker process was killed."""


class SoftTimeLimitExceeded(Exception):
    """Raised inside a task when it passes its ``soft_time_limit``: clean up and stop."""


class ArgumentTooLarge(ValueError):
    """A task and its arguments would make a message over the scheduler's size limit.

    Raised at the call, before anything is sent: nothing was submitted.
    """


class ResultTooLarge(Exception):
    """A task's result is over the scheduler's message size limit, so it was not sent.

    The task's run failed with this instead (not retried: it would fail again);
    nothing of the result was written anywhere.
    """


class MaxRetriesExceededError(Exception):
    """A task asked to be retried (``self.retry()``) with no retries left and no cause."""


class Retry(Exception):
    """Raise (or ``self.retry()``) in a task to have the scheduler run it again.

    ``exc`` is the failure to report if no retries are left; ``countdown``
    the seconds to wait (default: the task's back-off policy, or at once).
    """

    def __init__(self, exc: BaseException | None = None, countdown: float | None = None) -> None:
        super().__init__(f"retry requested{f' after {exc!r}' if exc is not None else ''}")
        self.exc = exc
        self.countdown = countdown

    def __reduce__(self) -> tuple[type, tuple[BaseException | None, float | None]]:
        return Retry, (self.exc, self.countdown)
