"""What travels to a worker in place of a task's function: its call, errbacks and maps.

:class:`TaskCall` is a task's own call (``bind``, ``autoretry_for``, and
``self.retry()`` as Celery means it); the canvas's wrap it: ``OnFailure``
runs ``link_error`` errbacks, ``MapCall`` a map or a chunk.  These objects
travel inside a :class:`~celeriac.client.engine.Submission` in place of the
task's function.  They live in an importable module
so they pickle by reference: only the wrapped call and its arguments travel.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import cloudpickle

from celeriac.context import TaskRequest, current_request
from celeriac.errors import MaxRetriesExceededError, Retry
from celeriac.tasks.task_options import DEFAULT_RETRY, RetryPolicy

if TYPE_CHECKING:
    from celeriac.tasks.app import Task

log = logging.getLogger("celeriac.canvas")


class TaskCall:
    """A task's own call, what travels to the worker: its function, ``bind``, ``autoretry_for``.

    Its :class:`~celeriac.tasks.task_options.RetryPolicy` turns a retry into
    :class:`~celeriac.errors.Retry` where the task runs: the wait when none
    is given (``default_retry_delay``), a lower limit for one retry.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        bind: bool,
        autoretry_for: tuple[type[BaseException], ...],
        retry: RetryPolicy = DEFAULT_RETRY,  # absent from a call pickled by 0.1.0
    ) -> None:
        self.fn = fn
        self.bind = bind
        self.autoretry_for = autoretry_for
        self.retry = retry
        self.__name__ = getattr(fn, "__name__", "task")

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """By name when the worker can import the task's module; else by value."""
        module_name = getattr(self.fn, "__module__", None) or "__main__"
        if (
            module_name != "__main__"
            and module_name not in cloudpickle.list_registry_pickle_by_value()
        ):
            module = sys.modules.get(module_name)
            target = _lookup(module, self.fn.__qualname__) if module else None
            call = getattr(target, "_call", None)
            if isinstance(call, TaskCall) and call.fn is self.fn:
                return task_call_by_name, (module_name, self.fn.__qualname__)
        return TaskCall, (self.fn, self.bind, self.autoretry_for, self.retry)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the function (a bound one with its ``self``); an ``autoretry_for`` error retries."""
        try:
            if self.bind:
                request = current_request()
                return self.fn(BoundTask(self.__name__, request, self.retry), *args, **kwargs)
            return self.fn(*args, **kwargs)
        except Retry:
            raise
        except self.autoretry_for as exc:
            request = current_request() or TaskRequest("local", self.__name__, 0)
            raise self.retry.automatic(request, exc) from exc


def _lookup(module: Any, qualname: str) -> Any:
    target = module
    for part in qualname.split("."):
        target = getattr(target, part, None)
    return target


def task_call_by_name(module_name: str, qualname: str) -> TaskCall:
    """On the worker: the task's call as its module defines it (``-A module`` imports it)."""
    call = getattr(_lookup(importlib.import_module(module_name), qualname), "_call", None)
    if not isinstance(call, TaskCall):
        raise LookupError(f"{module_name}.{qualname} is not a celeriac task on this worker")
    return call


class BoundTask:
    """``self`` of a ``bind=True`` task: its request, ``retry``, and Celery's retry attributes."""

    def __init__(
        self, name: str, request: TaskRequest | None, policy: RetryPolicy = DEFAULT_RETRY
    ) -> None:
        self.name = name
        self.request = request or TaskRequest("local", name, 0)
        self._policy = policy

    @property
    def max_retries(self) -> int:
        """The most retries the scheduler allows this task."""
        return self._policy.ceiling

    @property
    def default_retry_delay(self) -> float:
        """Seconds a retry without a countdown waits."""
        return self._policy.default_delay

    def retry(
        self,
        exc: BaseException | None = None,
        countdown: float | None = None,
        *,
        eta: datetime | float | None = None,
        max_retries: int | None = None,
        args: Any = None,
        kwargs: Any = None,
        throw: bool = True,
        **options: Any,
    ) -> Retry:
        """Raise :class:`Retry`: the scheduler runs the task again if retries are left.

        Without ``countdown`` or ``eta`` the retry waits ``default_retry_delay``
        (3 minutes unless the task says otherwise), as in Celery.
        ``max_retries`` lowers the limit for this retry: at it, the task
        fails now with ``exc`` (or ``MaxRetriesExceededError``).

        Parameters:
            exc: what the task fails with if no retries are left.
            countdown: seconds to wait before the retry.
            eta: the moment before which the retry does not start.
            max_retries: a lower limit for this retry (not above the task's).
            args, kwargs, throw, options: Celery's; Celeriac refuses them
                (``TypeError``): a retry runs the same call with the same options.

        Raises:
            Retry: always; ``raise self.retry(...)`` reads as Celery's.
        """
        refused = [
            name for name, value in (("args", args), ("kwargs", kwargs)) if value is not None
        ]
        refused += [] if throw else ["throw=False"]
        if refused or options:
            names = ", ".join([*refused, *sorted(options)])
            raise TypeError(
                f"self.retry({names}): Celeriac retries the same call with the same options "
                "(it takes exc, countdown, eta and max_retries), and the retry is the exception"
            )
        if exc is not None and not isinstance(exc, BaseException):
            raise TypeError(f"self.retry(exc=...) takes an exception, not {exc!r}")
        raise self._policy.explicit(self.request, exc, countdown, eta, max_retries)


