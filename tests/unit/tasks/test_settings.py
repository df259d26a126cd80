"""Celery's task settings on ``App``: ``task_routes``, defaults, limits (no scheduler)."""

from __future__ import annotations

import re
import sys
import types
import warnings
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from celeriac import App
from celeriac.tasks.config import SETTINGS
from celeriac.tasks.routes import Route, Routes


def add(a: int, b: int) -> int:
    return a + b


def sent(app: App, sending: Any, name: str, *args: Any, **options: Any) -> Any:
    """Send ``add`` registered as ``name`` (with ``options`` on the call); what went out."""
    task = app.tasks.get(name) or app.task(add, name=name)
    task.apply_async(args or (1, 2), **options)
    return sending.sent[-1].options


ROUTES = {
    "feeds.fetch": {"queue": "feeds", "priority": 7},
    "feeds.*": "feeds-other",  # a glob, and a bare queue name
    re.compile(r"(video|image)\.tasks\..*"): {"queue": "media"},
    "mail.send": {"queue": "mail", "routing_key": "mail.send"},  # AMQP key: dropped
}


@pytest.fixture
def routed(make_app: Callable[..., App]) -> App:
    with pytest.warns(UserWarning, match="route key 'routing_key' ignored: Celeriac has no exch"):
        return make_app(task_routes=ROUTES, task_default_queue="fallback")


@pytest.mark.parametrize(
    ("name", "queue", "priority"),
    [
        ("feeds.fetch", "feeds", 7),  # an exact name wins over the glob
        ("feeds.parse", "feeds-other", 0),
        ("image.tasks.resize", "media", 0),
        ("mail.send", "mail", 0),
        ("other.task", "fallback", 0),  # no route: task_default_queue
    ],
)
def test_task_routes_by_name_glob_and_regex(
    routed: App, sending: Any, name: str, queue: str, priority: int
) -> None:
    options = sent(routed, sending, name)
    assert (options.queue, options.priority) == (queue, priority)


def test_the_call_then_the_task_then_the_route_then_the_default(routed: App, sending: Any) -> None:
    own = routed.task(add, name="feeds.fetch", queue="own", priority=1)
    own.delay(1, 2)
    assert (sending.sent[-1].options.queue, sending.sent[-1].options.priority) == ("own", 1)
    own.apply_async((1, 2), queue="call", priority=9)
    assert (sending.sent[-1].options.queue, sending.sent[-1].options.priority) == ("call", 9)
    assert sent(routed, sending, "feeds.parse", queue="call").queue == "call"


