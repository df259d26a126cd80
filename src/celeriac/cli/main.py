"""``celeriac``: the commands, and ``main``, which runs the chosen one.

Each command's options are the fields of its settings class
(:class:`~celeriac.scheduler.settings.SchedulerSettings`,
:class:`~celeriac.worker.settings.WorkerSettings`, the small ones in
:mod:`celeriac.cli.settings`); :mod:`celeriac.cli.parsers` builds the parser from
them and :mod:`celeriac.cli.config` the file and environment loading.  What each
command does is in :mod:`celeriac.cli.commands`, :mod:`celeriac.cli.inspect`,
:mod:`celeriac.cli.journal` and :mod:`celeriac.cli.checks` (``--check``).
"""

from __future__ import annotations

import logging
import sys

from celeriac.cli.checks import run_check
from celeriac.cli.commands import run_keys, run_periodic, run_scheduler, run_worker
from celeriac.cli.config import ConfigError, parse
from celeriac.cli.inspect import run_inspect
from celeriac.cli.journal import run_journal
from celeriac.cli.parsers import Command, CommandLine
from celeriac.cli.settings import InspectSettings, JournalSettings, KeysSettings, PeriodicSettings
from celeriac.scheduler.settings import SchedulerSettings
from celeriac.worker.settings import WorkerSettings

log = logging.getLogger("celeriac")

COMMANDS = (
    Command(
        "scheduler",
        SchedulerSettings,
        run_scheduler,
        help="run the scheduler",
        description="Run the central scheduler. Stop it with SIGTERM or Ctrl-C.",
        section="scheduler",
        show_defaults=True,
        check=True,
    ),
    Command(
        "worker",
        WorkerSettings,
        run_worker,
        help="run worker processes",
        description="Start worker processes that execute tasks, and restart any that die. "
        "SIGTERM stops them gracefully: running tasks finish, queued ones are handed back.",
        section="worker",
        show_defaults=True,
        check=True,
    ),
    Command(
        "periodic",
        PeriodicSettings,
        run_periodic,
        help="list and manage periodic jobs",
        description="List the scheduler's periodic jobs, or pause, resume, remove or run one now.",
        epilog="Exit status: 0 done; 1 no job of that name; 2 no scheduler answered (as for "
        "inspect), or a usage error.",
        section="client",
    ),
    Command(
        "inspect",
        InspectSettings,
        run_inspect,
        aliases=("status",),
        help="show the scheduler's workers, queues, tasks, periodic jobs and failures",
        description="Show what the scheduler sees. Exits 2 when no scheduler answers "
        "within --timeout: usable as a health check.",
        section="client",
    ),
    Command(
        "keys",
        KeysSettings,
        run_keys,
        help="create CURVE keys for the scheduler, workers and clients",
        description="Create CURVE key pairs in DIR: scheduler.key_secret stays on the "
        "scheduler; give scheduler.key and worker.key_secret to workers, scheduler.key and "
        "client.key_secret to clients. DIR/authorized lists the public keys the scheduler "
        "admits. See docs/security.md.",
    ),
    Command(
        "journal",
        JournalSettings,
        run_journal,
        help="check a scheduler's journal, or salvage what is intact of a damaged one",
        description="check PATH: verify the journal as the scheduler does at start (SQLite's "
        "quick_check, the header, each record's checksum, the commit count against PATH.seq) "
        "and list every problem; it only reads, and may run beside a scheduler. "
        "salvage PATH NEW: copy every readable, checksum-valid record into the new journal NEW "
        "and list what was dropped. See docs/reliability.md.",
        epilog="Exit status: check: 0 sound, 1 problems (listed). salvage: 0 every record "
        "copied, 1 problems (listed: what they name is not in NEW), 2 nothing written.",
    ),
)


def command_line() -> CommandLine:
    """The ``celeriac`` command line: its parser, built from :data:`COMMANDS`."""
    return CommandLine(
        COMMANDS,
        prog="celeriac",
        description="Celeriac: a distributed task executor (scheduler, workers, tools).",
    )


def main(argv: list[str] | None = None) -> int:
    """Run the command ``argv`` names (default: ``sys.argv[1:]``); its exit status."""
    from celeriac.logs import setup_logging

    cli = command_line()
    try:
        resolved = parse(cli, argv)
    except ConfigError as exc:
        cli.parser.exit(2, f"celeriac: error: {exc}\n")
    setup_logging(resolved.settings.log_level)
    for warning in resolved.warnings:
        log.warning("%s", warning)
    if resolved.invocation.check:
        return run_check(resolved)
    return int(resolved.command.run(resolved.settings, resolved.invocation))


if __name__ == "__main__":
    sys.exit(main())
