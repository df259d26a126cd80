"""Schedules for periodic jobs, and the pure function that says when each runs next.

Three kinds of schedule:

* ``every(seconds=, minutes=, hours=, days=, anchor=)``: a fixed interval of real
  (elapsed) time, anchored: it runs at ``anchor + k * interval`` for whole ``k``.
  The anchor defaults to the Unix epoch, so the ticks are the same across restarts
  and on every machine, and daylight-saving changes never affect it.  The
  interval is at least :data:`MIN_INTERVAL` (0.1 s).
* ``crontab(expr, tz="UTC")``: a 5-field cron expression (names like ``sun``/``jan``,
  ranges, steps, lists, and the aliases ``@hourly @daily @midnight @weekly @monthly
  @yearly @annually``) evaluated in an IANA time zone.  The expression is parsed and
  matched by the `cronsim` library; this module only decides what a wall-clock match
  means on days when the clock jumps (see *Daylight saving* below).
* ``at(when)``: one run at one instant.  ``when`` must carry a zone or an offset: a
  naive date is ambiguous across machines, so it is refused.

``next_run(schedule, after)`` takes an aware datetime and returns the first run
strictly after it, as an aware UTC datetime, or ``None`` when there is none (an
``at`` that is not after ``after``).  It is pure: the same inputs give the same
answer on any machine, which is what lets the scheduler give each run a
deterministic id (job name + scheduled time) and never enqueue a tick twice.

Daylight saving (crontab only)
------------------------------
A cron expression names wall-clock times; on the two days a year when the wall
clock jumps, some of those times do not exist and some exist twice.  The rules,
which follow Vixie/Debian cron (the behaviour administrators already know, and the
one cronsim implements) with one gap made explicit:

* **Spring-forward gap** (e.g. 02:30 on 2026-03-08 in America/New_York): a tick
  whose wall-clock time does not exist runs **once, at the first valid instant
  after the gap** (03:00 EDT there), rather than being skipped (a daily job
  would silently not run that day) or shifted by the gap length (02:30 -> 03:30,
  which puts it after jobs scheduled for 03:00 and changes their order).  Several
  ticks inside one gap, and a tick at the gap's end, land on the same instant and
  are one run: a run is identified by its instant.  This holds for every
  expression, including ones with ``*`` in the hour field such as ``0 */2 * * *``
  (where plain Debian cron would drop the 02:00 run).
* **Fall-back overlap** (e.g. 01:30 on 2026-11-01 in New York): a job at a fixed
  time (a specific minute *and* hour, e.g. ``30 1 * * *``) runs **once, at the
  first occurrence**, like cron, and is not repeated when the clock passes 01:30
  again.  A job with ``*`` in the minute or hour field (``*/15 * * * *``,
  ``0 * * * *``, ``@hourly``) keeps following elapsed time: the repeated hour is a
  real hour, and its ticks are distinct instants, so it gets its runs like any
  other hour (otherwise a job meant to run every 15 minutes would pause for 75).

Either way no instant ever yields two runs and no scheduled tick yields none;
``next_run`` is strictly increasing when fed its own results.

Serialization
-------------
Every schedule turns into a plain dict of str/int/float values (``to_dict``) and
back (``schedule_from_dict``), so the scheduler can keep it in msgpack and in its
journal; ``str(schedule)`` is a short human-readable form.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, InitVar, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

__all__ = [
    "MIN_INTERVAL",
    "At",
    "Crontab",
    "Every",
    "Schedule",
    "at",
    "crontab",
    "every",
    "next_run",
    "schedule_from_dict",
    "too_frequent",
]

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

#: The shortest interval :func:`every` accepts.  Each run is a task the
#: scheduler enqueues, journals and hands out; ``every(seconds=1e-6)`` made one
#: job alone enqueue runs faster than the scheduler could serve anyone else
#: (issue 13, H5).  Ten runs a second per job is far beyond what periodic work
#: needs; anything faster belongs in a task that loops.
MIN_INTERVAL: Final = timedelta(seconds=0.1)

CRON_ALIASES: Final[dict[str, str]] = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

CRON_FIELDS: Final = "minute hour day-of-month month day-of-week"


# ---------------------------------------------------------------- helpers


def _require_aware(value: datetime, what: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            f"{what} must be timezone-aware, got naive {value.isoformat()!r}; "
            "add an offset (e.g. +00:00 or Z) or a tzinfo"
        )
    return value


def _parse_instant(value: datetime | str, what: str) -> datetime:
    """An aware datetime or ISO-8601 string, as an aware UTC datetime."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"{what}: not an ISO-8601 date-time: {value!r}") from None
    if not isinstance(value, datetime):
        raise TypeError(f"{what}: expected a datetime or an ISO-8601 string, got {value!r}")
    return _require_aware(value, what).astimezone(UTC)


