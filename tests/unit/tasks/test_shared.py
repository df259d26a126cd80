"""``@shared_task`` and the current app, ``autodiscover_tasks``, ``delay_on_commit``."""

from __future__ import annotations

import pickle
import sys
import types
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from celeriac import App, AsyncResult, shared_task, signature
from celeriac.tasks.callables import task_call_by_name
from celeriac.tasks.current import SHARED, current_app
from celeriac.tasks.shared import SharedTask


def add(a: int, b: int) -> int:
    return a + b


@pytest.fixture
def shared_add() -> Iterator[SharedTask[[int, int], int]]:
    task = shared_task(name="shared.add", max_retries=5)(add)
    yield task
    SHARED.pop("shared.add", None)


# -- which app ---------------------------------------------------------------------------


def test_a_shared_task_needs_no_app_until_it_sends(shared_add: Any) -> None:
    assert shared_add(2, 3) == 5  # a direct call runs here: no app needed
    with pytest.raises(RuntimeError, match="no current Celeriac app: make one first"):
        shared_add.delay(2, 3)
    with pytest.raises(RuntimeError, match="no current"):
        current_app()


def test_it_sends_through_the_app_current_at_each_use(
    shared_add: Any, make_app: Callable[..., App], sending: Any
) -> None:
    first = make_app(result_expires=10)
    shared_add.delay(1, 1)
    assert shared_add.app is first and sending.sent[-1].options.result_ttl == 10.0
    second = make_app(result_expires=20)  # made last: now the current app
    shared_add.delay(1, 1)
    assert shared_add.app is second and sending.sent[-1].options.result_ttl == 20.0
    first.set_current()
    assert shared_add.apply_async((1, 1)).app is first
    assert sending.sent[-1].options.retries == 5  # its own options, whichever app
    make_app(set_as_current=False)  # not current: nothing changes
    assert current_app() is first
    shared_add.app = second  # pinned: current no longer matters
    assert shared_add.s(1, 1).app is second


def test_every_app_lists_the_shared_tasks_and_lookups_by_name_use_the_current_app(
    shared_add: Any, make_app: Callable[..., App]
) -> None:
    app = make_app()
    task = app.tasks["shared.add"]
    assert task.app is app and task.fn is add and task.max_retries == 5
    assert signature("shared.add", (1, 2)).task is task  # no app=: the current app's
    assert AsyncResult("some-id").app is app


def test_an_unpickled_app_does_not_become_current(make_app: Callable[..., App]) -> None:
    app = make_app()
    copy = pickle.loads(pickle.dumps(App("tcp://127.0.0.1:2", set_as_current=False)))
    assert copy.address == "tcp://127.0.0.1:2" and current_app() is app


def test_a_shared_task_in_a_module_travels_by_name(
    monkeypatch: pytest.MonkeyPatch, make_app: Callable[..., App], sending: Any
) -> None:
    module = types.ModuleType("shared_module_for_test")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec(  # a module as a worker would import it
        "from celeriac import shared_task\n@shared_task\ndef double(x):\n    return 2 * x\n",
        module.__dict__,
    )
    make_app()
    module.double.delay(4)
    call = sending.sent[-1].fn
    reduced = call.__reduce__()
    assert reduced == (task_call_by_name, ("shared_module_for_test", "double"))
    assert task_call_by_name(*reduced[1]) is module.double._call
    assert cloudpickle.loads(cloudpickle.dumps(call))(4) == 8
    SHARED.pop("shared_module_for_test.double")


def test_a_bad_shared_task_option_fails_at_the_decorator() -> None:
    with pytest.raises(TypeError, match="'serializer' \\(arguments and results are always"):
        shared_task(serializer="json")


# -- autodiscover_tasks ------------------------------------------------------------------


