"""Periodic jobs: which runs are due, as pure functions of a job and a time.

The scheduler owns the schedule (no separate beat process): each due run
becomes an ordinary task whose id is ``periodic:<job>:<scheduled time>``, so
the same tick can never be enqueued twice, even across a restart.

What one job may cost is bounded: an ``every`` runs at most ten times a second
(:data:`celeriac.schedules.MIN_INTERVAL`, refused below that when the job is
set; a journaled job below it is restored paused), and one timer firing
enqueues at most :data:`MAX_RUNS_PER_TICK` runs of it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from celeriac.scheduler.records import TaskRecord, public_status
from celeriac.scheduler.timers import TimerQueue
from celeriac.schedules import MIN_INTERVAL, Schedule, next_run, schedule_from_dict, too_frequent
from celeriac.wire.protocol import Message, Payload, check_task_options, parse_rate

log = logging.getLogger("celeriac.scheduler")

MISFIRE_POLICIES = ("skip", "run_once", "catch_up")
#: Most runs of one job that one firing of its timer enqueues (``catch_up``
#: after an outage is the only policy that comes near it); the ticks beyond
#: are skipped, as ``skip`` drops missed runs, so a long outage cannot flood
#: the queues or hold up the scheduler.
MAX_RUNS_PER_TICK = 1000


@dataclass
class PeriodicJob:
    """One periodic job: what to run, on what schedule, and how its runs have gone."""

    name: str
    schedule: Schedule
    function: Payload
    args: Payload
    #: Submit fields for each run (queue, priority, retries, options).
    options: dict[str, Any]
    misfire: str = "skip"
    grace: float = 1.0  # seconds late a run may start and still count as on time
    allow_overlap: bool = False
    paused: bool = False
    next_run: float | None = None
    last_run: float | None = None  # scheduled time of the last run enqueued
    last_key: str | None = None
    last_status: str | None = None
    runs: int = 0
    skipped: int = 0

    def describe(self) -> dict[str, Any]:
        """The job as ``celeriac periodic list`` and the dashboard show it."""
        return {
            "name": self.name,
            "schedule": str(self.schedule),
            "next_run": _iso(self.next_run),
            "last_run": _iso(self.last_run),
            "last_status": self.last_status,
            "last_id": self.last_key,
            "paused": self.paused,
            "runs": self.runs,
            "skipped": self.skipped,
            "misfire": self.misfire,
        }

    def to_dict(self) -> dict[str, Any]:
        """Everything needed to rebuild the job (msgpack-friendly): what the journal stores."""
        return {
            "name": self.name,
            "schedule": self.schedule.to_dict(),
            "function": [bytes(f) for f in self.function],
            "args": [bytes(f) for f in self.args],
            "options": self.options,
            "misfire": self.misfire,
            "grace": self.grace,
            "allow_overlap": self.allow_overlap,
            "paused": self.paused,
            "next_run": self.next_run,
            "last_run": self.last_run,
            "last_key": self.last_key,
            "last_status": self.last_status,
            "runs": self.runs,
            "skipped": self.skipped,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PeriodicJob:
        """The job as journaled (``to_dict``), read back.

        An interval below the minimum is read as it was written (a journal
        from before the minimum): :meth:`PeriodicJobs.restore` keeps it paused.
        """
        fields = dict(data)
        fields["schedule"] = schedule_from_dict(fields["schedule"], check_minimum=False)
        return cls(**fields)


class PeriodicJobs:
    """The scheduler's periodic jobs.

    It decides which runs are due; the scheduler state gives it a timer queue
    to wake it, ``enqueue`` to turn a run into a task, and ``lookup`` to read
    a run's state.
    """

    def __init__(
        self,
        timers: TimerQueue,
        enqueue: Callable[[Message], bool],
        lookup: Callable[[str], TaskRecord | None],
        journal: Callable[[str, PeriodicJob | None], None],
    ) -> None:
        self.jobs: dict[str, PeriodicJob] = {}
        self._timers = timers
        self._enqueue = enqueue
        self._lookup = lookup
        self._journal = journal
        self._run_of: dict[str, str] = {}  # key of a run -> its job's name

    def set(self, msg: Message, now: float) -> PeriodicJob:
        """Add or update a job from a ``periodic-set`` message; ValueError if invalid."""
        try:
            schedule = schedule_from_dict(msg["schedule"])
        except (TypeError, ValueError, OverflowError) as exc:
            raise ValueError(f"bad schedule: {exc}") from None
        check_task_options(msg["options"])
        if "rate_limit" in msg["options"]:
            parse_rate(msg["options"]["rate_limit"])
        if msg["misfire"] not in MISFIRE_POLICIES:
            raise ValueError(f"misfire must be one of {', '.join(MISFIRE_POLICIES)}")
        job = PeriodicJob(
            msg["name"],
            schedule,
            msg.payloads[0],
            msg.payloads[1],
            msg["options"],
            misfire=msg["misfire"],
            grace=msg["grace"],
            allow_overlap=msg["allow_overlap"],
        )
        old = self.jobs.get(job.name)
        if old is not None:  # an update keeps the job's history
            job.paused, job.last_run, job.last_key = old.paused, old.last_run, old.last_key
            job.last_status, job.runs, job.skipped = old.last_status, old.runs, old.skipped
            if old.schedule == schedule:
                job.next_run = old.next_run
        self.jobs[job.name] = job
        if job.next_run is None:
            self._reschedule(job, max(now, job.last_run or 0.0))
        elif not job.paused:
            self._timers.add(job.next_run, job.name, "periodic")
        log.info("periodic job %s: %s, next run %s", job.name, schedule, _iso(job.next_run))
        self._journal(job.name, job)
        return job

    def restore(self, job: PeriodicJob) -> None:
        """A job from the journal: its stored next run fires (late) under its misfire policy.

        A job that runs more often than the minimum allows (journaled before
        there was one) is loaded paused, with a warning: refusing it would stop
        the scheduler from starting, and running it would wedge it.
        """
        self.jobs[job.name] = job
        if too_frequent(job.schedule) and not job.paused:
            job.paused = True
            log.warning(
                "periodic job %s runs %s, more often than the minimum interval of %ss: "
                "loaded paused; give it a longer schedule, then resume it",
                job.name,
                job.schedule,
                MIN_INTERVAL.total_seconds(),
            )
        if job.next_run is not None and not job.paused:
            self._timers.add(job.next_run, job.name, "periodic")

    def act(self, action: str, name: str | None, now: float) -> list[dict[str, Any]]:
        """``list``, ``pause``, ``resume``, ``remove`` or ``run-now``; LookupError if unknown."""
        job = self.jobs.get(name) if name is not None else None
        if action != "list" and job is None:
            raise LookupError(f"no periodic job named {name!r}")
        if action == "pause" and job is not None:
            job.paused = True
        elif action == "resume" and job is not None and job.paused:
            if too_frequent(job.schedule):  # the scheduler answers a LookupError as an error reply
                raise LookupError(
                    f"periodic job {job.name!r} runs {job.schedule}, more often than the minimum "
                    f"interval of {MIN_INTERVAL.total_seconds()}s: give it a longer schedule first"
                )
            job.paused = False
            self._reschedule(job, now)  # no catch-up for time spent paused
        elif action == "remove" and job is not None:
            del self.jobs[job.name]
            self._journal(job.name, None)
            return self.describe()
        elif action == "run-now" and job is not None:
            self._run(job, now, suffix=":manual")
        elif action not in ("list", "resume"):
            raise LookupError(f"unknown action {action!r}")
        if job is not None:
            self._journal(job.name, job)
        return self.describe()

    def fire(self, name: str, now: float) -> None:
        """A job's timer went off: enqueue what is due under its misfire policy."""
        job = self.jobs.get(name)
        if job is None or job.paused or job.next_run is None or job.next_run > now:
            return  # removed, paused, or a stale timer
        chosen, job.next_run = due_runs(job, now)
        if chosen and self._still_running(job):
            job.skipped += len(chosen)
            log.info("periodic job %s: skipping a run, the previous one is still going", job.name)
            chosen = []
        for when in chosen:  # a catch-up batch runs whole: overlap is about earlier runs
            self._run(job, when)
        if job.next_run is not None:
            self._timers.add(job.next_run, job.name, "periodic")
        self._journal(job.name, job)

    def run_finished(self, task: TaskRecord) -> None:
        """A run ended: remember its status on its job (if ``task`` was a run)."""
        name = self._run_of.pop(task.key, None)
        if name is not None and name in self.jobs:
            self.jobs[name].last_status = public_status(task)

    def describe(self) -> list[dict[str, Any]]:
        """Every job, with the status of its last run."""
        for job in self.jobs.values():
            last = self._lookup(job.last_key) if job.last_key else None
            if last is not None:
                job.last_status = public_status(last)
        return [job.describe() for job in self.jobs.values()]

    def _reschedule(self, job: PeriodicJob, after: float) -> None:
        job.next_run = first_run(job.schedule, after)
        if job.next_run is not None and not job.paused:
            self._timers.add(job.next_run, job.name, "periodic")

    def _still_running(self, job: PeriodicJob) -> bool:
        previous = self._lookup(job.last_key) if job.last_key else None
        return not job.allow_overlap and previous is not None and not previous.state.finished

    def _run(self, job: PeriodicJob, when: float, suffix: str = "") -> None:
        key = run_key(job.name, when) + suffix
        fields = {"priority": 0, "retries": 0, "queue": "default", **job.options}
        fields.update(key=key, name=job.name, deps=[], detached=True)
        if self._enqueue(Message("submit", fields, [job.function, job.args])):
            self._run_of[key] = job.name
            job.last_run, job.last_key, job.runs = when, key, job.runs + 1