def _plain_number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


# ---------------------------------------------------------------- every


@dataclass(frozen=True, slots=True)
class Every:
    """Runs at ``anchor + k * interval`` for every whole ``k``: elapsed time, no zones.

    ``interval`` must be at least :data:`MIN_INTERVAL` (``ValueError`` naming it);
    ``anchor`` is an aware datetime or ISO-8601 string, held in UTC.  Usually
    made with :func:`every`.  ``check_minimum=False`` lets a shorter (still
    positive) interval through: only for reading back a job journaled before the
    minimum existed, which the scheduler then keeps paused (:func:`too_frequent`).
    """

    interval: timedelta
    anchor: datetime = EPOCH
    _: KW_ONLY
    check_minimum: InitVar[bool] = True

    def __post_init__(self, check_minimum: bool) -> None:
        if self.interval <= timedelta(0):
            raise ValueError(f"every(): the interval must be positive, got {self.interval}")
        if check_minimum and self.interval < MIN_INTERVAL:
            raise ValueError(
                f"every(): the interval must be at least {_format_interval(MIN_INTERVAL)} "
                f"(celeriac.schedules.MIN_INTERVAL), got {_format_interval(self.interval)}"
            )
        anchor = _parse_instant(self.anchor, "every(anchor)")
        object.__setattr__(self, "anchor", anchor)

    def next_after(self, after: datetime) -> datetime | None:
        """The first tick strictly after the aware ``after``, in UTC (see :func:`next_run`);
        ``None`` past the last date a ``datetime`` can hold (year 9999)."""
        ticks_done = (after - self.anchor) // self.interval  # floor, also before the anchor
        try:
            return self.anchor + (ticks_done + 1) * self.interval
        except OverflowError:  # e.g. every(days=999_999_999): no run before year 10000
            return None

    def to_dict(self) -> dict[str, Any]:
        """``{"kind": "every", "seconds": ..., "anchor": ISO}``, for :func:`schedule_from_dict`."""
        return {
            "kind": "every",
            "seconds": _plain_number(self.interval.total_seconds()),
            "anchor": self.anchor.isoformat(),
        }

    def __str__(self) -> str:
        text = f"every {_format_interval(self.interval)}"
        if self.anchor != EPOCH:
            text += f" from {self.anchor.isoformat()}"
        return text


def _format_interval(interval: timedelta) -> str:
    """``5s``, ``1h30m``, ``2d``, ``0.5s``."""
    whole = int(interval.total_seconds())
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        count, whole = divmod(whole, size)
        if count:
            parts.append(f"{count}{unit}")
    seconds = whole + interval.microseconds / 1e6
    if seconds or not parts:
        parts.append(f"{_plain_number(seconds)}s")
    return "".join(parts)


def every(
    seconds: float = 0,
    minutes: float = 0,
    hours: float = 0,
    days: float = 0,
    anchor: datetime | str = EPOCH,
) -> Every:
    """A fixed interval, e.g. ``every(seconds=5)`` or ``every(hours=1, minutes=30)``.

    ``seconds``, ``minutes``, ``hours`` and ``days`` add up to the interval, which
    must be at least :data:`MIN_INTERVAL` (0.1 s; ``ValueError`` naming it).  Runs
    fall on ``anchor + k * interval``; the default anchor (the Unix epoch) makes
    ``every(minutes=5)`` run at :00, :05, :10 ... UTC on every machine and after every
    restart.  Pass ``anchor`` (aware datetime or ISO-8601 string) to shift the phase.
    """
    amounts = {"seconds": seconds, "minutes": minutes, "hours": hours, "days": days}
    for name, value in amounts.items():
        _check_amount(name, value)
    interval = timedelta(seconds=seconds, minutes=minutes, hours=hours, days=days)
    return Every(interval, _parse_instant(anchor, "every(anchor)"))


def _check_amount(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"every(): {name} must be a number, got {value!r}")
    if value < 0:
        raise ValueError(f"every(): {name} must not be negative, got {value}")


# ---------------------------------------------------------------- crontab


