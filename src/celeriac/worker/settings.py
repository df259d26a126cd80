"""The settings of ``celeriac worker``: the declaration of its options, and how a child gets them.

:class:`WorkerSettings` is the one place a worker option is declared: the CLI
builds ``celeriac worker``'s parser, config keys and ``--check`` report from it,
the supervisor runs on it, and hands each worker process the same object (as
JSON on its command line, :func:`child_command`) with the few fields that differ
per process (:class:`ChildSettings`).

Celery's worker spellings are flags of the same fields: ``-c``/``--concurrency``
is ``--nprocs`` (Celery's prefork pool processes), ``-Q`` is ``--queues``,
``-A``/``--app`` is ``--import`` (also before the command's name, as Celery's
global ``-A``), ``-l``/``--loglevel`` is ``--log-level``.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import sys
from dataclasses import dataclass

from celeriac.options import BadValue, CommonSettings, from_json, option, path, to_json
from celeriac.wire.addresses import DEFAULT_ADDRESS

#: The exit status of a worker process whose ``--import`` (``-A``) modules fail to import, and
#: of ``celeriac worker`` then (``EX_CONFIG`` of sysexits.h): a configuration that cannot
#: work, which no restart mends.  A worker process exits with it only at its start, before it
#: connects; a task cannot make it (a task's ``SystemExit`` is the task's failure).
EX_CONFIG = 78

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMG]?)I?B?\s*$")
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def memory_size(text: str) -> int:
    """``"500MB"`` (or ``500MiB``, ``2G``, ``1024``) -> bytes, in binary units as ``top`` shows."""
    match = _SIZE.match(text.upper())
    if match is None:
        raise BadValue(f"{text!r} is not a size like 500MB or 2GB")
    return int(float(match[1]) * _UNITS[match[2]])


def child_memory(text: str) -> int:
    """``--max-memory-per-child``: a size (:func:`memory_size`); a bare number is KiB, as in Celery.

    Celery's ``--max-memory-per-child 12000`` means 12,000 KiB; read as bytes it
    would replace the process after every task.  ``12000B`` is bytes.
    """
    size = memory_size(text)
    return size << 10 if text.strip().isdigit() else size


def memory_limit(text: str) -> int | str:
    """``--memory-limit``: a size (:func:`memory_size`), or ``"auto"``."""
    return "auto" if text.strip().lower() == "auto" else memory_size(text)


@dataclass(frozen=True, kw_only=True)
class WorkerSettings(CommonSettings):
    """The options of ``celeriac worker``, with their defaults.

    ``address``: the scheduler's (``tcp://host:port`` or ``ipc://PATH``).
    ``nprocs``: worker processes the supervisor keeps running (Celery's
    ``-c``/``--concurrency``).
    ``nthreads``: task slots (threads) per process.
    ``queues``: the queues consumed (``-Q``).
    ``name``: prefix of the processes' names (``NAME-0``, ``NAME-1``; default:
    host name and pid).
    ``imports``: modules each worker process imports at start (``-A``); a name
    holding an app (``proj``, ``proj.celery``, ``proj:app``) is resolved as
    Celery does by ``celeriac worker``, which gives its processes
    ``module:attribute``: they import the module and call the app's
    ``finalize()`` (its ``include`` and autodiscovered modules).
    ``keys``: CURVE key directory holding ``worker.key_secret`` and ``scheduler.key``.
    ``max_tasks_per_child``, ``max_memory_per_child`` (bytes): replace a process,
    between tasks, after that many tasks or above that resident memory (0 or
    None: never).
    ``stop_timeout``: seconds running tasks get to finish on SIGTERM.
    ``memory_limit`` (bytes, ``"auto"``, or 0: none) and ``local_directory``: see
    :mod:`celeriac.worker.memory`.
    ``listen_address``, ``contact_address``, ``insecure``: where each process
    serves the results it keeps (between hosts) and what peers are told.
    ``log_level``: see :class:`~celeriac.options.CommonSettings`.
    """

    address: str = option(
        DEFAULT_ADDRESS,
        positional=True,
        help="scheduler address (default: $CELERIAC_ADDRESS or [worker] address)",
    )
    nprocs: int = option(
        1,
        flags=("-c", "--nprocs", "--concurrency"),
        metavar="N",
        help="worker processes to run (Celery's -c/--concurrency: its prefork pool's processes)",
    )
    nthreads: int = option(1, metavar="N", help="task slots (threads) per process")
    queues: tuple[str, ...] = option(
        ("default",), flags=("-Q", "--queues"), help="comma-separated queues to consume"
    )
    name: str | None = option(None, help="name prefix for the worker processes")
    imports: tuple[str, ...] = option(
        (),
        flags=("-A", "--import", "--app"),
        repeat=True,
        metavar="MODULE",
        before_command=True,
        help="module to import in each worker process, or a Celery-style app found as Celery "
        "finds it: proj (its app, or proj.celery's or proj.celeriac's), proj.module, "
        "proj:app; the app's include and autodiscovered modules are imported too. One that "
        "fails to import stops the worker (exit 78). Repeatable",
    )
    keys: str | None = option(
        None,
        parse=path,
        metavar="DIR",
        help="CURVE key directory with worker.key_secret and scheduler.key "
        "(default: $CELERIAC_KEYS)",
    )
    max_tasks_per_child: int | None = option(
        None,
        metavar="N",
        help="replace a worker process after it ran N tasks (nothing is lost)",
    )
    max_memory_per_child: int | None = option(
        None,
        parse=child_memory,
        metavar="SIZE",
        help="replace a worker process, between tasks, once its resident memory "
        "exceeds SIZE (e.g. 500MB, 2GB; a bare number is KiB, as in Celery)",
    )
    stop_timeout: float = option(
        30.0, help="seconds running tasks get to finish on SIGTERM before they are killed"
    )
    memory_limit: int | str = option(
        "auto",
        parse=memory_limit,
        metavar="SIZE",
        help="memory each worker process may use, e.g. 4GB (0: no limit; auto: the "
        "machine's memory / --nprocs): past 60% the results it keeps spill to disk, "
        "past 80% it takes no new tasks, past 95% it is restarted",
    )
    local_directory: str | None = option(
        None,
        parse=path,
        metavar="DIR",
        help="where kept results spill to disk (default: the system's temporary directory)",
    )
    listen_address: str | None = option(
        None,
        metavar="HOST[:PORT]",
        help="where each worker process serves the results it keeps to other workers and "
        "clients (default: the interface that reaches the scheduler, any free port; "
        "a port given is the first process's, the next ones count up)",
    )
    contact_address: str | None = option(
        None,
        metavar="HOST[:PORT]",
        help="the address peers are told to fetch results at, when they reach this host "
        "by another name than --listen-address (containers, NAT)",
    )
    insecure: bool = option(
        False,
        help="serve results on a non-loopback --listen-address without CURVE keys "
        "(a network you trust)",
    )


@dataclass(frozen=True)
class ChildSettings:
    """What differs between the worker processes of one supervisor.

    ``identity``: the routing id the supervisor reports the process's death
    under (default: a random one).  ``control_fd``: the write end of the pipe
    hard time limits are reported on (default: none).  ``index``: the process's
    place among the supervisor's, which names it ``NAME-INDEX`` when the
    settings give a name.  ``parent_pid``: exit when this process is gone.
    """

    identity: bytes | None = None
    control_fd: int | None = None
    index: int | None = None
    parent_pid: int | None = None

    def name(self, settings: WorkerSettings) -> str | None:
        """This process's name: ``NAME-INDEX``, or the settings' name as it is (None: unnamed)."""
        if settings.name and self.index is not None:
            return f"{settings.name}-{self.index}"
        return settings.name

    def to_json(self) -> str:
        """This child's settings as the one JSON argument its command line carries."""
        fields = {
            "identity": None if self.identity is None else self.identity.hex(),
            "control_fd": self.control_fd,
            "index": self.index,
            "parent_pid": self.parent_pid,
        }
        return json.dumps(fields)

    @classmethod
    def from_json(cls, text: str) -> ChildSettings:
        """The settings :meth:`to_json` wrote."""
        fields = json.loads(text)
        identity = fields.pop("identity", None)
        return cls(None if identity is None else bytes.fromhex(identity), **fields)


