"""The Celery-style front door against a fake engine: what each call hands to ``Engine``.

No scheduler, no sockets: the app's connection is replaced by :class:`FakeEngine`,
which records every call the way dramatiq's stub broker records messages.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from celeriac import App, AsyncResult, chain, chord, every, group
from celeriac.client.engine import Engine, Submission
from celeriac.schedules import Schedule
from celeriac.wire.refs import TaskRef


class FakeEngine:
    """An :class:`Engine` that accepts everything at once and remembers what it got."""

    def __init__(self) -> None:
        self.enqueued: list[tuple[list[Submission], dict[str, Any]]] = []
        self.calls: list[tuple[Any, ...]] = []
        self.periodic: list[tuple[Submission, Schedule, dict[str, Any]]] = []
        self.states: dict[str, str] = {}
        self._counter = itertools.count()

    def new_key(self, name: str) -> str:
        return f"{name}-{next(self._counter)}"

    def enqueue(
        self,
        submissions: Sequence[Submission],
        *,
        timeout: float | None = None,
        hold: bool = False,
    ) -> list[Any]:
        self.enqueued.append((list(submissions), {"timeout": timeout, "hold": hold}))
        return [("held", s.key) for s in submissions] if hold else []

    def future_for(self, key: str) -> Any:
        return ("wanted", key)

    def status(self, keys: list[str], timeout: float | None = None) -> dict[str, str]:
        return {key: self.states.get(key, "UNKNOWN") for key in keys}

    def revoke(self, key: str, *, terminate: bool = False) -> None:
        self.calls.append(("revoke", key, terminate))

    def forget(self, key: str) -> None:
        self.calls.append(("forget", key))

    def set_periodic(
        self,
        submission: Submission,
        schedule: Schedule,
        *,
        misfire: str = "skip",
        grace: float = 1.0,
        allow_overlap: bool = False,
    ) -> None:
        options = {"misfire": misfire, "grace": grace, "allow_overlap": allow_overlap}
        self.periodic.append((submission, schedule, options))

    def close(self) -> None:
        self.calls.append(("close",))


def _conforms(engine: FakeEngine) -> Engine:
    return engine  # mypy: the fake is an Engine


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def app(engine: FakeEngine) -> App:
    app = App("tcp://127.0.0.1:1", timeout=7.0, result_ttl=100.0)
    app._client = engine  # type: ignore[assignment]  # the seam: anything with Engine's methods
    return app


def add(a: int, b: int) -> int:
    return a + b


def refs(*values: Any) -> list[str]:
    assert all(isinstance(v, TaskRef) for v in values)
    return [v.key for v in values]


def only(engine: FakeEngine) -> tuple[list[Submission], dict[str, Any]]:
    (call,) = engine.enqueued
    return call


def test_delay_enqueues_one_submission_with_the_tasks_options(app: App, engine: FakeEngine) -> None:
    task = app.task(add, name="add", retries=5, queue="math", time_limit=3, rate_limit="10/s")
    result = task.delay(1, b=2)
    (submission,), options = only(engine)
    assert options == {"timeout": 7.0, "hold": True}
    assert submission.key == result.id == "add-0" and submission.name == "add"
    assert (submission.args, submission.kwargs) == ((1,), {"b": 2})
    options = submission.options
    assert (options.queue, options.priority, options.retries) == ("math", 0, 5)
    assert options.retry_on_error is False  # Celery: only autoretry_for or self.retry
    assert (options.result_ttl, options.backoff_max) == (100.0, 600.0)
    assert (options.time_limit, options.rate_limit) == (3, "10/s")
    assert submission.eta is None and submission.expires is None
    assert submission.fn(1, 2) == 3  # what travels: the task's call wrapper
    assert result._held == ("held", "add-0")  # the outcome is pushed to it


@pytest.mark.parametrize(("given", "sent"), [(False, 0.0), (True, 1.0), (5, 5.0), (0.5, 0.5)])
def test_retry_backoff_number_is_the_first_delay_not_true(
    app: App, engine: FakeEngine, given: bool | float, sent: float
) -> None:
    app.task(add, retry_backoff=given).delay(1, 2)
    (submission,), _ = only(engine)
    assert submission.options.retry_backoff == sent


@pytest.mark.parametrize("bad", [-1, "5", float("nan")])
def test_a_bad_retry_backoff_is_refused_at_the_decorator(app: App, bad: object) -> None:
    with pytest.raises(ValueError, match="retry_backoff must be"):
        app.task(add, retry_backoff=bad)


def test_an_ignored_result_is_not_held(app: App, engine: FakeEngine) -> None:
    result = app.task(add, ignore_result=True).delay(1, 2)
    (submission,), options = only(engine)
    assert submission.options.ignore_result and options["hold"] is False
    assert result._held is None


def test_apply_async_overrides_and_moments(app: App, engine: FakeEngine) -> None:
    task = app.task(add, name="add", priority=1)
    before = time.time()
    task.apply_async((1, 2), task_id="mine", countdown=10, expires=30, queue="q", priority=4)
    task.apply_async((1, 2), eta=datetime(2030, 1, 1), expires=datetime(2031, 1, 1, tzinfo=UTC))
    (first,), _ = engine.enqueued[0]
    (second,), _ = engine.enqueued[1]
    assert (first.key, first.options.queue, first.options.priority) == ("mine", "q", 4)
    assert first.eta is not None and before + 10 <= first.eta <= time.time() + 10
    assert first.expires is not None and before + 30 <= first.expires <= time.time() + 30
    assert second.eta == datetime(2030, 1, 1, tzinfo=UTC).timestamp()  # naive is UTC
    assert second.expires == datetime(2031, 1, 1, tzinfo=UTC).timestamp()
    assert second.options is task.run_options()  # no override: the task's own, unchanged
    assert second.options.priority == 1


def test_a_chain_is_one_enqueue_each_step_fed_the_previous_result(
    app: App, engine: FakeEngine
) -> None:
    task = app.task(add, name="add")
    result = chain(task.s(1, 2), task.s(3), task.si(4, 5)).apply_async()
    (a, b, c), options = only(engine)
    assert options == {"timeout": 7.0, "hold": False}
    assert refs(b.args[0]) == [a.key] and b.args[1:] == (3,)
    assert c.args == (4, 5)  # immutable: nothing prepended
    assert result.id == c.key


def test_a_group_and_a_chord(app: App, engine: FakeEngine) -> None:
    task = app.task(add, name="add")
    results = group(task.s(i, i) for i in range(3)).apply_async()
    header, _ = engine.enqueued[0]
    assert [r.id for r in results] == [s.key for s in header] and len(header) == 3
    final = chord([task.s(1, 1), task.s(2, 2)], task.s(10)).apply_async()
    *parts, body = engine.enqueued[1][0]
    assert refs(*body.args[0]) == [p.key for p in parts] and body.args[1:] == (10,)
    assert final.id == body.key


def test_an_empty_group_sends_nothing(app: App, engine: FakeEngine) -> None:
    assert len(group([]).apply_async()) == 0 and engine.enqueued == []


def test_a_periodic_task_is_a_submission_keyed_by_the_jobs_name(
    app: App, engine: FakeEngine
) -> None:
    task = app.task(add, name="add", queue="beat")
    schedule = every(seconds=5)
    name = app.add_periodic_task(schedule, task.s(1, 2), "nightly", misfire="catch_up", grace=3)
    ((submission, got_schedule, options),) = engine.periodic
    assert name == submission.key == "nightly" and submission.name == "add"
    assert submission.args == (1, 2) and submission.options.queue == "beat"
    assert got_schedule is schedule
    assert options == {"misfire": "catch_up", "grace": 3, "allow_overlap": False}
    assert engine.enqueued == []


def test_async_result_asks_the_engine(app: App, engine: FakeEngine) -> None:
    result = AsyncResult("t1", app=app)
    engine.states["t1"] = "SUCCESS"
    assert result.status == "SUCCESS" and result.ready() and result.successful()
    result.revoke(terminate=True)
    result.forget()
    assert engine.calls == [("revoke", "t1", True), ("forget", "t1")]
    assert result.as_future() == ("wanted", "t1")  # not held here: asked for by id


def test_group_result_counts_completed_through_one_status_call(
    app: App, engine: FakeEngine
) -> None:
    results = group(app.task(add).s(i, i) for i in range(3)).apply_async()
    engine.states.update({results.results[0].id: "SUCCESS", results.results[1].id: "FAILURE"})
    assert results.completed_count() == 1


def test_run_options_are_built_once_and_follow_the_apps_result_ttl(app: App) -> None:
    task = app.task(add)
    assert task.run_options() is task.run_options()
    app.result_ttl = 5.0
    assert task.run_options().result_ttl == 5.0
    assert app.task(add, result_ttl=9).run_options().result_ttl == 9


def test_closing_the_app_closes_the_engine(app: App, engine: FakeEngine) -> None:
    app.close()
    assert engine.calls == [("close",)]
