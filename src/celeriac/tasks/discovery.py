"""What an app imports before it looks a task up by name: ``include``, ``autodiscover_tasks``.

Nothing is imported when they are named.  ``App.finalize()`` (which
``app.tasks``, ``signature("name")`` and every lookup by name call first)
imports them in the order they were given.  A worker needs none of this:
each task it receives names its module, which it imports itself.

``autodiscover_tasks(packages, related_name="tasks")`` follows Celery's rule
for each package: import the package, then ``package.tasks``; a package
without that module is skipped, but an error raised inside it is not.  With
no packages, the packages are Django's installed apps, when Django is
importable and configured (Celery's Django fix-up); otherwise there are none.
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any

#: A list of packages, or a function returning it (read when the modules are imported).
Packages = Iterable[str] | Callable[[], Iterable[str]] | None


class TaskModules:
    """What one app still has to import: module names and autodiscovery requests."""

    def __init__(self) -> None:
        self._pending: list[str | tuple[Packages, str | None]] = []
        self._lock = threading.RLock()

    def include(self, names: Iterable[str]) -> None:
        """Import these modules on the next :meth:`import_pending`."""
        with self._lock:
            self._pending.extend(names)

    def discover(self, packages: Packages, related_name: str | None) -> None:
        """Import ``<package>.<related_name>`` of each package on the next import."""
        with self._lock:
            self._pending.append((packages, related_name))

    def import_pending(self) -> None:
        """Import everything pending, in order; an item that fails stays pending and raises."""
        with self._lock:
            while self._pending:
                item = self._pending[0]
                if isinstance(item, str):
                    importlib.import_module(item)
                else:
                    autodiscover(*item)
                if self._pending and self._pending[0] is item:
                    self._pending.pop(0)  # (an import may have looked tasks up itself)


def autodiscover(packages: Packages, related_name: str | None) -> list[ModuleType]:
    """Import ``related_name`` of each package now; the modules found.

    Parameters:
        packages: package names, a function returning them, or ``None`` for
            Django's installed apps.
        related_name: the module to find in each (``None``: the package itself).
    """
    if packages is None:
        names: Iterable[str] = django_apps()
    elif callable(packages):
        names = packages()
    else:
        names = packages
    if isinstance(names, str):
        raise TypeError(f"autodiscover_tasks takes a list of packages, not the string {names!r}")
    found = [related_module(name, related_name) for name in names]
    return [module for module in found if module is not None]


def related_module(package: str, related_name: str | None) -> ModuleType | None:
    """``package.related_name``, or ``None`` if the package has no such module.

    A name that is not a package itself (Django's ``"app.apps.AppConfig"``)
    is tried one level up, as Celery does.  Raises whatever the module raises,
    including a ``ModuleNotFoundError`` for another module it imports.
    """
    try:
        module = importlib.import_module(package)
        if not related_name:
            return module
    except ModuleNotFoundError:
        package = package.rpartition(".")[0]
        if not package:
            raise
    name = f"{package}.{related_name}"
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name == name:
            return None
        raise


def django_apps() -> list[str]:
    """The names of Django's installed apps, or ``[]`` when Django is absent or unconfigured."""
    settings = django_settings()
    if settings is None:
        return []
    apps: Any = importlib.import_module("django.apps").apps
    return [config.name for config in apps.get_app_configs()]


def django_settings() -> Any:
    """Django's ``settings`` when Django is importable and configured, else ``None``.

    Configured means ``settings.configure()`` ran or the settings were read
    (``django.setup()``), or ``DJANGO_SETTINGS_MODULE`` names them.
    """
    try:
        settings = importlib.import_module("django.conf").settings
    except ImportError:
        return None
    if settings.configured or os.environ.get("DJANGO_SETTINGS_MODULE"):
        return settings
    return None


__all__ = [
    "Packages",
    "TaskModules",
    "autodiscover",
    "django_apps",
    "django_settings",
    "related_module",
]
