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
from typing import TYPE_CHECKING, Any

from celeriac.addresses import (
    DEFAULT_ADDRESS,
    DEFAULT_PORT,
    InsecureBindError,
    bind_refusal,
    is_loopback,
)
from celeriac.config import comma_list, path_arg

DASHBOARD_PORT = 8787


if TYPE_CHECKING:
    from celeriac.config import Resolved
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
    common.add_argument(
        "--config",
        metavar="PATH",
        help="TOML configuration file (default: $CELERIAC_CONFIG); see docs/deployment.md",
    )
    # Used by the embedded cluster: exit when this process (the one that started us) does.
    common.add_argument("--parent-pid", type=int, help=argparse.SUPPRESS)
    return common


def _check_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--check",
        action="store_true",
        help="validate the configuration, print the effective settings and exit "
        "(0 when valid), binding and starting nothing",
    )


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
    _add_inspect(commands, common)
    _add_keys(commands, common)
    return parser


def _add_inspect(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = commands.add_parser(
        "inspect",
        aliases=["status"],
        parents=[common],
        help="show the scheduler's workers, queues, tasks, periodic jobs and failures",
        description="Show what the scheduler sees. Exits 2 when no scheduler answers "
        "within --timeout: usable as a health check.",
    )
    p.add_argument(
        "address",
        nargs="?",
        default=DEFAULT_ADDRESS,
        help="scheduler address (default: $CELERIAC_ADDRESS, [client] address, or %(default)s)",
    )
    _client_options(p)
    p.set_defaults(run=run_inspect, config_section="client")


def _client_options(p: argparse.ArgumentParser) -> None:
    """Options of the commands that connect to a scheduler as a client."""
    p.add_argument("--json", action="store_true", help="print JSON, for scripts")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the scheduler")
    p.add_argument(
        "--keys",
        metavar="DIR",
        type=path_arg,
        help="CURVE key directory with client.key_secret and scheduler.key "
        "(default: $CELERIAC_KEYS)",
    )


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
        "--address",
        dest="address",
        default=DEFAULT_ADDRESS,
        help="scheduler address (default: $CELERIAC_ADDRESS, [client] address, or %(default)s)",
    )
    _client_options(p)
    p.set_defaults(run=run_periodic, config_section="client")


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
        type=path_arg,
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
        type=path_arg,
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
        type=path_arg,
        help="file of periodic jobs to install at start (see docs/periodic.md)",
    )
    _check_flag(p)
    p.set_defaults(run=run_scheduler, config_section="scheduler")


def _add_worker(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = commands.add_parser(
        "worker",
        parents=[common],
        help="run worker processes",
        description="Start worker processes that execute tasks, and restart any that die. "
        "SIGTERM stops them gracefully: running tasks finish, queued ones are handed back.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "address",
        nargs="?",
        default=DEFAULT_ADDRESS,
        help="scheduler address (default: $CELERIAC_ADDRESS or [worker] address)",
    )
    p.add_argument("--nprocs", type=int, default=1, help="worker processes to run")
    p.add_argument("--nthreads", type=int, default=1, help="task slots (threads) per process")
    p.add_argument(
        "--queues", type=comma_list, default="default", help="comma-separated queues to consume"
    )
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
        type=path_arg,
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
    _check_flag(p)
    p.set_defaults(run=run_worker, config_section="worker")


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
    from celeriac.scheduler.journal import Journal

    path = _journal_path(args)
    if path is None:
        return None
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
        with Client(args.address, timeout=args.timeout, keys=args.keys) as client:
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
    return "\n".join(
        "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells
    )


# -- inspect -----------------------------------------------------------------------------

#: Exit status of ``inspect`` when no scheduler answers: health checks key on it.
UNREACHABLE = 2


def run_inspect(args: argparse.Namespace) -> int:
    from celeriac.client import Client
    from celeriac.errors import SchedulerUnavailable

    try:
        with Client(args.address, timeout=args.timeout, keys=args.keys) as client:
            info = client.scheduler_info(timeout=args.timeout)
    except SchedulerUnavailable as exc:
        log.error("%s", exc)
        return UNREACHABLE
    except ValueError as exc:  # a malformed address
        log.error("%s", exc)
        return UNREACHABLE
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True, default=str))
    else:
        print(format_info(info, time.time()))
    return 0


