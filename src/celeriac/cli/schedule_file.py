"""Periodic jobs from a TOML file: ``celeriac scheduler --schedule jobs.toml``.

::

    [[job]]
    name = "cleanup"
    task = "myapp.tasks:cleanup"     # imported on the worker, not on the scheduler
    every = { minutes = 5 }          # or: cron = "3 17 * * sun", tz = "Europe/London"
    args = [30]                      #     or: at = "2026-12-24T09:00:00+01:00"
    kwargs = { dry_run = false }
    queue = "default"
    misfire = "skip"                 # skip | run_once | catch_up
"""

from __future__ import annotations

import pickle
import tomllib
from pathlib import Path
from typing import Any

from celeriac.schedules import Schedule, at, crontab, every
from celeriac.wire.protocol import Message
from celeriac.wire.refs import CallableRef

_JOB_KEYS = {
    "name", "task", "every", "cron", "tz", "at", "args", "kwargs", "queue",
    "priority", "retries", "misfire", "grace", "allow_overlap", "result_ttl",
}  # fmt: skip


def load_schedule_file(path: str | Path) -> list[Message]:
    """``periodic-set`` messages for every job in the file; ValueError naming what is wrong."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"cannot read schedule file {path}: {exc}") from None
    unknown = set(data) - {"job"}
    if unknown:
        raise ValueError(f"{path}: unknown top-level key(s) {sorted(unknown)}; use [[job]]")
    jobs = data.get("job", [])
    names = [job.get("name") for job in jobs]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: job names must be unique")
    return [_job_message(job, f"{path}: job {job.get('name')!r}") for job in jobs]


def _job_message(job: dict[str, Any], where: str) -> Message:
    unknown = set(job) - _JOB_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}")
    for required in ("name", "task"):
        if not isinstance(job.get(required), str):
            raise ValueError(f"{where}: {required!r} is required and must be a string")
    options = {
        "queue": job.get("queue", "default"),
        "priority": job.get("priority", 0),
        "retries": job.get("retries", 0),
        "result_ttl": float(job.get("result_ttl", 86400.0)),
    }
    function = [pickle.dumps(CallableRef(job["task"]), protocol=5)]
    arguments = [pickle.dumps((tuple(job.get("args", [])), job.get("kwargs", {})), protocol=5)]
    fields = {
        "name": job["name"],
        "schedule": _schedule(job, where).to_dict(),
        "options": options,
        "misfire": job.get("misfire", "skip"),
        "grace": float(job.get("grace", 1.0)),
        "allow_overlap": bool(job.get("allow_overlap", False)),
    }
    return Message("periodic-set", fields, [function, arguments])


def _schedule(job: dict[str, Any], where: str) -> Schedule:
    kinds = [k for k in ("every", "cron", "at") if k in job]
    if len(kinds) != 1:
        raise ValueError(f"{where}: give exactly one of 'every', 'cron' or 'at'")
    try:
        if "every" in job:
            return every(**job["every"])
        if "cron" in job:
            return crontab(job["cron"], tz=job.get("tz", "UTC"))
        return at(job["at"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from None