@dataclass(frozen=True, slots=True)
class Errback:
    """One ``link_error`` callback, as the worker calls it.

    Parameters:
        name: the errback task's name (for the log when it raises).
        call: its function, as its task sends it (``bind`` and all).
        args, kwargs: its own arguments.
        immutable: call it with only its own arguments, not the failure's.
    """

    name: str
    call: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    immutable: bool = False

    @classmethod
    def of(
        cls, task: Task[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any], immutable: bool
    ) -> Errback:
        """``task``'s call with these arguments, once :func:`check_errback` let them through.

        Parameters:
            task: the errback's task.
            args, kwargs: its own arguments.
            immutable: call it with only these.
        """
        call = task.submission((), {}, task_id=task.name).fn  # the call as the task sends it
        return cls(task.name, call, args, kwargs, immutable)

    def run(self, request: TaskRequest, exc: BaseException, text: str) -> None:
        """Call it with ``(request, exc, traceback)`` first, as Celery's current errbacks.

        Parameters:
            request: the failed task's request (``request.id`` is its id).
            exc: the exception it failed with.
            text: the traceback, formatted.
        """
        args = self.args if self.immutable else (request, exc, text, *self.args)
        try:
            self.call(*args, **self.kwargs)
        except Exception:  # Celery too logs an errback's failure and goes on
            log.exception("errback %s raised", self.name)


def check_errback(
    task: Task[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any], immutable: bool
) -> None:
    """``TypeError`` now if the errback cannot take ``(request, exc, traceback, *args)``.

    Celery tells an old-style errback (given only the task id) from a current
    one by its arity; Celeriac calls every errback the current way, so one
    that cannot take it is refused when it is linked, not when a task fails.

    Parameters:
        task: the errback's task.
        args, kwargs: its own arguments.
        immutable: it is called with only these.
    """
    try:
        params = inspect.signature(task.fn)
    except (TypeError, ValueError):
        return  # no signature to read (a builtin): nothing to check
    bound = (None,) if task.options.bind else ()
    given = args if immutable else (None, None, None, *args)
    try:
        params.bind(*bound, *given, **kwargs)
    except TypeError as exc:
        raise TypeError(
            f"errback {task.name} is called as {task.name}(request, exc, traceback, "
            "*its_args), Celery's current convention (the failed task's id is request.id), "
            f"which it cannot take: {exc}"
        ) from None


class OnFailure:
    """A task's call that runs its errbacks, in the worker, when it fails for good.

    The scheduler has no "run this when that fails" edge: a dependent of a
    failed task fails with it without running.  So the errbacks run where
    the failure happens, right after it, as Celery runs its current-style
    errbacks in the worker.  A failure is final unless the scheduler will
    retry it: a ``Retry`` (or, for ``retry_any``, any exception) while
    retries are left.

    Parameters:
        call: the task's own call.
        errbacks: what runs on a final failure, in order.
        retries: the task's retries (as sent: ``RunOptions.retries``).
        retry_any: the scheduler retries any exception, not only ``Retry``.
    """

    __slots__ = ("__name__", "call", "errbacks", "retries", "retry_any")

    def __init__(
        self,
        call: Callable[..., Any],
        errbacks: Sequence[Errback],
        retries: int,
        retry_any: bool = False,
    ) -> None:
        self.call = call
        self.errbacks = tuple(errbacks)
        self.retries = retries
        self.retry_any = retry_any
        self.__name__ = getattr(call, "__name__", "task")

    def __reduce__(self) -> tuple[Any, ...]:
        return OnFailure, (self.call, self.errbacks, self.retries, self.retry_any)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the task; if it fails for good, run the errbacks, then raise."""
        try:
            return self.call(*args, **kwargs)
        except Exception as exc:
            request = current_request() or TaskRequest("local", self.__name__, 0)
            final = self.final_error(exc, request.retries)
            if final is not None:
                if final.__traceback__ is None:  # made here, never raised: where the retry was
                    final = final.with_traceback(exc.__traceback__)
                text = "".join(traceback.format_exception(final))
                for errback in self.errbacks:
                    errback.run(request, final, text)
            raise

    def final_error(self, exc: BaseException, retried: int) -> BaseException | None:
        """The error the task ends with, or ``None`` if the scheduler will run it again.

        Mirrors what the worker reports: a ``Retry`` with no retries left ends
        as its own exception, or ``MaxRetriesExceededError``.

        Parameters:
            exc: what the call raised.
            retried: how many times the task was retried before this run.
        """
        retryable = isinstance(exc, Retry) or self.retry_any
        if retryable and retried < self.retries:
            return None
        if isinstance(exc, Retry):
            return exc.exc or MaxRetriesExceededError(
                f"task {self.__name__!r} asked to retry, but it has no retries left"
            )
        return exc


class MapCall:
    """``xmap``/``xstarmap``: one task that calls a task's function on every item, in turn.

    Parameters:
        call: the task's call.
        star: unpack each item as the arguments (``starmap``).
    """

    __slots__ = ("__name__", "call", "star")

    def __init__(self, call: Callable[..., Any], star: bool) -> None:
        self.call = call
        self.star = star
        self.__name__ = getattr(call, "__name__", "task")

    def __reduce__(self) -> tuple[Any, ...]:
        return MapCall, (self.call, self.star)

    def __call__(self, items: Sequence[Any]) -> list[Any]:
        """The call's value for each item, in order."""
        if self.star:
            return [self.call(*item) for item in items]
        return [self.call(item) for item in items]
