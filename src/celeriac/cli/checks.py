"""``--check``: validate the settings of ``scheduler`` or ``worker`` without starting anything.

Each check returns a list of messages naming the option at fault, so one run reports every
problem at once instead of the first one the command would have tripped on.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

from celeriac.cli.commands import dashboard_bind, journal_path
from celeriac.cli.config import Resolved, _subparsers, describe
from celeriac.wire.addresses import InsecureBindError, bind_refusal, ipc_address, not_a_socket


def run_check(args: argparse.Namespace, resolved: Resolved, parser: argparse.ArgumentParser) -> int:
    """Print the effective settings, then any errors; 2 when there are errors, else 0.

    ``parser`` is the whole ``celeriac`` parser that parsed ``args``.
    """
    print(f"# celeriac {args.command}: effective settings")
    if resolved.config_path:
        print(f"# config file: {resolved.config_path}")
    print(describe(resolved, _subparsers(parser)[args.command]))
    if args.command == "scheduler":
        print(f"# journal file: {journal_path(args) or 'none (memory only)'}")
    errors = check_scheduler(args) if args.command == "scheduler" else check_worker(args)
    for error in errors:
        print(f"celeriac {args.command}: error: {error}", file=sys.stderr)
    if errors:
        return 2
    print(f"celeriac {args.command}: configuration OK", file=sys.stderr)
    return 0


def check_scheduler(args: argparse.Namespace) -> list[str]:
    """What would stop ``celeriac scheduler`` with these flags from starting or serving."""
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
    errors += _dashboard_errors(args)
    errors += _scheduler_key_errors(args)
    errors += _journal_errors(args)
    errors += _schedule_errors(args)
    errors += _ipc_errors(args.ipc)
    return errors


def check_worker(args: argparse.Namespace) -> list[str]:
    """What would stop ``celeriac worker`` with these flags from starting or running tasks."""
    from celeriac.wire.addresses import normalize

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
    return _out_of_bounds(args, options, lambda value: value > 0, "must be positive")


def _non_negative(args: argparse.Namespace, **options: str) -> list[str]:
    return _out_of_bounds(args, options, lambda value: value >= 0, "must not be negative")


def _out_of_bounds(
    args: argparse.Namespace,
    options: dict[str, str],
    within: Callable[[float], bool],
    rule: str,
) -> list[str]:
    """``options`` maps a dest to its flag; an unset option (None) is never at fault."""
    return [
        f"{flag} {rule}, not {getattr(args, dest)}"
        for dest, flag in options.items()
        if getattr(args, dest) is not None and not within(getattr(args, dest))
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


def _dashboard_errors(args: argparse.Namespace) -> list[str]:
    if args.no_dashboard:
        return []
    errors = _host_error(args.dashboard_host, "--dashboard-host")
    if args.dashboard_port is not None:
        errors += _port_error(args.dashboard_port, "--dashboard-port")
    try:
        dashboard_bind(args)
    except InsecureBindError as exc:
        errors.append(str(exc))
    return errors


def _scheduler_key_errors(args: argparse.Namespace) -> list[str]:
    if not args.keys:
        return []
    from celeriac.wire.security import allowlist_problem

    errors = _key_errors(Path(args.keys), ["scheduler.key_secret"])
    if (problem := allowlist_problem(args.keys)) is not None:
        errors.append(f"--keys: {problem}")
    return errors


def _key_errors(directory: Path, files: list[str]) -> list[str]:
    if not directory.is_dir():
        return [f"--keys: {directory} is not a directory; create it with `celeriac keys create`"]
    return [
        f"--keys: {directory / f} does not exist" for f in files if not (directory / f).is_file()
    ]


def _journal_errors(args: argparse.Namespace) -> list[str]:
    path = journal_path(args)
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


def _ipc_errors(path: str | None) -> list[str]:
    if path is None:
        return []
    try:
        ipc_address(path)
    except ValueError as exc:
        return [f"--ipc: {exc}"]
    if not_a_socket(path):
        return [f"--ipc: {path} exists and is not a socket"]
    directory = Path(path).parent
    if not directory.is_dir() or not os.access(directory, os.W_OK | os.X_OK):
        return [f"--ipc: cannot create {path}: {directory} is not a directory this user may write"]
    return []


def _schedule_errors(args: argparse.Namespace) -> list[str]:
    if not args.schedule:
        return []
    from celeriac.cli.schedule_file import load_schedule_file

    try:
        load_schedule_file(args.schedule)
    except ValueError as exc:
        return [f"--schedule: {exc}"]
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
