"""Rebuilding durable work from the journal after a scheduler restart.

Unfinished tasks run again (at least once); finished ones stay readable
until their TTL; revocations and periodic jobs (with their last runs) hold
as before.  Missed periodic ticks follow each job's misfire policy.
"""

from __future__ import annotations

import logging
from typing import Any

from celeriac.scheduler.lifecycle import TaskLifecycle
from celeriac.scheduler.periodic import PeriodicJob
from celeriac.scheduler.records import DETACHED, TaskRecord, task_from_journal
from celeriac.scheduler.revocations import Revocations

log = logging.getLogger("celeriac.scheduler")


def restore(
    lifecycle: TaskLifecycle,
    revocations: Revocations,
    tasks: list[dict[str, Any]],
    revoked: dict[str, float],
    jobs: list[dict[str, Any]],
) -> None:
    """Put back what the journal held, as of ``lifecycle.now``."""
    revocations.restore(revoked, lifecycle.now)
    restored = [task_from_journal(record, lifecycle.next_seq()) for record in tasks]
    # Every task first, so each unfinished one finds its dependencies.
    for task in restored:
        lifecycle.add(task)
        if task.state.finished:
            lifecycle.timers.add(task.keep_until, task.key, "forget")
    unfinished = [task for task in restored if not task.state.finished]
    # Nobody is connected to want them, so the journal does: all of them before
    # any is linked, since linking one may fail it (a lost dependency) and
    # release the others it depends on.
    for task in unfinished:
        task.wanted_by[DETACHED] = None
    for task in unfinished:
        _resume(lifecycle, task)
    for record in jobs:
        job = _job(record)
        if job is not None:
            lifecycle.periodic.restore(job)  # paused if it runs too often (see there)
    log.info(
        "restored %d tasks (%d unfinished), %d revocations, %d periodic jobs",
        len(restored),
        sum(1 for task in restored if not task.state.finished),
        len(revocations),
        len(jobs),
    )


def _job(record: dict[str, Any]) -> PeriodicJob | None:
    """A journaled periodic job, or None (logged) if it cannot be read back.

    The scheduler must start whatever one job's record holds (a time zone
    that tzdata no longer has, a field only a later version knows); the
    record stays in the journal, so nothing is lost for a later version.
    A job that merely runs too often is loaded, paused (``PeriodicJobs.restore``).
    """
    try:
        return PeriodicJob.from_dict(record)
    except (TypeError, ValueError, KeyError, OverflowError) as exc:
        log.error(
            "periodic job %r in the journal cannot be loaded, skipped: %s", record.get("name"), exc
        )
        return None


def _resume(lifecycle: TaskLifecycle, task: TaskRecord) -> None:
    """An unfinished task runs again (or fails at once if a dependency is gone)."""
    if task.expires is not None:
        lifecycle.timers.add(task.expires, task.key, "expire")
    lifecycle.link_dependencies(task)