def first_run(schedule: Schedule, now: float) -> float | None:
    """The first scheduled time strictly after ``now``."""
    return _next(schedule, now)


def due_runs(job: PeriodicJob, now: float) -> tuple[list[float], float | None]:
    """The scheduled times to enqueue at ``now``, and the next time after ``now``.

    ``job``'s ``next_run`` is the first tick not yet handled.  Runs later than
    ``grace`` are *missed*: ``skip`` drops them, ``run_once`` coalesces
    everything due into one run (the latest considered), ``catch_up`` runs each.
    Only the first :data:`MAX_RUNS_PER_TICK` due ticks are considered; the rest
    are skipped (logged for ``catch_up``, which promised them).
    """
    due: list[float] = []
    when = job.next_run
    while when is not None and when <= now and len(due) < MAX_RUNS_PER_TICK:
        due.append(when)
        when = _next(job.schedule, when)
    if when is not None and when <= now:
        # Beyond the cap: straight to the first tick after now.  Stepping there
        # tick by tick took 1.8 s for a day's outage of an every(seconds=0.1)
        # job (864,000 ticks), the scheduler frozen meanwhile.
        if job.misfire == "catch_up":
            log.warning(
                "periodic job %s: more than %d runs were due at once; the rest are skipped",
                job.name,
                MAX_RUNS_PER_TICK,
            )
        when = _next(job.schedule, now)
    if not due:
        return [], when
    on_time = [t for t in due if now - t <= job.grace]
    if job.misfire == "catch_up":
        chosen = due
    elif job.misfire == "run_once":
        chosen = due[-1:]
    else:
        chosen = on_time
    return chosen, when


def run_key(name: str, when: float) -> str:
    """The task id of job ``name``'s run due at ``when``: the same tick, the same id."""
    return f"periodic:{name}:{_iso(when)}"


def _next(schedule: Schedule, after: float) -> float | None:
    result = next_run(schedule, datetime.fromtimestamp(after, UTC))
    return result.timestamp() if result is not None else None


def _iso(when: float | None) -> str | None:
    if when is None:
        return None
    return datetime.fromtimestamp(when, UTC).isoformat(timespec="microseconds")