def format_info(info: dict[str, Any], now: float) -> str:
    """The ``inspect`` report: one titled table per part of the scheduler's info."""
    about = info.get("scheduler", {})
    head = (
        f"scheduler {about.get('address', '?')}  pid {about.get('pid', '?')}  "
        f"tasks {info.get('tasks', 0)}  clients {info.get('clients', 0)}"
    )
    counters = info.get("counters", {})
    if counters:
        head += "\n" + "  ".join(f"{k} {v}" for k, v in sorted(counters.items()))
    parts = [head]
    workers = [
        {
            "name": w.get("name"),
            "pid": w.get("pid"),
            "slots": w.get("slots"),
            "running": w.get("running", "-"),
            "assigned": w.get("assigned"),
            "memory": _mib(w.get("memory")),
            "heartbeat": _ago(w.get("last_seen"), now),
            "queues": ",".join(w.get("queues", [])),
        }
        for w in info.get("workers", [])
    ]
    parts.append(_section(f"workers ({len(workers)})", workers))
    queues = []
    oldest = info.get("queue_oldest", {})
    for name, depth in sorted(info.get("queues", {}).items()):
        queues.append(
            {"queue": name, "depth": depth, "oldest waiting": _ago(oldest.get(name), now)}
        )
    parts.append(_section("queues", queues))
    states = [{"state": k, "count": v} for k, v in sorted(info.get("by_state", {}).items())]
    parts.append(_section("tasks by state", states))
    periodic = [
        {k: job.get(k) for k in ("name", "schedule", "next_run", "last_run", "last_status")}
        | {"paused": "yes" if job.get("paused") else ""}
        for job in info.get("periodic", [])
    ]
    parts.append(_section("periodic jobs", periodic))
    if "failures" in info:
        failures = [
            {
                "when": _ago(f.get("time"), now),
                "name": f.get("name"),
                "id": f.get("key"),
                "error": _last_line(f.get("text", "")),
            }
            for f in reversed(info["failures"][-10:])
        ]
        parts.append(_section("recent failures", failures))
    return "\n\n".join(parts)


def _section(title: str, rows: list[dict[str, Any]]) -> str:
    if not rows:
        return f"{title}: none"
    return f"{title}:\n" + _table(
        [{k: _cell(v) for k, v in r.items()} for r in rows], list(rows[0])
    )


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def _mib(value: Any) -> str:
    return f"{value / (1 << 20):.0f} MiB" if isinstance(value, int | float) and value else "-"


def _ago(when: Any, now: float) -> str:
    if not isinstance(when, int | float):
        return "-"
    return f"{max(0.0, now - when):.1f}s ago"


def _last_line(text: str) -> str:
    lines = [line for line in str(text).strip().splitlines() if line.strip()]
    return lines[-1][:120] if lines else ""


# -- --check ---------------------------------------------------------------------------------


def run_check(args: argparse.Namespace, resolved: Resolved) -> int:
    """Validate the settings of ``scheduler`` or ``worker`` without starting anything."""
    from celeriac.config import describe

    parser = _subparser(args.command)
    print(f"# celeriac {args.command}: effective settings")
    if resolved.config_path:
        print(f"# config file: {resolved.config_path}")
    print(describe(resolved, parser))
    if args.command == "scheduler":
        journal = _journal_path(args)
        print(f"# journal file: {journal or 'none (memory only)'}")
    errors = check_scheduler(args) if args.command == "scheduler" else check_worker(args)
    for error in errors:
        print(f"celeriac {args.command}: error: {error}", file=sys.stderr)
    if errors:
        return 2
    print(f"celeriac {args.command}: configuration OK", file=sys.stderr)
    return 0


def _subparser(command: str) -> argparse.ArgumentParser:
    from celeriac.config import _subparsers

    return _subparsers(build_parser())[command]


def check_scheduler(args: argparse.Namespace) -> list[str]:
    errors = _positive(
        args,
        worker_timeout="--worker-timeout",
        heartbeat_interval="--heartbeat-interval",
        max_message_size="--max-message-size",
    )
    errors += _non_negative(args, prefetch="--prefetch", allowed_failures="--allowed-failures")
    if args.heartbeat_interval >= args.worker_timeout > 0:
        errors.append("--heartbeat-interval must be shorter than --worker-timeout")
    errors += _host_error(args.host, "--host") + _port_error(args.port, "--port")
    refusal = bind_refusal(args.host, insecure=args.insecure, keys=args.keys)
    if refusal is not None:
        errors.append(f"--host: {refusal}")
    if not args.no_dashboard:
        errors += _host_error(args.dashboard_host, "--dashboard-host")
        if args.dashboard_port is not None:
            errors += _port_error(args.dashboard_port, "--dashboard-port")
        try:
            _dashboard(args)
        except InsecureBindError as exc:
            errors.append(str(exc))
    if args.keys:
        from celeriac.security import allowlist_problem

        errors += _key_errors(Path(args.keys), ["scheduler.key_secret"])
        if (problem := allowlist_problem(args.keys)) is not None:
            errors.append(f"--keys: {problem}")
    errors += _journal_errors(args)
    if args.schedule:
        from celeriac.schedule_file import load_schedule_file

        try:
            load_schedule_file(args.schedule)
        except ValueError as exc:
            errors.append(f"--schedule: {exc}")
    return errors


