"""What ``celeriac worker -A NAME`` names: a module to import, or a Celery-style app to load.

Celery's rule for ``-A``, with Celeriac's module names beside Celery's:

* ``module:attribute`` names the app itself (``proj.celery:app``).
* Otherwise ``NAME`` is imported as a module (or, failing that, as the
  attribute ``last`` of module ``NAME`` without ``.last``).  In a module, the
  app is its attribute ``app``, ``celery`` or ``celeriac``; in a package
  without one, the app of its ``celery`` or ``celeriac`` submodule (a Django
  project's ``proj/celery.py``); else the one app among its attributes.

Where Celery would then fail, a module holding no app is still what it always
was here: a module each worker process imports (``-A tasks``).  Two apps in
one module are refused (name one as ``module:attribute``), and an error raised
inside ``proj/celery.py`` is never taken for a missing submodule.

``celeriac worker`` resolves every name once, in the supervisor, before it
starts a worker process: each app's ``finalize()`` imports its ``include`` and
autodiscovered modules, and a name that fails stops the worker with
:data:`~celeriac.worker.settings.EX_CONFIG`.  The worker processes get
:attr:`Loaded.spec` (``module`` or ``module:attribute``) and do the same
imports; under Django (``DJANGO_SETTINGS_MODULE`` set, perhaps by the app's
module) ``django.setup()`` runs before the app's modules are imported
(:func:`~celeriac.worker.settings.setup_django`).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import traceback
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from celeriac.tasks.app import App
from celeriac.tasks.discovery import related_module
from celeriac.worker.settings import setup_django

#: Where a module's app is, in this order (Celery's two names, then Celeriac's).
APP_ATTRIBUTES = ("app", "celery", "celeriac")
#: The submodules of a package that hold its app, in this order.
APP_MODULES = ("celery", "celeriac")

_IMPORTLIB = os.path.dirname(importlib.__file__)
_CELERIAC = os.path.dirname(os.path.dirname(__file__))  # the celeriac package


class AppNotLoaded(Exception):
    """An ``-A`` name that cannot be loaded; the message says which and why.

    ``details``: the traceback of the error the user's code raised, if any (for
    the log; the message alone says what to fix when the module is missing).
    """

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details


@dataclass(frozen=True)
class Loaded:
    """One ``-A`` name resolved: ``name`` as given; ``spec``: what the worker processes
    import (``module``, or ``module:attribute`` for an app); ``app``: the app, if any."""

    name: str
    spec: str
    app: App | None = None


def load(names: Iterable[str]) -> list[Loaded]:
    """Import every name (from the current directory too, as Celery does) and finalize its app.

    Raises:
        AppNotLoaded: a name that names nothing importable or holds no usable
            app, or whose module (or an app's ``include``) raised.
    """
    with _cwd_on_path():  # as the worker processes do it (worker/__main__.py)
        _user_code("DJANGO_SETTINGS_MODULE", setup_django)  # a task module may import models
        found = [find(name) for name in names]
        _user_code("DJANGO_SETTINGS_MODULE", setup_django)  # set by Django's celery.py
        for loaded in found:
            if loaded.app is not None:
                _user_code(loaded.name, loaded.app.finalize)
    return found


def find(name: str) -> Loaded:
    """The module or app ``name`` names, imported; see the module's rule.

    Raises:
        AppNotLoaded: as :func:`load`.
    """
    module_name, colon, attribute = name.partition(":")
    if colon:
        target = _attribute(_import(module_name, name), attribute, name)
        if not isinstance(target, App):
            raise AppNotLoaded(f"-A {name}: {attribute} is {_kind(target)}, not a Celeriac app")
        return Loaded(name, name, target)
    symbol = _symbol(name)
    if isinstance(symbol, ModuleType):
        return in_module(name, symbol)
    if isinstance(symbol, App):
        parent, _, last = name.rpartition(".")
        return Loaded(name, f"{parent}:{last}", symbol)
    raise AppNotLoaded(f"-A {name}: an object {_kind(symbol)}, neither a module nor an app")


def in_module(name: str, module: ModuleType) -> Loaded:
    """The app in ``module`` (imported as ``name``), or the module alone when it holds none."""
    for attribute in APP_ATTRIBUTES:
        if isinstance(app := getattr(module, attribute, None), App):
            return Loaded(name, f"{module.__name__}:{attribute}", app)
    if hasattr(module, "__path__"):  # a package: proj/celery.py, as Django projects have
        for submodule_name in APP_MODULES:
            submodule = _user_code(name, related_module, module.__name__, submodule_name)
            if submodule is None:
                continue  # no such submodule (an error inside one is raised)
            loaded = in_module(name, submodule)
            if loaded.app is None:
                raise AppNotLoaded(f"-A {name}: {submodule.__name__} holds no Celeriac app")
            return loaded
    apps = _apps_in(module)
    if len(apps) > 1:
        spelt = ", ".join(f"{module.__name__}:{key}" for key in apps)
        raise AppNotLoaded(f"-A {name}: {module.__name__} holds several apps; name one: {spelt}")
    for key, app in apps.items():
        return Loaded(name, f"{module.__name__}:{key}", app)
    return Loaded(name, module.__name__)  # a module of tasks: imported, as it always was


def _apps_in(module: ModuleType) -> dict[str, App]:
    """The apps among ``module``'s attributes, each once, by the first name it has there."""
    found: dict[int, tuple[str, App]] = {}
    for key, value in vars(module).items():
        if isinstance(value, App):
            found.setdefault(id(value), (key, value))
    return dict(found.values())


def _symbol(name: str) -> Any:
    """Module ``name``; else attribute ``last`` of the module before it (``proj.app``)."""
    try:
        return _import(name, name)
    except AppNotLoaded as exc:
        parent, _, last = name.rpartition(".")
        missing = exc.__cause__
        if parent and isinstance(missing, ModuleNotFoundError) and missing.name == name:
            module = _import(parent, name)
            if hasattr(module, last):
                return getattr(module, last)
        raise


def _import(module: str, name: str) -> ModuleType:
    """``import module`` for ``-A name``; a missing module (or package of it) said in a line."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (module == missing or module.startswith(missing + ".")):
            raise AppNotLoaded(
                f"-A {name}: no module named {missing!r} (looked in the current "
                "directory and on PYTHONPATH)"
            ) from exc
        raise _failed(name, exc) from exc  # a module it imports is missing: the traceback
    except Exception as exc:  # a SyntaxError, or whatever the module raised
        raise _failed(name, exc) from exc


def _attribute(module: ModuleType, attribute: str, name: str) -> Any:
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise AppNotLoaded(f"-A {name}: {module.__name__} has no attribute {attribute!r}")
        target = getattr(target, part)
    return target


def _user_code(name: str, call: Any, *args: Any) -> Any:
    """``call(*args)``, running the user's code: what it raises is :class:`AppNotLoaded`."""
    try:
        return call(*args)
    except Exception as exc:
        raise _failed(name, exc) from exc


def _failed(name: str, exc: Exception) -> AppNotLoaded:
    """``exc`` from the user's code, its traceback from the user's first frame on."""
    tb = exc.__traceback__
    while tb is not None and _machinery(tb.tb_frame.f_code.co_filename):
        tb = tb.tb_next
    shown = tb is not None or isinstance(exc, SyntaxError)  # which names its file and line
    details = "".join(traceback.format_exception(type(exc), exc, tb)) if shown else ""
    return AppNotLoaded(f"-A {name}: {type(exc).__name__}: {exc}", details)


def _machinery(filename: str) -> bool:
    """A frame of the import system or of Celeriac's loading, not of the user's code."""
    return filename.startswith(("<frozen importlib", _IMPORTLIB, _CELERIAC))


def _kind(value: Any) -> str:
    return f"of type {type(value).__name__}"


@contextlib.contextmanager
def _cwd_on_path() -> Iterator[None]:
    """The current directory on ``sys.path``, as ``python -m celeriac.worker`` has it."""
    cwd = os.getcwd()
    added = cwd not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        yield
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)
