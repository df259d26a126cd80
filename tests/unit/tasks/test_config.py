"""Celery's constructor, ``app.conf`` and ``config_from_object`` on ``App`` (no scheduler)."""

from __future__ import annotations

import sys
import types
import warnings
from datetime import timedelta

import pytest

from celeriac import App, Celery
from celeriac.tasks.config import scheduler_address


def test_celerys_first_line_names_the_app_and_reads_the_broker() -> None:
    app = Celery("proj", broker="tcp://10.0.0.5:9000")
    assert (app.main, app.address) == ("proj", "tcp://10.0.0.5:9000")
    assert Celery is App
    assert App("proj", broker="celeriac://sched:9001").address == "tcp://sched:9001"
    assert App("tcp://127.0.0.1:1").main is None  # an address first, as before
    assert App(address="ipc:///run/c.sock").address == "ipc:///run/c.sock"
    assert App("host:8000").address == "tcp://host:8000"


@pytest.mark.parametrize("url", ["redis://localhost:6379/0", "amqp://guest@localhost//", "rpc://"])
def test_a_celery_transport_is_ignored_with_a_warning_never_read_as_a_host(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CELERIAC_ADDRESS", raising=False)
    with pytest.warns(UserWarning, match="Celeriac has no broker"):
        app = App("proj", broker=url)
    assert app.address == "tcp://127.0.0.1:8786"
    with pytest.warns(UserWarning, match="keeps every outcome"):
        App("proj", backend="redis://localhost")


def test_bad_broker_urls_are_refused() -> None:
    with pytest.raises(ValueError, match="not a URL"):
        App("proj", broker="localhost")
    with pytest.raises(ValueError, match="unknown scheme 'http'"):
        App("proj", broker="http://x")
    with pytest.raises(TypeError, match="two addresses"):
        App("tcp://a:1", address="tcp://b:2")
    with pytest.warns(UserWarning, match="no broker"):
        assert scheduler_address("sqla+postgresql://x/y", "broker") is None


def test_conf_reads_back_and_result_expires_is_the_result_ttl() -> None:
    app = App("proj", result_expires=timedelta(hours=1))
    assert app.result_ttl == 3600.0 and app.conf.result_expires == timedelta(hours=1)
    app.conf.update(result_expires=60)
    assert app.result_ttl == 60.0 and app.conf["result_expires"] == 60
    app.conf.result_expires = 30
    assert app.result_ttl == 30.0 and dict(app.conf) == {"result_expires": 30}
    with pytest.raises(ValueError, match="positive seconds"):
        app.conf.result_expires = -1
    with pytest.raises(AttributeError, match="no setting 'task_routes'"):
        app.conf.task_routes  # noqa: B018


def test_an_unknown_setting_is_kept_and_warned_once() -> None:
    app = App("proj")
    with pytest.warns(UserWarning, match="'worker_prefetch_multiplier' has no meaning"):
        app.conf.worker_prefetch_multiplier = 4
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        app.conf.worker_prefetch_multiplier = 1  # the second time: no warning
    assert app.conf.worker_prefetch_multiplier == 1


def test_config_from_object_with_and_without_a_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = types.SimpleNamespace(CELERY_RESULT_EXPIRES=120, DEBUG=True, result_expires=5)
    app = App("proj")
    app.config_from_object(settings, namespace="CELERY")
    assert app.result_ttl == 120.0 and "debug" not in app.conf
    module = types.ModuleType("celeryconfig_for_test")
    module.result_expires = 7  # type: ignore[attr-defined]
    module.BROKER = "ignored: not lower-case"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    app.config_from_object(module.__name__)
    assert app.result_ttl == 7.0 and "BROKER" not in app.conf and "broker" not in app.conf
    module.settings = types.SimpleNamespace(CELERY_RESULT_EXPIRES=9)  # type: ignore[attr-defined]
    app.config_from_object(f"{module.__name__}:settings", namespace="CELERY")  # Django's form
    assert app.result_ttl == 9.0


def test_included_modules_are_imported_when_a_task_is_first_looked_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = App("proj", include=["proj_tasks_for_test"])
    imported: list[str] = []

    def fake_module_import(name: str) -> types.ModuleType:
        imported.append(name)

        @app.task(name="proj.add")
        def add(a: int, b: int) -> int:
            return a + b

        return types.ModuleType(name)

    monkeypatch.setattr("importlib.import_module", fake_module_import)
    assert imported == []  # nothing imported at construction
    assert "proj.add" in app.tasks and imported == ["proj_tasks_for_test"]
    assert "proj.add" in app.tasks and imported == ["proj_tasks_for_test"]  # once
