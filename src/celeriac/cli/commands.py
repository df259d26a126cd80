"""What ``celeriac scheduler``, ``worker``, ``keys`` and ``periodic`` do with their parsed flags.

The scheduler's and the worker's modules are imported inside the commands, so a command
loads only the side it runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from celeriac.cli.inspect import UNREACHABLE, table
from celeriac.wire.addresses import InsecureBindError, is_loopback

if TYPE_CHECKING:
    from celeriac.scheduler.journal import Journal
    from celeriac.scheduler.server import SchedulerServer

log = logging.getLogger("celeriac")

DASHBOARD_PORT = 8787


def run_scheduler(args: argparse.Namespace) -> int:
    from celeriac.client.cluster import DASHBOARD_AT, LISTENING

    try:
        server = _scheduler_server(args)
    except InsecureBindError as exc:
        log.error("%s", exc)
        return 2
    except Exception as exc:  # e.g. address in use
        log.error("cannot start the scheduler on %s:%s: %s", args.host, args.port, exc)
        return 1
    if args.schedule and not _install_schedule(server, args.schedule):
        return 2
    _on_stop_signals(server.stop)
    if server.dashboard is not None:  # first: the listening line means "ready"
        print(f"{DASHBOARD_AT}{server.dashboard.address}", flush=True)
    if server.ipc_address is not None:
        log.info("scheduler listening at %s", server.ipc_address)
        print(f"{LISTENING}{server.ipc_address}", flush=True)
    log.info("scheduler listening at %s", server.address)
    print(f"{LISTENING}{server.address}", flush=True)  # last: it means "ready"
    server.serve_forever()
    log.info("scheduler stopped")
    return 0


def _scheduler_server(args: argparse.Namespace) -> SchedulerServer:
    from celeriac.scheduler.server import SchedulerServer
    from celeriac.scheduler.state import SchedulerConfig

    config = SchedulerConfig(
        worker_timeout=args.worker_timeout,
        heartbeat_interval=args.heartbeat_interval,
        prefetch=args.prefetch,
        allowed_failures=args.allowed_failures,
        max_message_bytes=args.max_message_size,
    )
    return SchedulerServer(
        args.host,
        args.port,
        config,
        insecure=args.insecure,
        parent_pid=args.parent_pid,
        journal=_open_journal(args),
        keys=Path(args.keys) if args.keys else None,
        dashboard=dashboard_bind(args),
        ipc=args.ipc,
        busy_poll=args.busy_poll,
    )


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


def dashboard_bind(args: argparse.Namespace) -> tuple[str, int] | None:
    """Where the scheduler serves its dashboard, or None; raises :class:`InsecureBindError`."""
    if args.no_dashboard:
        return None
    if not is_loopback(args.dashboard_host) and not args.insecure:
        raise InsecureBindError(
            f"refusing to serve the dashboard on {args.dashboard_host!r}: it shows task "
            "names and tracebacks; keep it on loopback or pass --insecure"
        )
    if args.dashboard_port is not None:
        return args.dashboard_host, args.dashboard_port
    return args.dashboard_host, (0 if args.port == 0 else DASHBOARD_PORT)


def journal_path(args: argparse.Namespace) -> Path | None:
    """The journal the scheduler opens, or None to keep everything in memory."""
    from celeriac.scheduler.journal import default_path

    if args.no_journal:
        return None
    if args.journal:
        return Path(args.journal)
    # an ephemeral port (0) has no stable identity to recover under
    return default_path(args.port) if args.port else None


def _open_journal(args: argparse.Namespace) -> Journal | None:
    from celeriac.scheduler.journal import Journal

    path = journal_path(args)
    if path is None:
        return None
    log.info("journal at %s (fsync %s)", path, args.fsync)
    return Journal(path, args.fsync)


def run_worker(args: argparse.Namespace) -> int:
    from celeriac.wire.addresses import normalize
    from celeriac.worker.supervisor import Supervisor, WorkerOptions

    try:
        address = normalize(args.address)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    options = WorkerOptions(
        address=address,
        nprocs=max(1, args.nprocs),
        nthreads=max(1, args.nthreads),
        queues=tuple(args.queues) or ("default",),
        name=args.name,
        log_level=args.log_level,
        imports=tuple(args.imports),
        stop_timeout=args.stop_timeout,
        keys=Path(args.keys) if args.keys else None,
        max_tasks_per_child=args.max_tasks_per_child,
        max_memory_per_child=args.max_memory_per_child,
    )
    supervisor = Supervisor(options, parent_pid=args.parent_pid)
    _on_stop_signals(supervisor.request_stop)
    return supervisor.run()


def _on_stop_signals(stop: Callable[[], object]) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop())


def run_keys(args: argparse.Namespace) -> int:
    from celeriac.wire.security import KeysError, create_keys

    try:
        written = create_keys(args.directory)
    except KeysError as exc:
        log.error("%s", exc)
        return 1
    for path in written:
        print(path)
    return 0


def run_periodic(args: argparse.Namespace) -> int:
    from celeriac.client import Client
    from celeriac.errors import SchedulerUnavailable

    if args.action != "list" and not args.name:
        log.error("periodic %s needs a job name", args.action)
        return 2
    try:
        with Client(args.address, timeout=args.timeout, keys=args.keys) as client:
            jobs = client.periodic(args.action, args.name)
    except (SchedulerUnavailable, ValueError) as exc:  # ValueError: a malformed address
        log.error("%s", exc)
        return UNREACHABLE  # the same status as inspect's, for the same trouble
    except LookupError as exc:  # no job of that name: the command ran, and found nothing
        log.error("%s", exc)
        return 1
    if args.json:
        print(json.dumps(jobs, indent=2))
    else:
        print(table(jobs, ["name", "schedule", "next_run", "last_run", "last_status", "paused"]))
    return 0