@dataclass(frozen=True, slots=True)
class Crontab:
    """A 5-field cron expression evaluated in an IANA zone; see the module docstring.

    ``expr`` (whitespace normalized) and ``tz`` as :func:`crontab` takes them;
    both are validated on creation (``ValueError``; ``TypeError`` for non-strings).
    """

    expr: str
    tz: str = "UTC"

    def __post_init__(self) -> None:
        if not isinstance(self.expr, str) or not isinstance(self.tz, str):
            raise TypeError("crontab(): expr and tz must be strings")
        object.__setattr__(self, "expr", " ".join(self.expr.split()))
        self.zone  # noqa: B018 - validates the zone name
        _validate_cron(self.expr, self.cron_expr)

    @property
    def zone(self) -> ZoneInfo:
        """The ``ZoneInfo`` named by ``tz``."""
        return _zone(self.tz)

    @property
    def cron_expr(self) -> str:
        """The expression with any ``@alias`` replaced by its 5 fields."""
        return CRON_ALIASES.get(self.expr.lower(), self.expr)

    def next_after(self, after: datetime) -> datetime | None:
        """The first run strictly after the aware ``after``, in UTC; ``None``: none in 50 years.

        The earlier of cronsim's answer and a run at the end of a spring-forward gap.
        """
        local = after.astimezone(self.zone)
        found = [
            run
            for run in (self._next_by_cron(local, after), self._next_in_gap(local, after))
            if run is not None
        ]
        return min(found, default=None)

    def _next_by_cron(self, local: datetime, after: datetime) -> datetime | None:
        """cronsim's own answer: Debian cron's rules for gaps and overlaps."""
        for run in CronSim(self.cron_expr, local):
            run_utc = run.astimezone(UTC)  # compare in UTC: same-zone compares ignore fold
            if run_utc > after:
                return run_utc
        return None  # cronsim found no match within 50 years

    def _next_in_gap(self, local: datetime, after: datetime) -> datetime | None:
        """The first-instant-after-the-gap run for a wall-clock tick that does not exist.

        cronsim already does this for fixed-time jobs; for jobs with ``*`` in the
        hour or minute field it would drop such a tick, so this walks the wall-clock
        ticks (cronsim on naive datetimes: calendar only) up to the first one that
        exists and maps any missing one to the end of its gap.
        """
        zone = self.zone
        for tick in CronSim(self.cron_expr, local.replace(tzinfo=None)):
            if not _is_missing(tick, zone):
                return None  # an existing tick comes first: _next_by_cron handles it
            run = _gap_end(tick, zone)
            if run > after:
                return run
        return None

    def to_dict(self) -> dict[str, Any]:
        """``{"kind": "crontab", "expr": ..., "tz": ...}``, for :func:`schedule_from_dict`."""
        return {"kind": "crontab", "expr": self.expr, "tz": self.tz}

    def __str__(self) -> str:
        return f"cron {self.expr!r} {self.tz}"


def _zone(name: str) -> ZoneInfo:
    if not name:
        raise ValueError("crontab(): empty time zone name; use an IANA name like 'UTC'")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"crontab(): unknown time zone {name!r}; use an IANA name like "
            "'Europe/London' or 'America/New_York'"
        ) from None


def _validate_cron(expr: str, cron_expr: str) -> None:
    if expr.startswith("@") and expr.lower() not in CRON_ALIASES:
        known = " ".join(CRON_ALIASES)
        raise ValueError(f"crontab(): unknown alias {expr!r}; known: {known}")
    count = len(cron_expr.split())
    if count != 5:
        raise ValueError(f"crontab(): {expr!r} has {count} fields, expected 5 ({CRON_FIELDS})")
    try:
        CronSim(cron_expr, datetime(2000, 1, 1))
    except CronSimError as exc:
        raise ValueError(f"crontab(): invalid expression {expr!r}: {exc}") from None


def _is_missing(wall: datetime, zone: ZoneInfo) -> bool:
    """True if the naive wall-clock time ``wall`` falls in a spring-forward gap."""
    there_and_back = wall.replace(tzinfo=zone).astimezone(UTC).astimezone(zone)
    return there_and_back.replace(tzinfo=None) != wall