@pytest.fixture
def packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory on ``sys.path`` for packages a test writes; they are unimported after."""
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        del sys.modules[name]
    for name in [name for name in SHARED if name.startswith("disc_")]:
        del SHARED[name]


def write_package(root: Path, name: str, tasks: str | None, **modules: str) -> None:
    (root / name).mkdir()
    (root / name / "__init__.py").write_text("")
    if tasks is not None:
        (root / name / "tasks.py").write_text(tasks)
    for module, text in modules.items():
        (root / name / f"{module}.py").write_text(text)


SHARED_DOUBLE = "from celeriac import shared_task\n@shared_task\ndef double(x):\n    return 2 * x\n"


def test_autodiscovery_imports_package_tasks_on_first_lookup(
    packages: Path, make_app: Callable[..., App]
) -> None:
    write_package(packages, "disc_a", SHARED_DOUBLE)
    write_package(packages, "disc_b", None)  # no tasks module: skipped
    app = make_app()
    app.autodiscover_tasks(["disc_a", "disc_b"])
    assert "disc_a.tasks" not in sys.modules  # lazy, as Celery
    assert "disc_a.tasks.double" in app.tasks
    assert "disc_a.tasks" in sys.modules and "disc_b" in sys.modules


def test_autodiscovery_reads_a_callable_late_and_force_imports_now(
    packages: Path, make_app: Callable[..., App]
) -> None:
    write_package(packages, "disc_c", SHARED_DOUBLE)
    write_package(packages, "disc_d", SHARED_DOUBLE)
    found: list[str] = []
    app = make_app()
    app.autodiscover_tasks(lambda: found)
    found.append("disc_c")  # read when the modules are imported, not when named
    app.finalize()
    assert "disc_c.tasks" in sys.modules
    app.autodiscover_tasks(["disc_d"], force=True)
    assert "disc_d.tasks" in sys.modules


def test_autodiscovery_raises_errors_from_inside_a_tasks_module_and_tries_again(
    packages: Path, make_app: Callable[..., App]
) -> None:
    write_package(packages, "disc_e", "import disc_missing_dependency\n")
    app = make_app()
    app.autodiscover_tasks(["disc_e"], related_name="tasks")
    with pytest.raises(ModuleNotFoundError, match="disc_missing_dependency"):
        app.tasks  # noqa: B018
    with pytest.raises(ModuleNotFoundError):  # still pending: tried again
        app.finalize()


def test_autodiscovery_without_packages_reads_djangos_installed_apps(
    packages: Path, make_app: Callable[..., App], monkeypatch: pytest.MonkeyPatch
) -> None:
    write_package(packages, "disc_f", SHARED_DOUBLE)
    write_package(packages, "disc_g", SHARED_DOUBLE)
    fake_django(monkeypatch, installed=["disc_f"])  # each AppConfig's name
    app = make_app()
    app.autodiscover_tasks()
    assert "disc_f.tasks.double" in app.tasks
    app.autodiscover_tasks(["disc_g.NotAModule"], force=True)  # one level up, as Celery
    assert "disc_g.tasks.double" in app.tasks


def test_autodiscovery_without_packages_or_django_finds_nothing(
    make_app: Callable[..., App], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "django.conf", None)  # Django not importable
    app = make_app()
    app.autodiscover_tasks()
    assert app.tasks == {}


# -- delay_on_commit ---------------------------------------------------------------------


def fake_django(
    monkeypatch: pytest.MonkeyPatch, installed: Sequence[str] = ()
) -> list[Callable[[], object]]:
    """Django as far as Celeriac reads it: settings, installed apps, transaction.on_commit."""
    hooks: list[Callable[[], object]] = []
    conf = types.ModuleType("django.conf")
    conf.settings = types.SimpleNamespace(configured=True)  # type: ignore[attr-defined]
    apps = types.ModuleType("django.apps")
    configs = [types.SimpleNamespace(name=name) for name in installed]
    apps.apps = types.SimpleNamespace(get_app_configs=lambda: configs)  # type: ignore[attr-defined]
    transaction = types.ModuleType("django.db.transaction")
    transaction.on_commit = hooks.append  # type: ignore[attr-defined]
    for name, module in [
        ("django", types.ModuleType("django")),
        ("django.conf", conf),
        ("django.apps", apps),
        ("django.db", types.ModuleType("django.db")),
        ("django.db.transaction", transaction),
    ]:
        monkeypatch.setitem(sys.modules, name, module)
    return hooks


def test_on_commit_without_django_sends_now(
    make_app: Callable[..., App], sending: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "django.conf", None)
    task = make_app().task(add, name="add")
    assert task.delay_on_commit(1, 2) is None  # Celery's returns None too
    task.apply_async_on_commit((3, 4), countdown=5)
    assert [s.args for s in sending.sent] == [(1, 2), (3, 4)]
    assert sending.sent[1].eta is not None


def test_on_commit_with_django_sends_when_the_transaction_commits(
    make_app: Callable[..., App], sending: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    hooks = fake_django(monkeypatch)
    task = make_app().task(add, name="add")
    task.delay_on_commit(1, 2)
    task.apply_async_on_commit((3, 4), queue="q")
    assert sending.sent == [] and len(hooks) == 2  # nothing sent before the commit
    for hook in hooks:  # Django runs them after the commit (never, on a rollback)
        hook()
    assert [(s.args, s.options.queue) for s in sending.sent] == [((1, 2), "default"), ((3, 4), "q")]


def test_on_commit_refuses_a_wrong_option_at_the_call(
    make_app: Callable[..., App], monkeypatch: pytest.MonkeyPatch
) -> None:
    hooks = fake_django(monkeypatch)
    task = make_app().task(add, name="add")
    with pytest.raises(
        TypeError, match=r"add\.apply_async_on_commit: unknown option\(s\) 'shadow'"
    ):
        task.apply_async_on_commit((1, 2), shadow="x")
    assert hooks == []
