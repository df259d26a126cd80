"""``celeriac``: the command line.  Heavy imports happen inside the commands."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from celeriac.addresses import DEFAULT_ADDRESS, DEFAULT_PORT, InsecureBindError, is_loopback

DASHBOARD_PORT = 8787


if TYPE_CHECKING:
    from celeriac.scheduler.journal import Journal

log = logging.getLogger("celeriac")


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging threshold (default: %(default)s)",
    )
    # Used by the embedded cluster: exit when this process (the one that started us) does.
    common.add_argument("--parent-pid", type=int, help=argparse.SUPPRESS)
    return common


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="celeriac",
        description="Celeriac: a distributed task executor (scheduler, workers, tools).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = _common()
    _add_scheduler(commands, common)
    _add_worker(commands, common)
    _add_periodic(commands, common)
    _add_keys(commands, common)
    return parser


def _add_keys(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = commands.add_parser(
        "keys",
        parents=[common],
        help="create CURVE keys for the scheduler, workers and clients",
        description="Create CURVE key pairs in DIR: scheduler.key_secret stays on the "
        "scheduler; give scheduler.key and worker.key_secret to workers, scheduler.key and "
        "client.key_secret to clients. DIR/authorized lists the public keys the scheduler "
        "admits. See docs/security.md.",
    )
    p.add_argument("action", choices=["create"], help="what to do")
    p.add_argument("directory", metavar="DIR", help="where to write the keys")
    p.set_defaults(run=run_keys)


def _add_periodic(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = commands.add_parser(
        "periodic",
        parents=[common],
        help="list and manage periodic jobs",
        description="List the scheduler's periodic jobs, or pause, resume, remove or run one now.",
    )
    p.add_argument(
        "action", choices=["list", "pause", "resume", "remove", "run-now"], help="what to do"
    )
    p.add_argument("name", nargs="?", help="the job (all actions but list)")
    p.add_argument(
        "--scheduler",
        default=os.environ.get("CELERIAC_ADDRESS", DEFAULT_ADDRESS),
        help="scheduler address (default: $CELERIAC_ADDRESS or %(default)s)",
    )
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the scheduler")
    p.set_defaults(run=run_periodic)


def _add_scheduler(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = commands.add_parser(
        "scheduler",
        parents=[common],
        help="run the scheduler",
        description="Run the central scheduler. Stop it with SIGTERM or Ctrl-C.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind")
    p.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="port to bind; 0 picks a free one"
    )
    p.add_argument(
        "--insecure",
        action="store_true",
        help="allow binding a non-loopback address without authentication",
    )
    p.add_argument(
        "--keys",
        metavar="DIR",
        default=os.environ.get("CELERIAC_KEYS"),
        help="CURVE key directory (celeriac keys create): encrypt, and admit only the "
        "public keys in DIR/authorized (default: $CELERIAC_KEYS)",
    )
    p.add_argument(
        "--worker-timeout",
        type=float,
        default=5.0,
        help="seconds without a heartbeat before a worker is declared lost",
    )
    p.add_argument(
        "--heartbeat-interval", type=float, default=0.5, help="seconds between worker heartbeats"
    )
    p.add_argument(
        "--prefetch", type=int, default=2, help="tasks queued on a worker beyond its slots"
    )
    p.add_argument(
        "--allowed-failures",
        type=int,
        default=3,
        help="worker deaths a task may cause before it fails with KilledWorker",
    )
    p.add_argument(
        "--max-message-size",
        type=int,
        default=1 << 30,
        help="largest message accepted, in bytes",
    )
    journal = p.add_mutually_exclusive_group()
    journal.add_argument(
        "--journal",
        metavar="PATH",
        help="SQLite journal of accepted work, recovered on restart "
        "(default: $XDG_STATE_HOME/celeriac/scheduler-PORT.sqlite3)",
    )
    journal.add_argument(
        "--no-journal",
        action="store_true",
        help="keep everything in memory only: a restart loses queued work",
    )
    p.add_argument(
        "--fsync",
        choices=["always", "batch", "never"],
        default="batch",
        help="when journal commits reach the disk (see docs/reliability.md)",
    )
    dashboard = p.add_mutually_exclusive_group()
    dashboard.add_argument(
        "--dashboard-port",
        type=int,
        help="port of the web dashboard, on --dashboard-host (default: 8787; with --port 0, "
        "a free one)",
    )
    dashboard.add_argument("--no-dashboard", action="store_true", help="serve no dashboard")
    p.add_argument("--dashboard-host", default="127.0.0.1", help="address the dashboard binds")
    p.add_argument(
        "--schedule",
        metavar="TOML",
        help="file of periodic jobs to install at start (see docs/periodic.md)",
    )
    p.set_defaults(run=run_scheduler)


def _add_worker(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = commands.add_parser(
        "worker",
        parents=[common],
        help="run worker processes",
        description="Start worker processes that execute tasks, and restart any that die. "
        "SIGTERM stops them gracefully: running tasks finish, queued ones are handed back.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("address", help="scheduler address, e.g. tcp://127.0.0.1:8786")
    p.add_argument("--nprocs", type=int, default=1, help="worker processes to run")
    p.add_argument("--nthreads", type=int, default=1, help="task slots (threads) per process")
    p.add_argument("--queues", default="default", help="comma-separated queues to consume")
    p.add_argument("--name", help="name prefix for the worker processes")
    p.add_argument(
        "-A",
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="module to import in each worker process (repeatable)",
    )
    p.add_argument(
        "--keys",
        metavar="DIR",
        default=os.environ.get("CELERIAC_KEYS"),
        help="CURVE key directory with worker.key_secret and scheduler.key "
        "(default: $CELERIAC_KEYS)",
    )
    p.add_argument(
        "--max-tasks-per-child",
        type=int,
        metavar="N",
        help="replace a worker process after it ran N tasks (nothing is lost)",
    )
    p.add_argument(
        "--max-memory-per-child",
        type=_size,
        metavar="SIZE",
        help="replace a worker process, between tasks, once its resident memory "
        "exceeds SIZE (e.g. 500MB, 2GB)",
    )
    p.add_argument(
        "--stop-timeout",
        type=float,
        default=30.0,
        help="seconds running tasks get to finish on SIGTERM before they are killed",
    )
    p.set_defaults(run=run_worker)


def run_scheduler(args: argparse.Namespace) -> int:
    from celeriac.cluster import DASHBOARD_AT, LISTENING
    from celeriac.scheduler.server import SchedulerServer
    from celeriac.scheduler.state import SchedulerConfig

    config = SchedulerConfig(
        worker_timeout=args.worker_timeout,
        heartbeat_interval=args.heartbeat_interval,
        prefetch=args.prefetch,
        allowed_failures=args.allowed_failures,
        max_message_bytes=args.max_message_size,
    )
    try:
        journal = _open_journal(args)
        server = SchedulerServer(
            args.host,
            args.port,
            config,
            insecure=args.insecure,
            parent_pid=args.parent_pid,
            journal=journal,
            keys=Path(args.keys) if args.keys else None,
            dashboard=_dashboard(args),
        )
    except InsecureBindError as exc:
        log.error("%s", exc)
        return 2
    except Exception as exc:  # e.g. address in use
        log.error("cannot start the scheduler on %s:%s: %s", args.host, args.port, exc)
        return 1
    if args.schedule:
        from celeriac.schedule_file import load_schedule_file

        try:
            server.state.load_periodic(load_schedule_file(args.schedule), time.time())
        except ValueError as exc:
            log.error("%s", exc)
            server.close()
            return 2
    _on_stop_signals(server.stop)
    if server.dashboard is not None:  # first: the listening line means "ready"
        print(f"{DASHBOARD_AT}{server.dashboard.address}", flush=True)
    log.info("scheduler listening at %s", server.address)
    print(f"{LISTENING}{server.address}", flush=True)
    server.serve_forever()
    log.info("scheduler stopped")
    return 0


def _dashboard(args: argparse.Namespace) -> tuple[str, int] | None:
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


def _open_journal(args: argparse.Namespace) -> Journal | None:
    from celeriac.scheduler.journal import Journal, default_path

    if args.no_journal:
        return None
    if args.journal:
        path = args.journal
    elif args.port == 0:
        return None  # an ephemeral port has no stable identity to recover under
    else:
        path = default_path(args.port)
    log.info("journal at %s (fsync %s)", path, args.fsync)
    return Journal(path, args.fsync)


def run_worker(args: argparse.Namespace) -> int:
    from celeriac.addresses import normalize
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
        queues=tuple(q.strip() for q in args.queues.split(",") if q.strip()) or ("default",),
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


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMG]?)I?B?\s*$")
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def _size(text: str) -> int:
    """``"500MB"`` (or ``500MiB``, ``2G``, ``1024``) -> bytes, in binary units as ``top`` shows."""
    match = _SIZE.match(text.upper())
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size like 500MB or 2GB")
    return int(float(match[1]) * _UNITS[match[2]])


def run_keys(args: argparse.Namespace) -> int:
    from celeriac.security import KeysError, create_keys

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
        with Client(args.scheduler, timeout=args.timeout) as client:
            jobs = client.periodic(args.action, args.name)
    except SchedulerUnavailable as exc:
        log.error("%s", exc)
        return 1
    except LookupError as exc:
        log.error("%s", exc)
        return 2
    if args.json:
        print(json.dumps(jobs, indent=2))
    else:
        print(_table(jobs, ["name", "schedule", "next_run", "last_run", "last_status", "paused"]))
    return 0


def _table(rows: list[dict[str, object]], columns: list[str]) -> str:
    cells = [columns] + [[str(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells)


def _on_stop_signals(stop: object) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop())  # type: ignore[operator]


def main(argv: list[str] | None = None) -> int:
    from celeriac.logs import setup_logging

    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
