"""``-A NAME``: Celery's rule for finding an app (and Celeriac's names beside Celery's), on real
modules written to a temporary directory; what the worker processes do with the result."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from celeriac.cli.apps import AppNotLoaded, Loaded, find, load
from celeriac.tasks.app import App
from celeriac.tasks.current import set_current_app
from celeriac.worker.__main__ import import_all

APP = 'from celeriac import Celery\n{name} = Celery("proj", broker="tcp://127.0.0.1:1"{more})\n'

Write = Callable[[dict[str, str]], None]


@pytest.fixture
def write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Write]:
    """Write ``{relative path: text}`` under a directory on ``sys.path``; forget them after."""

    def files(tree: dict[str, str]) -> None:
        for relative, text in tree.items():
            target = tmp_path / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(textwrap.dedent(text))

    monkeypatch.syspath_prepend(str(tmp_path))
    yield files
    for name in [name for name in sys.modules if name.startswith("apx_")]:
        del sys.modules[name]
    set_current_app(None)


def app(name: str = "app", more: str = "") -> str:
    return APP.format(name=name, more=more)


def loaded_app(name: str) -> App:
    found = find(name).app
    assert found is not None
    return found


def test_a_module_without_an_app_is_imported_as_it_always_was(write: Write) -> None:
    write({"apx_tasks.py": "def add(x, y):\n    return x + y\n"})
    assert find("apx_tasks") == Loaded("apx_tasks", "apx_tasks")
    assert "apx_tasks" in sys.modules
    assert find("json") == Loaded("json", "json")  # -A json, as the tests always passed


@pytest.mark.parametrize("attribute", ["app", "celery", "celeriac", "my_app"])
def test_a_modules_app_is_its_app_celery_or_celeriac_attribute_or_its_one_app(
    write: Write, attribute: str
) -> None:
    write({"apx_mod.py": "import celeriac\n" + app(attribute)})  # `celeriac`: the package
    found = find("apx_mod")
    assert found.spec == f"apx_mod:{attribute}"
    assert found.app is getattr(sys.modules["apx_mod"], attribute)


@pytest.mark.parametrize("submodule", ["celery", "celeriac"])
@pytest.mark.parametrize(
    "init", ["", "from .{submodule} import app as celery_app\n"], ids=["bare", "django"]
)
def test_a_packages_app_is_in_its_celery_or_celeriac_submodule(
    write: Write, submodule: str, init: str
) -> None:
    write({"apx_proj/__init__.py": init.format(submodule=submodule)})
    write({f"apx_proj/{submodule}.py": app()})
    found = find("apx_proj")
    assert (found.name, found.spec) == ("apx_proj", f"apx_proj.{submodule}:app")
    assert found.app is sys.modules[f"apx_proj.{submodule}"].app  # type: ignore[attr-defined]


def test_the_app_may_be_named_by_module_attribute_or_dotted_path(write: Write) -> None:
    write({"apx_proj/__init__.py": "", "apx_proj/celery.py": app("application")})
    expected = loaded_app("apx_proj")
    for name in ("apx_proj:celery.application", "apx_proj.celery:application"):
        assert find(name) == Loaded(name, name, expected)  # the worker processes do the same
    assert find("apx_proj.celery.application").spec == "apx_proj.celery:application"
    assert find("apx_proj.celery").spec == "apx_proj.celery:application"


@pytest.mark.parametrize(
    ("tree", "name", "message"),
    [
        ({}, "apx_nowhere", "-A apx_nowhere: no module named 'apx_nowhere' (looked in"),
        ({"apx_p/__init__.py": ""}, "apx_p.sub", "-A apx_p.sub: no module named 'apx_p.sub'"),
        ({}, "apx_gone.celery:app", "no module named 'apx_gone'"),
        ({"apx_m.py": app()}, "apx_m:missing", "apx_m has no attribute 'missing'"),
        ({"apx_m.py": "n = 3\n"}, "apx_m:n", "-A apx_m:n: n is of type int, not a Celeriac app"),
        ({"apx_m.py": "n = 3\n"}, "apx_m.n", "an object of type int, neither a module nor"),
        (
            {"apx_m.py": app("first") + "second = Celery('other')\n"},
            "apx_m",
            "apx_m holds several apps; name one: apx_m:first, apx_m:second",
        ),
        (
            {"apx_p/__init__.py": "", "apx_p/celery.py": "x = 1\n"},
            "apx_p",
            "-A apx_p: apx_p.celery holds no Celeriac app",
        ),
    ],
)
def test_what_cannot_be_found_says_what_was_looked_for(
    write: Write, tree: dict[str, str], name: str, message: str
) -> None:
    write(tree)
    with pytest.raises(AppNotLoaded) as raised:
        find(name)
    assert message in str(raised.value)
    assert raised.value.details == ""  # nothing of the user's code to show


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("import apx_not_installed\n", "ModuleNotFoundError: No module named 'apx_not_installed'"),
        ("raise RuntimeError('no settings here')\n", "RuntimeError: no settings here"),
        ("def broken(:\n", "SyntaxError"),
    ],
)
def test_an_error_inside_the_apps_module_is_never_taken_for_a_missing_one(
    write: Write, text: str, error: str
) -> None:
    write({"apx_p/__init__.py": "", "apx_p/celery.py": text})
    with pytest.raises(AppNotLoaded) as raised:
        find("apx_p")
    assert str(raised.value).startswith(f"-A apx_p: {error}")
    details = raised.value.details  # the user's frames, not the import machinery's
    assert "apx_p/celery.py" in details and "importlib" not in details
    assert "celeriac/cli" not in details


def test_load_finalizes_the_app_importing_its_include_and_autodiscovered_modules(
    write: Write,
) -> None:
    write({
        "apx_proj/__init__.py": "from .celery import app as celery_app\n",
        "apx_proj/celery.py": app(more=", include=['apx_proj.tasks']")
        + "app.autodiscover_tasks(['apx_proj.billing', 'apx_proj.no_tasks_here'])\n",
        "apx_proj/tasks.py": "from .celery import app\n\n@app.task\ndef add(x, y):\n    pass\n",
        "apx_proj/billing/__init__.py": "",
        "apx_proj/billing/tasks.py": "BILLED = True\n",
        "apx_proj/no_tasks_here/__init__.py": "",
    })  # fmt: skip
    assert find("apx_proj").spec == "apx_proj.celery:app"
    assert "apx_proj.tasks" not in sys.modules  # finding imports nothing the app names
    [found] = load(["apx_proj"])
    assert found.spec == "apx_proj.celery:app"
    assert {"apx_proj.tasks", "apx_proj.billing.tasks"} <= set(sys.modules)
    assert found.app is not None and "apx_proj.tasks.add" in found.app.tasks


def test_an_include_that_fails_to_import_fails_the_load_naming_the_app(write: Write) -> None:
    write({"apx_mod.py": app(more=", include=['apx_mod_tasks']")})
    with pytest.raises(AppNotLoaded, match=r"-A apx_mod: ModuleNotFoundError: .*'apx_mod_tasks'"):
        load(["apx_mod"])


def test_load_finds_modules_in_the_current_directory_and_leaves_sys_path_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "apx_here.py").write_text("")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    before = list(sys.path)
    try:
        assert load(["apx_here"]) == [Loaded("apx_here", "apx_here")]
        assert sys.path == before
    finally:
        sys.modules.pop("apx_here", None)


def test_the_worker_processes_import_the_specs_and_finalize_the_apps(write: Write) -> None:
    write({
        "apx_proj/__init__.py": "",
        "apx_proj/celery.py": app(more=", include=['apx_proj.tasks']"),
        "apx_proj/tasks.py": "",
        "apx_other.py": "",
    })  # fmt: skip
    import_all(("apx_other", "apx_proj.celery:app"))
    assert {"apx_other", "apx_proj.celery", "apx_proj.tasks"} <= set(sys.modules)
