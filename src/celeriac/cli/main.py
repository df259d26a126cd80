"""``celeriac``: the command line's parsers, and ``main``, which runs the chosen command.

What each command does is in :mod:`celeriac.cli.commands`, :mod:`celeriac.cli.inspect` and
:mod:`celeriac.cli.checks` (``--check``).  :mod:`celeriac.cli.config` reads the options, their
defaults and config sections from these parsers, so every setting is declared once, here.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys

from celeriac.cli.checks import run_check
from celeriac.cli.commands import run_keys, run_periodic, run_scheduler, run_worker
from celeriac.cli.config import ConfigError, comma_list, parse, path_arg
from celeriac.cli.inspect import run_inspect
from celeriac.wire.addresses import DEFAULT_ADDRESS, DEFAULT_PORT

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
        epilog="Exit status: 0 done; 1 no job of that name; 2 no scheduler answered (as for "
        "inspect), or a usage error.",
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
        "--ipc",
        metavar="PATH",
        type=path_arg,
        help="also listen on a Unix socket at PATH (made 0660; its directory decides who "
        "can reach it): clients and workers on this machine connect to ipc://PATH, "
        "faster than TCP",
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
    _scheduling_options(p)
    _journal_options(p)
    _dashboard_options(p)
    p.add_argument(
        "--schedule",
        metavar="TOML",
        type=path_arg,
        help="file of periodic jobs to install at start (see docs/periodic.md)",
    )
    _check_flag(p)
    p.set_defaults(run=run_scheduler, config_section="scheduler")


def _scheduling_options(p: argparse.ArgumentParser) -> None:
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
        "--busy-poll",
        type=_busy_poll,
        default=0.0003,
        metavar="SECONDS",
        help="while messages come close together, keep asking for the next this long "
        "before sleeping (yielding the CPU to anything else that wants it); 0 never does",
    )
    p.add_argument(
        "--max-message-size",
        type=int,
        default=1 << 30,
        help="largest message accepted, in bytes",
    )


def _journal_options(p: argparse.ArgumentParser) -> None:
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


def _dashboard_options(p: argparse.ArgumentParser) -> None:
    dashboard = p.add_mutually_exclusive_group()
    dashboard.add_argument(
        "--dashboard-port",
        type=int,
        help="port of the web dashboard, on --dashboard-host (default: 8787; with --port 0, "
        "a free one)",
    )
    dashboard.add_argument("--no-dashboard", action="store_true", help="serve no dashboard")
    p.add_argument("--dashboard-host", default="127.0.0.1", help="address the dashboard binds")


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
    _recycling_options(p)
    p.add_argument(
        "--stop-timeout",
        type=float,
        default=30.0,
        help="seconds running tasks get to finish on SIGTERM before they are killed",
    )
    _check_flag(p)
    p.set_defaults(run=run_worker, config_section="worker")


def _recycling_options(p: argparse.ArgumentParser) -> None:
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


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMG]?)I?B?\s*$")
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def _busy_poll(text: str) -> float:
    """Seconds, 0 to 0.01: longer would keep the loop spinning between heartbeats."""
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= seconds <= 0.01:
        raise argparse.ArgumentTypeError(f"must be 0 to 0.01 s, not {text}")
    return seconds


def _size(text: str) -> int:
    """``"500MB"`` (or ``500MiB``, ``2G``, ``1024``) -> bytes, in binary units as ``top`` shows."""
    match = _SIZE.match(text.upper())
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size like 500MB or 2GB")
    return int(float(match[1]) * _UNITS[match[2]])


def main(argv: list[str] | None = None) -> int:
    """Run the command ``argv`` names (default: ``sys.argv[1:]``); its exit status."""
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
        return run_check(args, resolved, parser)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