def check_worker(args: argparse.Namespace) -> list[str]:
    from celeriac.addresses import normalize

    errors = _positive(args, nprocs="--nprocs", nthreads="--nthreads")
    errors += _non_negative(args, stop_timeout="--stop-timeout")
    errors += _positive(
        args,
        max_tasks_per_child="--max-tasks-per-child",
        max_memory_per_child="--max-memory-per-child",
    )
    try:
        normalize(args.address)
    except ValueError as exc:
        errors.append(f"address: {exc}")
    if not args.queues:
        errors.append("--queues names no queue")
    if args.keys:
        errors += _key_errors(Path(args.keys), ["worker.key_secret", "scheduler.key"])
    errors += _import_errors(args.imports)
    return errors


def _positive(args: argparse.Namespace, **options: str) -> list[str]:
    return [
        f"{flag} must be positive, not {getattr(args, dest)}"
        for dest, flag in options.items()
        if getattr(args, dest) is not None and not getattr(args, dest) > 0
    ]


def _non_negative(args: argparse.Namespace, **options: str) -> list[str]:
    return [
        f"{flag} must not be negative, not {getattr(args, dest)}"
        for dest, flag in options.items()
        if getattr(args, dest) is not None and not getattr(args, dest) >= 0
    ]


_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?(\.[A-Za-z0-9_-]+)*$"
)


def _host_error(host: str, option: str) -> list[str]:
    import ipaddress

    try:
        ipaddress.ip_address(host.strip("[]"))
        return []
    except ValueError:
        pass
    if host == "*" or _HOSTNAME.match(host):
        return []
    return [f"{option} {host!r} is neither an IP address nor a host name"]


def _port_error(port: int, option: str) -> list[str]:
    return [] if 0 <= port < 65536 else [f"{option} {port} is out of range 0-65535"]


def _key_errors(directory: Path, files: list[str]) -> list[str]:
    if not directory.is_dir():
        return [f"--keys: {directory} is not a directory; create it with `celeriac keys create`"]
    return [
        f"--keys: {directory / f} does not exist" for f in files if not (directory / f).is_file()
    ]


def _journal_path(args: argparse.Namespace) -> Path | None:
    """The journal the scheduler would open (as :func:`_open_journal` decides)."""
    from celeriac.scheduler.journal import default_path

    if args.no_journal:
        return None
    if args.journal:
        return Path(args.journal)
    # an ephemeral port (0) has no stable identity to recover under
    return default_path(args.port) if args.port else None


def _journal_errors(args: argparse.Namespace) -> list[str]:
    path = _journal_path(args)
    if path is None:
        return []
    if path.exists():
        if not path.is_file():
            return [f"journal {path} exists and is not a file"]
        if not os.access(path, os.R_OK | os.W_OK):
            return [f"journal {path} is not readable and writable by this user"]
        return []
    existing = path.parent
    while not existing.exists():  # the scheduler creates the missing directories
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        return [f"journal {path}: cannot create it, {existing} is not writable by this user"]
    return []


def _import_errors(modules: list[str]) -> list[str]:
    """Modules the worker processes would fail to import (they run with ``python -m``)."""
    import importlib.util

    errors = []
    sys.path.insert(0, os.getcwd())  # as `python -m celeriac.worker` will have it
    try:
        for module in modules:
            try:
                found = importlib.util.find_spec(module) is not None
            except (ImportError, ValueError) as exc:
                errors.append(f"--import {module}: {exc}")
                continue
            if not found:
                errors.append(f"--import {module}: no such module")
    finally:
        sys.path.remove(os.getcwd())
    return errors


def _on_stop_signals(stop: object) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop())  # type: ignore[operator]


def main(argv: list[str] | None = None) -> int:
    from celeriac.config import ConfigError, parse
    from celeriac.logs import setup_logging

    parser = build_parser()
    try:
        resolved = parse(parser, argv)
    except ConfigError as exc:
        parser.exit(2, f"celeriac: error: {exc}\n")
    args = resolved.args
    setup_logging(args.log_level)
    for warning in resolved.warnings:
        log.warning("%s", warning)
    if getattr(args, "check", False):
        return run_check(args, resolved)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
