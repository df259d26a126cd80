"""Retries as Celery means them, decided where the task runs: ``default_retry_delay``,
``max_retries``, ``retry_kwargs``; unknown options refused at the call (no scheduler)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import cloudpickle
import pytest

from celeriac import App, MaxRetriesExceededError, Retry
from celeriac.context import TaskRequest, set_request
from celeriac.tasks.callables import TaskCall
from celeriac.tasks.task_options import DEFAULT_RETRY, UNLIMITED, RetryPolicy, task_options


def add(a: int, b: int) -> int:
    return a + b


def asks_to_retry(self: Any, **retry: Any) -> None:
    raise self.retry(**retry)


def fails(exc: BaseException) -> None:
    raise exc


@pytest.fixture
def app(make_app: Callable[..., App]) -> App:
    return make_app()


@pytest.fixture
def attempt() -> Iterator[Callable[[int], None]]:
    """``attempt(n)``: run as the worker runs the n-th retry of a task (its request)."""

    def set_attempt(retries: int) -> None:
        set_request(TaskRequest("t-1", "t", retries))

    yield set_attempt
    set_request(None)


def raised(call: Callable[..., Any], *args: Any, **kwargs: Any) -> BaseException:
    with pytest.raises(BaseException) as info:
        call(*args, **kwargs)
    return info.value


# -- the wait of a retry -----------------------------------------------------------------


def test_a_retry_without_countdown_waits_three_minutes_as_in_celery(
    app: App, attempt: Callable[[int], None]
) -> None:
    task = app.task(asks_to_retry, bind=True)
    assert task.default_retry_delay == 180.0
    attempt(0)
    retry = raised(task._call)
    assert isinstance(retry, Retry) and retry.countdown == 180.0
    assert raised(task._call, countdown=2).countdown == 2  # type: ignore[attr-defined]
    quick = app.task(asks_to_retry, bind=True, default_retry_delay=0.5)
    assert raised(quick._call).countdown == 0.5  # type: ignore[attr-defined]


def test_an_eta_is_a_countdown_from_now(attempt: Callable[[int], None]) -> None:
    attempt(0)
    later = time.time() + 60
    retry = DEFAULT_RETRY.explicit(TaskRequest("t", "t", 0), None, None, later, None)
    assert retry.countdown is not None and 59 <= retry.countdown <= 60
    naive = datetime.now(UTC).replace(tzinfo=None)  # a naive datetime is UTC
    retry = DEFAULT_RETRY.explicit(TaskRequest("t", "t", 0), None, None, naive, None)
    assert retry.countdown is not None and retry.countdown < 1


@pytest.mark.parametrize(
    ("options", "countdown"),
    [
        ({}, 180.0),  # Celery: autoretry without back-off waits default_retry_delay
        ({"default_retry_delay": 1}, 1.0),
        ({"retry_kwargs": {"countdown": 7}}, 7.0),
        ({"retry_backoff": True}, None),  # the scheduler's back-off decides
        ({"retry_backoff": 5, "retry_kwargs": {"countdown": 7}}, None),
    ],
)
def test_automatic_retries_wait_as_in_celery(
    app: App, attempt: Callable[[int], None], options: dict[str, Any], countdown: float | None
) -> None:
    task = app.task(fails, autoretry_for=(ConnectionError,), **options)
    attempt(0)
    retry = raised(task._call, ConnectionError("down"))
    assert isinstance(retry, Retry) and retry.countdown == countdown
    assert isinstance(retry.exc, ConnectionError)


# -- how many retries --------------------------------------------------------------------


def test_max_retries_is_celerys_name_for_retries(app: App, sending: Any) -> None:
    task = app.task(add, name="add", max_retries=7)
    task.delay(1, 2)
    assert task.max_retries == 7 and sending.sent[-1].options.retries == 7
    app.task(add, name="forever", max_retries=None).delay(1, 2)
    assert sending.sent[-1].options.retries == UNLIMITED  # Celery's None: no limit
    app.task(add, name="kw", retry_kwargs={"max_retries": 2}).delay(1, 2)
    assert sending.sent[-1].options.retries == 2  # the task's, when it gives none
    with pytest.raises(TypeError, match="give max_retries \\(Celery's name\\) or retries"):
        app.task(add, retries=1, max_retries=2)


def test_a_lower_limit_for_one_retry_fails_the_task_there(
    app: App, attempt: Callable[[int], None]
) -> None:
    task = app.task(asks_to_retry, bind=True, max_retries=5)
    attempt(1)
    assert isinstance(raised(task._call, max_retries=2), Retry)  # 1 retry so far, 2 allowed
    attempt(2)
    failure = raised(task._call, max_retries=2, exc=KeyError("gone"))
    assert isinstance(failure, KeyError)  # no Retry: the task fails now, with exc
    assert isinstance(raised(task._call, max_retries=2), MaxRetriesExceededError)
    with pytest.raises(ValueError, match="above the task's max_retries \\(5\\)"):
        task._call(max_retries=9)


def test_retry_kwargs_limit_automatic_retries_apart_from_explicit_ones(
    app: App, sending: Any, attempt: Callable[[int], None]
) -> None:
    task = app.task(fails, autoretry_for=(OSError,), max_retries=1, retry_kwargs={"max_retries": 4})
    task.delay(OSError())
    assert sending.sent[-1].options.retries == 4  # the scheduler counts to the larger
    attempt(3)
    assert isinstance(raised(task._call, OSError()), Retry)  # at 4 the scheduler fails it
    bound = app.task(asks_to_retry, bind=True, max_retries=1, retry_kwargs={"max_retries": 4})
    attempt(1)  # self.retry() keeps the task's own max_retries
    assert isinstance(raised(bound._call), MaxRetriesExceededError)
    low = app.task(fails, autoretry_for=(OSError,), max_retries=4, retry_kwargs={"max_retries": 1})
    attempt(1)
    assert isinstance(raised(low._call, OSError("stop")), OSError)


def test_retry_refuses_what_it_cannot_honour(app: App, attempt: Callable[[int], None]) -> None:
    task = app.task(asks_to_retry, bind=True)
    attempt(0)
    for retry in ({"args": (1,)}, {"kwargs": {}}, {"throw": False}, {"queue": "q"}):
        with pytest.raises(TypeError, match="retries the same call with the same options"):
            task._call(**retry)
    with pytest.raises(TypeError, match="takes an exception"):
        task._call(exc="not an exception")


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"retry_kwargs": {"eta": 1}}, "retry_kwargs \\['eta'\\]"),
        ({"default_retry_delay": -1}, "default_retry_delay must be seconds >= 0"),
        ({"max_retries": -1}, "retries must be a count >= 0"),
        ({"rate_limit": "fast"}, "rate limit 'fast'"),
    ],
)
def test_bad_retry_options_fail_at_the_decorator(
    app: App, options: dict[str, Any], error: str
) -> None:
    with pytest.raises((TypeError, ValueError), match=error):
        app.task(add, **options)


# -- what travels ------------------------------------------------------------------------


def test_the_policy_travels_with_the_call_and_old_calls_still_load() -> None:
    policy = task_options({"default_retry_delay": 2, "max_retries": 4}).retry_policy()
    call = TaskCall(add, False, (), policy)
    copy = cloudpickle.loads(cloudpickle.dumps(call))
    assert copy.retry == RetryPolicy(default_delay=2.0, ceiling=4) and copy(1, 2) == 3
    assert TaskCall(add, False, ()).retry is DEFAULT_RETRY  # a call pickled by 0.1.0
    from celeriac.tasks.app import _task_call_by_name, _TaskCall

    assert _TaskCall is TaskCall and callable(_task_call_by_name)  # the old paths load


def test_a_bound_task_called_here_retries_as_it_would_on_a_worker(app: App) -> None:
    task = app.task(asks_to_retry, bind=True, default_retry_delay=3)
    retry = raised(task)
    assert isinstance(retry, Retry) and retry.countdown == 3


# -- unknown options ---------------------------------------------------------------------


def test_unknown_task_options_say_why(app: App) -> None:
    with pytest.raises(TypeError, match="'track_started' \\(STARTED is always reported\\)"):
        app.task(add, track_started=True)
    with pytest.raises(TypeError, match="unknown option\\(s\\) 'colour'; Celeriac takes: "):
        app.task(add, colour="red")


def test_unknown_apply_async_keywords_raise_at_the_call(app: App, sending: Any) -> None:
    task = app.task(add, name="add")
    with pytest.raises(TypeError, match="'routing_key' \\(there are no exchanges; route with q"):
        task.apply_async((1, 2), routing_key="x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"add\.apply_async: unknown option\(s\) 'pure'"):
        task.apply_async((1, 2), pure=False)  # type: ignore[arg-type]
    assert sending.sent == []  # nothing went out


def test_apply_async_takes_link_and_link_error_as_a_signature_does(app: App, sending: Any) -> None:
    task = app.task(add, name="add")

    def on_error(request: Any, exc: BaseException, traceback: str) -> None: ...

    result = task.apply_async((1, 2), link=task.s(10), link_error=app.task(on_error).s())
    first, callback = sending.sent
    assert result.id == first.key and callback.args[0].key == first.key
    assert type(first.fn).__name__ == "OnFailure"  # the errback runs with the task's call
