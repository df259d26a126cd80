"""Entry point of one worker process (started by the supervisor).

Its arguments are what :func:`celeriac.worker.settings.child_command` wrote: the
supervisor's :class:`~celeriac.worker.settings.WorkerSettings` and this
process's :class:`~celeriac.worker.settings.ChildSettings`, as JSON.  There is
no parser of options here: the options are ``celeriac worker``'s.

First it imports ``settings.imports``, which ``celeriac worker`` has already
resolved (:mod:`celeriac.cli.apps`): a module, or ``module:attribute`` naming an
app, whose ``finalize()`` imports its ``include`` and autodiscovered modules.
One that fails is logged with its traceback and the process exits
:data:`~celeriac.worker.settings.EX_CONFIG`, which the supervisor takes as a
reason to stop rather than to restart it.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import signal
import sys
from collections.abc import Iterator
from typing import Any

from celeriac.logs import setup_logging
from celeriac.worker.process import WorkerProcess
from celeriac.worker.settings import EX_CONFIG, read_child_command, setup_django

log = logging.getLogger("celeriac.worker")


def main(argv: list[str] | None = None) -> None:
    """Run one worker process on the settings in ``argv`` (default: ``sys.argv[1:]``)."""
    try:
        settings, child = read_child_command(sys.argv[1:] if argv is None else argv)
    except ValueError as exc:
        sys.exit(f"usage: python -m celeriac.worker SETTINGS [CHILD] (JSON): {exc}")
    setup_logging(settings.log_level)
    try:
        import_all(settings.imports)
    except Exception:
        log.exception("worker process cannot load its -A modules; exiting %d", EX_CONFIG)
        sys.exit(EX_CONFIG)
    worker = WorkerProcess(settings, child)
    signal.signal(signal.SIGTERM, lambda *_: worker.request_close())
    signal.signal(signal.SIGINT, lambda *_: worker.request_close())
    try:
        worker.run()
    except Exception:
        log.exception("worker process failed")
        raise


def import_all(specs: tuple[str, ...]) -> None:
    """Import each ``module`` or ``module:attribute``, then finalize each app so named.

    Under Django (``DJANGO_SETTINGS_MODULE`` set before, or by the modules)
    ``django.setup()`` runs first, and again after the imports if they set it.
    """
    setup_django()
    apps = []
    for spec in specs:
        module, _, attribute = spec.partition(":")
        with _naming(spec):
            imported: Any = importlib.import_module(module)
            if attribute:
                apps.append((spec, functools.reduce(getattr, attribute.split("."), imported)))
    setup_django()
    for spec, app in apps:
        with _naming(spec):
            app.finalize()


@contextlib.contextmanager
def _naming(spec: str) -> Iterator[None]:
    """An exception raised inside says which ``-A`` it was loading (a note under it)."""
    try:
        yield
    except Exception as exc:
        exc.add_note(f"(while loading -A {spec})")
        raise


if __name__ == "__main__":
    main()
