"""What ``@app.task(...)`` and ``apply_async(...)`` take, and how a task asks for a retry.

:func:`task_options` reads the decorator's keywords into :class:`TaskOptions`:
Celery's names (``max_retries``, ``default_retry_delay``, ``retry_kwargs``,
``acks_late``) beside Celeriac's, and a ``TypeError`` naming any other, with
what to do instead when Celery has it.  :func:`refuse_call_options` does the
same for ``apply_async`` keywords.  :class:`RetryPolicy` is what travels with
a task's call to the worker: the part of Celery's ``Task.retry`` decided where
the task runs (the wait when none is given, a lower limit for one retry); the
scheduler counts retries against ``RunOptions.retries``.  Pure.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from celeriac.context import TaskRequest
from celeriac.errors import MaxRetriesExceededError, Retry
from celeriac.tasks.config import rate_limit, redelivery

#: ``max_retries=None`` (Celery: retry for ever): the count the scheduler is given.
UNLIMITED = 2**31 - 1

#: Celery's ``default_retry_delay``: the wait of a retry that gives none, in seconds.
DEFAULT_RETRY_DELAY = 180.0

#: Celery task options Celeriac does not take, and what to do instead.
ABSENT_TASK_OPTIONS: dict[str, str] = {
    "base": "there are no Task subclasses; use bind=True and the options here",
    "serializer": "arguments and results are always pickled (cloudpickle)",
    "track_started": "STARTED is always reported",
    "typing": "mypy checks .delay() arguments against the function; nothing is checked at run time",
    "expires": "give expires= to each apply_async call",
    "throws": "every failure is logged the same way",
    "store_errors_even_if_ignored": "an ignore_result task keeps nothing, not even a failure",
    "acks_on_failure_or_timeout": "a failed or timed-out task is never redelivered",
    "exchange": "there are no exchanges; route with queue=",
    "routing_key": "there are no exchanges; route with queue=",
    "shadow": "a task is logged under its own name",
    "pydantic": "arguments are passed as they were pickled",
    "send_events": "the scheduler's dashboard and celeriac inspect show every task",
    "trail": "children of a task are known only for a canvas sent by this process",
    "lazy": "tasks are always bound when first used",
    "shared": "@app.task belongs to its app; use @shared_task for any app",
    "filter": "decorate the task yourself",
}

#: Celery ``apply_async`` keywords Celeriac does not take, and why.
ABSENT_CALL_OPTIONS: dict[str, str] = {
    "time_limit": "set it on the task: @app.task(time_limit=...)",
    "soft_time_limit": "set it on the task: @app.task(soft_time_limit=...)",
    "ignore_result": "set it on the task: @app.task(ignore_result=True)",
    "serializer": "arguments are always pickled (cloudpickle)",
    "compression": "messages are not compressed",
    "headers": "there are no message headers",
    "exchange": "there are no exchanges; route with queue=",
    "routing_key": "there are no exchanges; route with queue=",
    "retry": "sending waits up to App(timeout=), then raises SchedulerUnavailable",
    "retry_policy": "sending waits up to App(timeout=), then raises SchedulerUnavailable",
    "producer": "each App has one connection",
    "connection": "each App has one connection",
    "publisher": "each App has one connection",
    "shadow": "a task is logged under its own name",
    "add_to_parent": "children are known only for a canvas sent by this process",
    "max_retries": "use retries= for this call, or max_retries= on the task",
}


@dataclass(frozen=True)
class TaskOptions:
    """Per-task settings, as given to ``@app.task``; ``apply_async`` may override some.

    ``None`` means "the app's": its settings (``task_default_queue``,
    ``task_routes``, ``task_time_limit``, ...) when the task is first sent.

    Parameters:
        queue, priority: where the task waits and in what order (higher first).
        retries: how many times it is tried again (on ``autoretry_for`` or
            ``self.retry``); Celery's ``max_retries``.
        retry_backoff, retry_backoff_max, retry_jitter: exponential back-off
            between automatic retries (``True``: from 1 s; a number: from that
            many seconds, as in Celery), its cap, and whether it is randomised.
        autoretry_for: exception types that retry the task instead of failing it.
        retry_kwargs: Celery's: ``countdown`` and ``max_retries`` of automatic retries.
        default_retry_delay: seconds a retry waits when it gives no countdown.
        time_limit, soft_time_limit: hard and soft limits on one run, in seconds.
        ignore_result: keep no outcome.
        result_ttl: seconds the outcome is kept.
        rate_limit: cluster-wide, e.g. ``"10/s"``, ``"100/m"``.
        bind: pass the task's request as the first argument (``self``).
    """

    queue: str | None = None
    priority: int | None = None
    retries: int = 3
    retry_backoff: bool | float = False  # True: 1 s, 2 s, 4 s...; 5: 5 s, 10 s, 20 s...
    retry_backoff_max: float = 600.0
    retry_jitter: bool = True
    autoretry_for: tuple[type[BaseException], ...] = ()
    retry_kwargs: Mapping[str, Any] = field(default_factory=dict)
    default_retry_delay: float = DEFAULT_RETRY_DELAY
    time_limit: float | None = None
    soft_time_limit: float | None = None
    ignore_result: bool | None = None
    result_ttl: float | None = None
    rate_limit: str | None = None
    bind: bool = False

    def __post_init__(self) -> None:
        backoff = self.retry_backoff
        if not isinstance(backoff, int | float) or backoff < 0 or backoff != backoff:
            raise ValueError(
                f"retry_backoff must be True, False or the first delay in seconds, not {backoff!r}"
            )
        _retries("retries", self.retries)
        delay = self.default_retry_delay
        if isinstance(delay, bool) or not isinstance(delay, int | float) or not delay >= 0:
            raise ValueError(f"default_retry_delay must be seconds >= 0, not {delay!r}")
        unknown = sorted(set(self.retry_kwargs) - {"countdown", "max_retries"})
        if unknown:
            raise TypeError(
                f"retry_kwargs {unknown}: Celeriac's automatic retries take countdown and "
                "max_retries (a retry runs with the same arguments and options)"
            )
        if "max_retries" in self.retry_kwargs:
            _retries("retry_kwargs['max_retries']", self.retry_kwargs["max_retries"])
        rate_limit("rate_limit", self.rate_limit)

    def ceiling(self) -> int:
        """The retries the scheduler is told: the most any retry of the task may reach."""
        auto = self.retry_kwargs.get("max_retries", self.retries)
        return max(self.retries, UNLIMITED if auto is None else auto)

    def retry_policy(self) -> RetryPolicy:
        """What the task's call decides about retries in the worker."""
        ceiling = self.ceiling()
        auto = self.retry_kwargs.get("max_retries", self.retries)
        auto = UNLIMITED if auto is None else auto
        return RetryPolicy(
            default_delay=float(self.default_retry_delay),
            ceiling=ceiling,
            limit=self.retries if self.retries < ceiling else None,
            auto_limit=auto if auto < ceiling else None,
            auto_countdown=self.retry_kwargs.get("countdown"),
            backoff=bool(self.retry_backoff),
        )