def _gap_end(wall: datetime, zone: ZoneInfo) -> datetime:
    """The first instant after the gap that the missing wall time ``wall`` falls in.

    In a gap, fold=1 reads ``wall`` with the offset after the change and fold=0 with
    the one before; the change itself lies between the two readings, found by
    bisection on whole seconds (zoneinfo does not expose its transition table).
    """
    one = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    two = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    lo, hi = min(one, two), max(one, two)
    new_offset = hi.astimezone(zone).utcoffset()
    while hi - lo > timedelta(seconds=1):
        mid = lo + timedelta(seconds=(hi - lo).total_seconds() // 2)
        if mid.astimezone(zone).utcoffset() == new_offset:
            hi = mid
        else:
            lo = mid
    return hi


def crontab(expr: str, tz: str = "UTC") -> Crontab:
    """A cron schedule, e.g. ``crontab("3 17 * * sun", tz="Europe/London")``.

    Five fields (minute hour day-of-month month day-of-week) with names, ranges,
    steps and lists, or one of ``@hourly @daily @midnight @weekly @monthly @yearly
    @annually``; ``tz`` is an IANA zone name.  Raises ValueError for a bad
    expression or an unknown zone.  DST rules: see the module docstring.
    """
    return Crontab(expr, tz)


# ---------------------------------------------------------------- at


@dataclass(frozen=True, slots=True)
class At:
    """One run at one instant (held in UTC).

    ``when`` is an aware datetime or ISO-8601 string with an offset.
    """

    when: datetime

    def __post_init__(self) -> None:
        object.__setattr__(self, "when", _parse_instant(self.when, "at(when)"))

    def next_after(self, after: datetime) -> datetime | None:
        """``when`` if it is strictly after the aware ``after``, else ``None``."""
        return self.when if self.when > after else None

    def to_dict(self) -> dict[str, Any]:
        """``{"kind": "at", "when": ISO}``, for :func:`schedule_from_dict`."""
        return {"kind": "at", "when": self.when.isoformat()}

    def __str__(self) -> str:
        return f"at {self.when.isoformat()}"


def at(when: datetime | str) -> At:
    """A one-off run, e.g. ``at("2026-12-24T09:00:00+01:00")`` or an aware datetime.

    Naive datetimes (and ISO strings without an offset) raise ValueError: which
    instant "09:00 on 24 December" means depends on the zone.
    """
    return At(_parse_instant(when, "at(when)"))


# ---------------------------------------------------------------- the API

Schedule = Every | Crontab | At


def next_run(schedule: Schedule, after: datetime) -> datetime | None:
    """The first run of ``schedule`` strictly after ``after``, as an aware UTC datetime.

    ``after`` must be timezone-aware.  Returns ``None`` only when there is no later
    run (a one-off ``at`` at or before ``after``, or a cron expression that matches
    nothing in the next 50 years).
    """
    if not isinstance(schedule, Every | Crontab | At):
        raise TypeError(f"next_run(): not a schedule: {schedule!r}")
    after_utc = _require_aware(after, "next_run(after)").astimezone(UTC)
    return schedule.next_after(after_utc)


def too_frequent(schedule: Schedule) -> bool:
    """An ``every`` below :data:`MIN_INTERVAL`: only ``check_minimum=False`` makes one."""
    return isinstance(schedule, Every) and schedule.interval < MIN_INTERVAL


def schedule_from_dict(data: dict[str, Any], *, check_minimum: bool = True) -> Schedule:
    """Rebuild a schedule from ``Schedule.to_dict()``; ValueError if malformed.

    ``data`` comes from the network or the journal.  An ``every`` below
    :data:`MIN_INTERVAL` is refused too, unless ``check_minimum`` is False (the
    journal's jobs: see :class:`Every`).
    """
    if not isinstance(data, dict):
        raise ValueError(f"schedule_from_dict(): expected a dict, got {data!r}")
    kind = data.get("kind")
    keys = _DICT_KEYS.get(kind) if isinstance(kind, str) else None
    if keys is None:
        raise ValueError(f"schedule_from_dict(): unknown schedule kind {kind!r}")
    if set(data) != keys:
        raise ValueError(
            f"schedule_from_dict(): a {kind!r} schedule needs exactly the keys "
            f"{sorted(keys)}, got {sorted(data)}"
        )
    if kind == "every":
        if check_minimum:
            return every(seconds=data["seconds"], anchor=data["anchor"])
        _check_amount("seconds", data["seconds"])
        interval = timedelta(seconds=data["seconds"])
        return Every(interval, _parse_instant(data["anchor"], "every(anchor)"), check_minimum=False)
    if kind == "crontab":
        return crontab(data["expr"], data["tz"])
    return at(data["when"])


_DICT_KEYS: Final[dict[str, set[str]]] = {
    "every": {"kind", "seconds", "anchor"},
    "crontab": {"kind", "expr", "tz"},
    "at": {"kind", "when"},
}