def test_router_functions_are_asked_at_each_call_in_order(
    make_app: Callable[..., App], sending: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[tuple[Any, ...]] = []

    def by_argument(name: str, args: Any, kwargs: Any, options: Any, task: Any = None) -> Any:
        asked.append((name, args, options["queue"], task.name))
        return {"queue": f"shard-{args[0] % 2}"} if name == "add" else None

    class OldRouter:  # Celery's router classes before 4.0
        def route_for_task(self, name: str, args: Any = None, kwargs: Any = None) -> Any:
            return "old" if name == "old.one" else None

    module = types.ModuleType("routers_for_test")
    module.OldRouter = OldRouter  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    app = make_app(task_routes=[by_argument, "routers_for_test:OldRouter", {"x.*": "mapped"}])
    assert [sent(app, sending, "add", i, 0).queue for i in (1, 2)] == ["shard-1", "shard-0"]
    assert asked[0] == ("add", (1, 0), None, "add")
    assert sent(app, sending, "old.one").queue == "old"  # imported when first asked
    assert sent(app, sending, "x.y").queue == "mapped"
    assert sent(app, sending, "none.of.them").queue == "default"
    assert sent(app, sending, "add", 1, 0, queue="call").queue == "call"  # the call wins


def test_routes_are_checked_when_set(make_app: Callable[..., App]) -> None:
    with pytest.raises(ValueError, match="unknown route key\\(s\\) \\['weight'\\]"):
        make_app(task_routes={"a": {"queue": "q", "weight": 3}})
    with pytest.raises(ValueError, match="a route is a queue name or a dict"):
        make_app(task_routes={"a": 3})
    with pytest.raises(ValueError, match="a router is a dict, a function or its path"):
        make_app(task_routes=[3])
    app = make_app(task_routes=["no_such_module_for_test.route"])
    with pytest.raises(ValueError, match=r"cannot import router 'no_such_module_for_test\.route'"):
        app.task(add).delay(1, 2)
    assert Routes.parse("task_routes", None).route("a", (), {}, {}) is None
    assert Routes.parse("task_routes", {"a": "q"}).for_name("a") == Route("q")


def test_task_defaults_from_settings(make_app: Callable[..., App], sending: Any) -> None:
    app = make_app(
        task_time_limit=timedelta(seconds=30),
        task_soft_time_limit=20,
        task_default_rate_limit="5/s",
        task_default_priority=2,
        task_ignore_result=True,
    )
    options = sent(app, sending, "add")
    assert (options.time_limit, options.soft_time_limit) == (30.0, 20.0)
    assert (options.rate_limit, options.priority, options.ignore_result) == ("5/s", 2, True)
    own = app.task(add, name="own", time_limit=3, rate_limit="1/m", ignore_result=False)
    own.delay(1, 2)
    options = sending.sent[-1].options
    assert (options.time_limit, options.rate_limit, options.ignore_result) == (3, "1/m", False)


def test_a_setting_changed_after_a_send_applies_to_the_next(
    make_app: Callable[..., App], sending: Any
) -> None:
    app = make_app()
    task = app.task(add, name="add")
    task.delay(1, 2)
    assert task.run_options() is task.run_options()  # built once while nothing changes
    app.conf.task_default_queue = "later"
    app.conf.update(task_routes={"other": "elsewhere"})
    assert sent(app, sending, "add").queue == "later"


@pytest.mark.parametrize(
    ("name", "value", "error"),
    [
        ("task_default_queue", "", "must be a queue name"),
        ("task_default_priority", "high", "must be an int"),
        ("task_time_limit", -1, "positive seconds"),
        ("task_default_rate_limit", "lots", "rate limit 'lots' must look like"),
        ("task_ignore_result", "yes", "must be True or False"),
        ("task_acks_late", 1, "must be True or False"),
    ],
)
def test_bad_values_are_refused_when_set(
    make_app: Callable[..., App], name: str, value: Any, error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        make_app(**{name: value})


def test_acks_late_is_accepted_and_false_says_what_celeriac_does(
    make_app: Callable[..., App],
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_app(task_acks_late=True, task_reject_on_worker_lost=True)
        make_app().task(add, acks_late=True, reject_on_worker_lost=True)
    with pytest.warns(UserWarning, match="still runs again a task whose worker process died"):
        make_app(task_acks_late=False)


SAMPLES = {
    "broker_url": "tcp://127.0.0.1:1",
    "result_backend": "redis://x",
    "result_expires": 60,
    "include": [],
    "imports": (),
    "task_default_queue": "q",
    "task_routes": {"a": "q"},
    "task_default_priority": 1,
    "task_time_limit": 10,
    "task_soft_time_limit": 5,
    "task_default_rate_limit": "1/s",
    "task_ignore_result": False,
    "task_acks_late": True,
    "task_reject_on_worker_lost": True,
}


def test_every_setting_in_the_table_is_applied(make_app: Callable[..., App]) -> None:
    assert set(SAMPLES) == set(SETTINGS)  # a new setting gets a sample here
    app = make_app()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # result_backend's warning
        app.conf.update(SAMPLES)  # none raises "in SETTINGS but not applied"
    assert dict(app.conf) == SAMPLES


def test_timezone_is_not_read_here_yet(make_app: Callable[..., App]) -> None:
    with pytest.warns(UserWarning, match="'timezone' has no meaning in Celeriac"):
        make_app(timezone="Europe/Paris")
