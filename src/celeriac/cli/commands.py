"""What ``celeriac scheduler``, ``worker``, ``keys`` and ``periodic`` do with their settings.

The server, the supervisor and the client are imported inside the commands, so a command
loads only the side it runs (the settings modules are small).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from celeriac.cli.inspect import UNREACHABLE, table
from celeriac.cli.settings import Invocation, KeysSettings, PeriodicSettings
from celeriac.scheduler.settings import SchedulerSettings
from celeriac.wire.addresses import InsecureBindError
from celeriac.worker.settings import EX_CONFIG, WorkerSettings

if TYPE_CHECKING:
    from celeriac.scheduler.server import SchedulerServer

log = logging.getLogger("celeriac")


def run_scheduler(settings: SchedulerSettings, invocation: Invocation) -> int:
    """Serve as ``settings`` say until SIGTERM/SIGINT; 2 for a refused bind, a damaged or
    unusable journal or a bad ``--schedule`` file, 1 when it cannot listen.
    ``invocation.parent_pid``: stop with it."""
    from celeriac.client.cluster import DASHBOARD_AT, LISTENING
    from celeriac.scheduler.journal import JournalError
    from celeriac.scheduler.server import SchedulerServer

    server = SchedulerServer(settings, parent_pid=invocation.parent_pid)
    if (journal := settings.journal_path()) is not None:
        log.info("journal at %s (fsync %s)", journal, settings.fsync)
    try:
        server.start()
    except (InsecureBindError, JournalError) as exc:  # one line naming the file and the problem
        log.error("%s", exc)
        return 2
    except Exception as exc:  # e.g. address in use
        log.error("cannot start the scheduler on %s:%s: %s", settings.host, settings.port, exc)
        return 1
    if settings.schedule and not _install_schedule(server, settings.schedule):
        return 2
    _on_stop_signals(server.stop)
    if server.dashboard is not None:  # first: the listening line means "ready"
        print(f"{DASHBOARD_AT}{server.dashboard.link}", flush=True)  # with its token
    if server.ipc_address is not None:
        log.info("scheduler listening at %s", server.ipc_address)
        print(f"{LISTENING}{server.ipc_address}", flush=True)
    log.info("scheduler listening at %s", server.address)
    print(f"{LISTENING}{server.address}", flush=True)  # last: it means "ready"
    server.serve_forever()
    log.info("scheduler stopped")
    return 0


def _install_schedule(server: SchedulerServer, path: str | Path) -> bool:
    """Load the ``--schedule`` file into the scheduler; on error log it and close the server."""
    from celeriac.cli.schedule_file import load_schedule_file

    try:
        server.state.load_periodic(load_schedule_file(path), time.time())
    except ValueError as exc:
        log.error("%s", exc)
        server.close()
        return False
    return True


def run_worker(settings: WorkerSettings, invocation: Invocation) -> int:
    """Supervise ``settings.nprocs`` worker processes until SIGTERM/SIGINT; 2 for a bad
    address, :data:`~celeriac.worker.settings.EX_CONFIG` (78) when an ``-A`` module or app
    fails to load, here before any worker process starts or in one as it starts.
    ``invocation.parent_pid``: stop with it."""
    from celeriac.cli.apps import AppNotLoaded, load
    from celeriac.wire.addresses import normalize
    from celeriac.worker.supervisor import Supervisor

    try:
        address = normalize(settings.address)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    try:  # here, once: a module that cannot load must not be retried in every child forever
        loaded = load(settings.imports)
    except AppNotLoaded as exc:
        log.error("%s%s", exc, f"\n{exc.details}" if exc.details else "")
        log.error("not starting the worker processes (exit %d)", EX_CONFIG)
        return EX_CONFIG
    for found in loaded:
        if found.app is not None:
            log.info("-A %s: the app %r, at %s", found.name, found.app.main, found.spec)
    settings = dataclasses.replace(  # what --check calls errors, a worker makes do with
        settings,
        imports=tuple(found.spec for found in loaded),
        address=address,
        nprocs=max(1, settings.nprocs),
        nthreads=max(1, settings.nthreads),
        queues=settings.queues or ("default",),
        keys=settings.keys or None,
    )
    supervisor = Supervisor(settings, parent_pid=invocation.parent_pid)
    _on_stop_signals(supervisor.request_stop)
    return supervisor.run()


def _on_stop_signals(stop: Callable[[], object]) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop())


def run_keys(settings: KeysSettings, invocation: Invocation) -> int:
    """Create the key pairs in ``settings.directory`` and print their paths; 1 on failure."""
    from celeriac.wire.security import KeysError, create_keys

    try:
        written = create_keys(settings.directory)
    except KeysError as exc:
        log.error("%s", exc)
        return 1
    for path in written:
        print(path)
    return 0


def run_periodic(settings: PeriodicSettings, invocation: Invocation) -> int:
    """Do ``settings.action`` to the job ``settings.name`` and print the jobs; 1 for no
    such job, 2 when no scheduler answers or the action needs a name."""
    from celeriac.client import Client
    from celeriac.errors import SchedulerUnavailable

    if settings.action != "list" and not settings.name:
        log.error("periodic %s needs a job name", settings.action)
        return 2
    try:
        with Client(settings.address, timeout=settings.timeout, keys=settings.keys) as client:
            jobs = client.periodic(settings.action, settings.name)
    except (SchedulerUnavailable, ValueError) as exc:  # ValueError: a malformed address
        log.error("%s", exc)
        return UNREACHABLE  # the same status as inspect's, for the same trouble
    except LookupError as exc:  # no job of that name: the command ran, and found nothing
        log.error("%s", exc)
        return 1
    if settings.json:
        print(json.dumps(jobs, indent=2))
    else:
        print(table(jobs, ["name", "schedule", "next_run", "last_run", "last_status", "paused"]))
    return 0
