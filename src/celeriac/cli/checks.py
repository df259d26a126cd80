"""``--check``: validate the settings of ``scheduler`` or ``worker`` without starting anything.

Each check returns a list of messages naming the option at fault, so one run reports every
problem at once instead of the first one the command would have tripped on.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from celeriac.cli.config import Resolved, describe
from celeriac.options import declared
from celeriac.scheduler.settings import SchedulerSettings
from celeriac.wire.addresses import InsecureBindError, bind_refusal, ipc_address, not_a_socket
from celeriac.worker.settings import WorkerSettings


def run_check(resolved: Resolved) -> int:
    """Print the effective settings, then any errors; 2 when there are errors, else 0."""
    name, settings = resolved.command.name, resolved.settings
    print(f"# celeriac {name}: effective settings")
    if resolved.config_path:
        print(f"# config file: {resolved.config_path}")
    print(describe(resolved))
    if isinstance(settings, SchedulerSettings):
        print(f"# journal file: {settings.journal_path() or 'none (memory only)'}")
        errors = check_scheduler(settings)
    elif isinstance(settings, WorkerSettings):
        errors = check_worker(settings)
    else:  # the parser gives --check to those two alone
        raise TypeError(f"celeriac {name} has no --check")
    for error in errors:
        print(f"celeriac {name}: error: {error}", file=sys.stderr)
    if errors:
        return 2
    print(f"celeriac {name}: configuration OK", file=sys.stderr)
    return 0


def check_scheduler(settings: SchedulerSettings) -> list[str]:
    """What would stop ``celeriac scheduler`` with these settings from starting or serving."""
    errors = _positive(settings, "worker_timeout", "heartbeat_interval", "max_message_size")
    errors += _non_negative(settings, "prefetch", "allowed_failures")
    if settings.heartbeat_interval >= settings.worker_timeout > 0:
        errors.append("--heartbeat-interval must be shorter than --worker-timeout")
    errors += _host_error(settings.host, "--host") + _port_error(settings.port, "--port")
    refusal = bind_refusal(settings.host, insecure=settings.insecure, keys=settings.keys)
    if refusal is not None:
        errors.append(f"--host: {refusal}")
    errors += _dashboard_errors(settings)
    errors += _scheduler_key_errors(settings)
    errors += _journal_errors(settings)
    errors += _schedule_errors(settings)
    errors += _ipc_errors(settings.ipc)
    return errors


def check_worker(settings: WorkerSettings) -> list[str]:
    """What would stop ``celeriac worker`` with these settings from starting or running tasks."""
    from celeriac.wire.addresses import normalize

    errors = _positive(settings, "nprocs", "nthreads")
    errors += _non_negative(settings, "stop_timeout")
    errors += _positive(settings, "max_tasks_per_child", "max_memory_per_child")
    try:
        normalize(settings.address)
    except ValueError as exc:
        errors.append(f"address: {exc}")
    if not settings.queues:
        errors.append("--queues names no queue")
    if settings.keys:
        errors += _key_errors(Path(settings.keys), ["worker.key_secret", "scheduler.key"])
    errors += _import_errors(settings.imports)
    return errors


def _positive(settings: Any, *names: str) -> list[str]:
    return _out_of_bounds(settings, names, lambda value: value > 0, "must be positive")


def _non_negative(settings: Any, *names: str) -> list[str]:
    return _out_of_bounds(settings, names, lambda value: value >= 0, "must not be negative")


def _out_of_bounds(
    settings: Any,
    names: tuple[str, ...],
    within: Callable[[float], bool],
    rule: str,
) -> list[str]:
    """The options ``names`` outside the bounds, by flag; an unset one (None) is never at fault."""
    labels = {d.name: d.label for d in declared(type(settings))}
    return [
        f"{labels[name]} {rule}, not {getattr(settings, name)}"
        for name in names
        if getattr(settings, name) is not None and not within(getattr(settings, name))
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


def _dashboard_errors(settings: SchedulerSettings) -> list[str]:
    if settings.no_dashboard:
        return []
    errors = _host_error(settings.dashboard_host, "--dashboard-host")
    if settings.dashboard_port is not None:
        errors += _port_error(settings.dashboard_port, "--dashboard-port")
    try:
        settings.dashboard_bind()
    except InsecureBindError as exc:
        errors.append(str(exc))
    return errors


def _scheduler_key_errors(settings: SchedulerSettings) -> list[str]:
    if not settings.keys:
        return []
    from celeriac.wire.security import allowlist_problem

    errors = _key_errors(Path(settings.keys), ["scheduler.key_secret"])
    if (problem := allowlist_problem(settings.keys)) is not None:
        errors.append(f"--keys: {problem}")
    return errors


def _key_errors(directory: Path, files: list[str]) -> list[str]:
    if not directory.is_dir():
        return [f"--keys: {directory} is not a directory; create it with `celeriac keys create`"]
    return [
        f"--keys: {directory / f} does not exist" for f in files if not (directory / f).is_file()
    ]


def _journal_errors(settings: SchedulerSettings) -> list[str]:
    path = settings.journal_path()
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


def _schedule_errors(settings: SchedulerSettings) -> list[str]:
    if not settings.schedule:
        return []
    from celeriac.cli.schedule_file import load_schedule_file

    try:
        load_schedule_file(settings.schedule)
    except ValueError as exc:
        return [f"--schedule: {exc}"]
    return []


def _import_errors(modules: tuple[str, ...]) -> list[str]:
    """``-A`` names whose module the worker would not find (``proj:app``: ``proj``).

    Found, not loaded (``proj.tasks`` imports the package ``proj`` to look
    inside): an error inside the module, or an app it lacks, shows when the
    worker starts (exit 78).
    """
    import importlib.util

    errors = []
    sys.path.insert(0, os.getcwd())  # as `celeriac worker` and `python -m celeriac.worker` do
    try:
        for name in modules:
            module = name.partition(":")[0]
            try:
                found = importlib.util.find_spec(module) is not None
            except (ImportError, ValueError) as exc:
                errors.append(f"--import {name}: {exc}")
                continue
            if not found:
                errors.append(f"--import {name}: no such module")
    finally:
        sys.path.remove(os.getcwd())
    return errors