def child_command(settings: WorkerSettings, child: ChildSettings | None = None) -> list[str]:
    """The command line of one worker process: the supervisor's settings, and ``child``'s."""
    command = [sys.executable, "-m", "celeriac.worker", to_json(settings)]
    if child is not None:
        command.append(child.to_json())
    return command


def read_child_command(argv: list[str]) -> tuple[WorkerSettings, ChildSettings]:
    """What :func:`child_command` put after ``-m celeriac.worker``; ``ValueError`` if garbled."""
    if not 1 <= len(argv) <= 2:
        raise ValueError(f"expected 1 or 2 arguments, not {len(argv)}")
    try:
        settings = from_json(WorkerSettings, argv[0])
        child = ChildSettings.from_json(argv[1]) if len(argv) == 2 else ChildSettings()
    except (TypeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise ValueError(f"not settings written by child_command: {exc}") from None
    return settings, child


def setup_django() -> None:
    """``django.setup()`` once, when ``DJANGO_SETTINGS_MODULE`` is set and Django importable.

    What ``--import`` modules may need first: a task module importing models, an
    app autodiscovering Django's installed apps (Celery's Django fix-up calls it
    as a worker starts, too).  The supervisor and every worker process call it
    before the imports, and again after (a Django project's ``celery.py`` sets
    the variable itself).
    """
    if not os.environ.get("DJANGO_SETTINGS_MODULE"):
        return
    try:
        django = importlib.import_module("django")
        apps = importlib.import_module("django.apps").apps
    except ImportError:
        return
    if not apps.ready:
        django.setup()
