"""Module paths of release 0.1.0 that pickles and journals may still name.

Objects travel pickled by reference to their module: a Celery-style task's
function as ``celeriac.app._TaskCall``, a dependency as ``celeriac.refs.TaskRef``,
a failure as ``celeriac.serialize.RemoteError``, an ``AsyncResult`` inside
arguments as ``celeriac.result.AsyncResult``.  Journals written by 0.1.0 and
clients or workers still running it keep sending those names, so importing an
old path gives the module that now holds the objects.  The alias is made only
when something imports the old name (``pickle`` does), never eagerly.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from types import ModuleType

#: old path -> new path; only modules whose objects can be pickled or journaled.
MOVED = {
    "celeriac.app": "celeriac.tasks.app",
    "celeriac.canvas": "celeriac.tasks.canvas",
    "celeriac.result": "celeriac.tasks.result",
    "celeriac.refs": "celeriac.wire.refs",
    "celeriac.serialize": "celeriac.wire.serialize",
}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old path and loads it as the module at its new path."""

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(MOVED[spec.name])

    def exec_module(self, module: ModuleType) -> None:
        pass  # already executed under its new name


def install() -> None:
    """Put the alias finder on ``sys.meta_path`` (once; ``celeriac/__init__`` calls it)."""
    if not any(isinstance(finder, _Alias) for finder in sys.meta_path):
        sys.meta_path.append(_Alias())
