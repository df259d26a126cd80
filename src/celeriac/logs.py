"""The default logging set-up for the daemons.

Every line logged while a task runs names it: ``[tasks.resize 7f3a...]`` is
added after the logger's name, whatever logger the task (or Celeriac) used.
The task is the one running in the logging thread (``celeriac.context``), so
a worker with several slots still tags each line with its own task.  Records
also carry ``task_id`` and ``task_name`` attributes (empty outside a task) for
handlers that format their own lines (JSON, syslog).

Under systemd (``$JOURNAL_STREAM`` names our stderr) the timestamp is left
out: the journal adds its own.
"""

from __future__ import annotations

import logging
import os
import sys

from celeriac.context import current_request

FORMAT = "%(asctime)s %(levelname)-7s %(name)s[%(process)d]%(task)s: %(message)s"
JOURNAL_FORMAT = "%(levelname)-7s %(name)s[%(process)d]%(task)s: %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


class TaskContextFilter(logging.Filter):
    """Add ``task`` (`` [name id]`` or empty), ``task_id`` and ``task_name`` to records."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Tag ``record`` with the task running in this thread; never drops one."""
        request = current_request()
        if request is None:
            record.__dict__.update(task="", task_id="", task_name="")
        else:
            record.__dict__.update(
                task=f" [{request.name} {request.id}]",
                task_id=request.id,
                task_name=request.name,
            )
        return True


def setup_logging(level: str = "INFO") -> None:
    """Log to stderr in the daemons' format, every line tagged with its task.

    ``level`` is a level name in any case (``"debug"``, ``"INFO"``).  Replaces
    whatever handlers the root logger had (``basicConfig(force=True)``).
    """
    handler = logging.StreamHandler(sys.stderr)
    fmt = JOURNAL_FORMAT if _logging_to_journal() else FORMAT
    handler.setFormatter(logging.Formatter(fmt, DATE_FORMAT))
    handler.addFilter(TaskContextFilter())
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


def _logging_to_journal() -> bool:
    """True when stderr is connected to the systemd journal (see systemd.exec(5))."""
    expected = os.environ.get("JOURNAL_STREAM", "")
    if not expected:
        return False
    try:
        stat = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return expected == f"{stat.st_dev}:{stat.st_ino}"