def task_options(given: Mapping[str, Any]) -> TaskOptions:
    """``@app.task``'s keywords as :class:`TaskOptions`, Celery's names read too.

    ``max_retries`` is ``retries`` (``None``: no limit); ``retry_kwargs``'
    ``max_retries`` is the task's when the task gives none; ``acks_late`` and
    ``reject_on_worker_lost`` are accepted (see
    :func:`~celeriac.tasks.config.redelivery`).

    Raises:
        TypeError: an option Celeriac does not take, saying what to do instead.
    """
    options = dict(given)
    for name in ("acks_late", "reject_on_worker_lost"):
        if name in options:
            redelivery(name, options.pop(name))
    if "max_retries" in options:
        if "retries" in options:
            raise TypeError("give max_retries (Celery's name) or retries, not both")
        options["retries"] = options.pop("max_retries")
    kwargs = options.get("retry_kwargs") or {}
    if "retries" not in options and isinstance(kwargs, Mapping) and "max_retries" in kwargs:
        options["retries"] = kwargs["max_retries"]
    if options.get("retries", 0) is None:
        options["retries"] = UNLIMITED
    unknown = sorted(set(options) - set(TaskOptions.__dataclass_fields__))
    if unknown:
        raise TypeError(_unknown("@app.task", unknown, ABSENT_TASK_OPTIONS, TASK_OPTION_NAMES))
    return TaskOptions(**options)


#: Every name ``@app.task`` takes.
TASK_OPTION_NAMES = (
    *TaskOptions.__dataclass_fields__,
    "name",
    "max_retries",
    "acks_late",
    "reject_on_worker_lost",
)

#: Every keyword ``apply_async`` takes besides ``args`` and ``kwargs``.
CALL_OPTION_NAMES = (
    "task_id",
    "countdown",
    "eta",
    "expires",
    "queue",
    "priority",
    "retries",
    "link",
    "link_error",
)


