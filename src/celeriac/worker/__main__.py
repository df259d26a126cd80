"""Entry point of one worker process (started by the supervisor).

Its arguments are what :func:`celeriac.worker.settings.child_command` wrote: the
supervisor's :class:`~celeriac.worker.settings.WorkerSettings` and this
process's :class:`~celeriac.worker.settings.ChildSettings`, as JSON.  There is
no parser of options here: the options are ``celeriac worker``'s.
"""

from __future__ import annotations

import importlib
import logging
import signal
import sys

from celeriac.logs import setup_logging
from celeriac.worker.process import WorkerProcess
from celeriac.worker.settings import read_child_command


def main(argv: list[str] | None = None) -> None:
    """Run one worker process on the settings in ``argv`` (default: ``sys.argv[1:]``)."""
    try:
        settings, child = read_child_command(sys.argv[1:] if argv is None else argv)
    except ValueError as exc:
        sys.exit(f"usage: python -m celeriac.worker SETTINGS [CHILD] (JSON): {exc}")
    setup_logging(settings.log_level)
    for module in settings.imports:
        importlib.import_module(module)
    worker = WorkerProcess(settings, child)
    signal.signal(signal.SIGTERM, lambda *_: worker.request_close())
    signal.signal(signal.SIGINT, lambda *_: worker.request_close())
    try:
        worker.run()
    except Exception:
        logging.getLogger("celeriac.worker").exception("worker process failed")
        raise


if __name__ == "__main__":
    main()
