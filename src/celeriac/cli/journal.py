"""``celeriac journal check|salvage``: is a scheduler's journal sound, and what of it can be saved.

``check PATH`` reads the journal as the scheduler does at start (read-only)
and lists every problem; ``salvage PATH NEW`` copies every readable,
checksum-valid record into a new journal and lists what it could not copy.
Both run without a scheduler; ``check`` may run beside one.  The journal
modules (sqlite3) are imported inside the commands, as :mod:`celeriac.cli.commands`
does: ``celeriac worker`` has no use for them.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from celeriac.cli.settings import Invocation, JournalSettings

if TYPE_CHECKING:
    from celeriac.scheduler.journal_format import Contents

log = logging.getLogger("celeriac")

#: Exit status of ``salvage`` when it wrote nothing (and of a usage error).
NOTHING_WRITTEN = 2


def run_journal(settings: JournalSettings, invocation: Invocation) -> int:
    """Check or salvage ``settings.journal``.  ``check``: 0 sound, 1 problems (listed).
    ``salvage``: 0 everything copied, 1 problems (listed; what they name was not
    copied), 2 nothing written.  ``invocation`` is unused (every command takes it)."""
    if settings.action == "check":
        return check(Path(settings.journal))
    if not settings.new:
        log.error("journal salvage needs the new journal's path: salvage PATH NEW")
        return NOTHING_WRITTEN
    return run_salvage(Path(settings.journal), Path(settings.new))


def check(path: Path) -> int:
    """Print whether the journal at ``path`` is sound, and every problem; the exit status."""
    from celeriac.scheduler import journal_format

    contents = journal_format.read(path)
    problems = list(contents.problems)
    if not problems and contents.format is None:
        if not path.exists():
            print(f"{path}: does not exist")
            return 1
        problems.append("holds no tables: it is no journal yet")
    for note in contents.notes:
        print(f"note: {note}")
    if not problems:
        print(f"{path}: sound ({describe(contents)})")
        return 0
    print(f"{path}: {len(problems)} problem{'s' if len(problems) > 1 else ''}")
    for problem in problems:
        print(f"  - {problem}")
    print(f"readable: {_counts(contents)}")
    print(f"`celeriac journal salvage {path} NEW` copies what is readable into NEW")
    return 1


def run_salvage(path: Path, new: Path) -> int:
    """Salvage ``path`` into ``new``, print the report; the exit status."""
    from celeriac.scheduler.journal import JournalError, salvage

    if not path.exists():
        log.error("%s does not exist: nothing to salvage", path)
        return NOTHING_WRITTEN
    try:
        report = salvage(path, new)
    except JournalError as exc:
        log.error("%s", exc)
        return NOTHING_WRITTEN
    print(f"salvaged {path} into {new}: {_counts(report.source)}")
    if not report.problems:
        print("nothing was dropped")
        return 0
    print(f"dropped or missing ({len(report.problems)}):")
    for problem in report.problems:
        print(f"  - {problem}")
    print(f"start the scheduler with --journal {new}; keep {path} until you no longer need it")
    return 1


def describe(contents: Contents) -> str:
    """The header and the counts, in a line."""
    if contents.format == 1:
        upgrade = "no checksums, upgraded at the scheduler's next start"
        return f"format 1, celeriac 0.1.0: {upgrade}; {_counts(contents)}"
    identity = contents.identity
    created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(identity.get("created", 0)))
    owner = f" for {identity['owner']}" if identity.get("owner") else ""
    return (
        f"format {contents.format}, journal {identity.get('id', '?')}, created {created} "
        f"on {identity.get('host', '?')}{owner}; {contents.seq} commits; {_counts(contents)}"
    )


def _counts(contents: Contents) -> str:
    counts = contents.counts()
    return (
        f"{counts['task']} tasks, {counts['revoked']} revocations, "
        f"{counts['periodic']} periodic jobs"
    )