def refuse_call_options(where: str, unknown: Mapping[str, Any]) -> TypeError:
    """The ``TypeError`` for ``apply_async`` keywords Celeriac does not take.

    Parameters:
        where: the call, for the message (``"add.apply_async"``).
        unknown: the keywords given.
    """
    return TypeError(_unknown(where, sorted(unknown), ABSENT_CALL_OPTIONS, CALL_OPTION_NAMES))


def _unknown(where: str, names: list[str], absent: dict[str, str], known: tuple[str, ...]) -> str:
    reasons = [f"{n!r} ({absent[n]})" if n in absent else repr(n) for n in names]
    return (
        f"{where}: unknown option(s) {', '.join(reasons)}; "
        f"Celeriac takes: {', '.join(sorted(set(known)))}"
    )


def _retries(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a count >= 0 (or None: no limit), not {value!r}")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a task's call turns a retry into :class:`~celeriac.errors.Retry`, in the worker.

    The scheduler runs the task again while ``RunOptions.retries`` (the
    ``ceiling``) allows; a lower limit for one retry (``self.retry(max_retries=)``
    or ``retry_kwargs``) is checked here, where the task knows how many times
    it was retried, as Celery checks it.

    Parameters:
        default_delay: the wait of a retry that gives no ``countdown`` or ``eta``.
        ceiling: what the scheduler counts to (:meth:`TaskOptions.ceiling`).
        limit: a lower limit for ``self.retry()`` (the task's ``max_retries``
            when ``retry_kwargs`` gives automatic retries more), if any.
        auto_limit: a lower limit for automatic retries (``retry_kwargs``), if any.
        auto_countdown: the wait of an automatic retry (``retry_kwargs``), if any.
        backoff: automatic retries wait as the scheduler's back-off says.
    """

    default_delay: float = DEFAULT_RETRY_DELAY
    ceiling: int = 3
    limit: int | None = None
    auto_limit: int | None = None
    auto_countdown: float | None = None
    backoff: bool = False

    def explicit(
        self,
        request: TaskRequest,
        exc: BaseException | None,
        countdown: float | None,
        eta: datetime | float | None,
        max_retries: int | None,
    ) -> Retry:
        """``self.retry(exc=, countdown=, eta=, max_retries=)``: the ``Retry`` to raise.

        Raises:
            BaseException: ``exc`` (or ``MaxRetriesExceededError``) when
                ``max_retries`` is reached: the task fails now.
            ValueError: ``max_retries`` above the task's: the scheduler would
                stop at the task's.
        """
        if max_retries is not None:
            if max_retries > self.ceiling:
                raise ValueError(
                    f"self.retry(max_retries={max_retries}) is above the task's max_retries "
                    f"({self.ceiling}), which the scheduler counts to: raise the task's"
                )
        else:
            max_retries = self.limit
        if max_retries is not None:
            self._check(request, max_retries, exc)
        if eta is not None:
            countdown = max(0.0, _timestamp(eta) - time.time())
        elif countdown is None:
            countdown = self.default_delay
        return Retry(exc, countdown)

    def automatic(self, request: TaskRequest, exc: BaseException) -> Retry:
        """An ``autoretry_for`` exception: the ``Retry`` to raise (or ``exc``, past its limit)."""
        if self.auto_limit is not None:
            self._check(request, self.auto_limit, exc)
        if self.backoff:
            return Retry(exc)  # the scheduler's back-off says how long
        countdown = self.auto_countdown
        return Retry(exc, self.default_delay if countdown is None else countdown)

    @staticmethod
    def _check(request: TaskRequest, limit: int, exc: BaseException | None) -> None:
        if request.retries >= limit:
            raise exc or MaxRetriesExceededError(
                f"task {request.name!r} ({request.id}) asked to retry past max_retries={limit}"
            )


DEFAULT_RETRY = RetryPolicy()


def _timestamp(when: datetime | float) -> float:
    if isinstance(when, datetime):
        return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
    return float(when)


__all__ = [
    "ABSENT_CALL_OPTIONS",
    "ABSENT_TASK_OPTIONS",
    "CALL_OPTION_NAMES",
    "DEFAULT_RETRY",
    "DEFAULT_RETRY_DELAY",
    "TASK_OPTION_NAMES",
    "UNLIMITED",
    "RetryPolicy",
    "TaskOptions",
    "refuse_call_options",
    "task_options",
]
