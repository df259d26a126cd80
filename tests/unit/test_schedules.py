"""The pure schedule logic: next_run tables, DST gaps and overlaps, errors, round trips.

Times in the tables are ISO-8601 strings with explicit offsets, so every row says
which instant it means even inside a daylight-saving overlap.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

import msgpack
import pytest

from celeriac.schedules import (
    MIN_INTERVAL,
    At,
    Crontab,
    Every,
    Schedule,
    at,
    crontab,
    every,
    next_run,
    schedule_from_dict,
    too_frequent,
)

LONDON = "Europe/London"
NEW_YORK = "America/New_York"


def t(text: str) -> datetime:
    return datetime.fromisoformat(text)


def case(schedule: Schedule, after: str, expected: str | None, id: str) -> Any:
    return pytest.param(schedule, after, expected, id=id)


NEXT_RUN_TABLE = [
    # ---- every: anchored at the Unix epoch, strictly after `after`
    case(every(seconds=5), "2026-01-01T00:00:03+00:00", "2026-01-01T00:00:05+00:00", "5s"),
    case(every(seconds=5), "2026-01-01T00:00:05+00:00", "2026-01-01T00:00:10+00:00", "5s-on-tick"),
    case(
        every(seconds=5),
        "2026-01-01T00:00:04.999999+00:00",
        "2026-01-01T00:00:05+00:00",
        "5s-just-before-tick",
    ),
    case(every(seconds=5), "2026-01-01T01:00:03+01:00", "2026-01-01T00:00:05+00:00", "5s-offset"),
    case(every(minutes=15), "2026-01-01T10:07:00+00:00", "2026-01-01T10:15:00+00:00", "15m"),
    case(every(minutes=15), "2026-01-01T10:15:00+00:00", "2026-01-01T10:30:00+00:00", "15m-tick"),
    case(every(days=1), "2026-03-08T12:00:00+00:00", "2026-03-09T00:00:00+00:00", "1d"),
    case(every(days=1), "2026-03-09T00:00:00+00:00", "2026-03-10T00:00:00+00:00", "1d-on-tick"),
    case(every(days=999_999_999), "2026-01-01T00:00:00+00:00", None, "beyond-year-9999"),
    # the epoch was a Thursday, and so is 2026-01-01
    case(every(days=7), "2026-01-02T00:00:00+00:00", "2026-01-08T00:00:00+00:00", "7d"),
    case(
        every(hours=1),
        "2026-03-08T01:30:00-05:00",
        "2026-03-08T03:00:00-04:00",
        "1h-elapsed-across-ny-gap",
    ),
    case(
        every(minutes=90, anchor="2026-01-01T00:10:00+00:00"),
        "2025-12-31T23:00:00+00:00",
        "2026-01-01T00:10:00+00:00",
        "90m-anchor-before",
    ),
    case(
        every(minutes=90, anchor="2026-01-01T00:10:00+00:00"),
        "2026-01-01T00:10:00+00:00",
        "2026-01-01T01:40:00+00:00",
        "90m-anchor-on-tick",
    ),
    # ---- crontab in UTC
    case(crontab("*/15 * * * *"), "2026-01-01T10:07:00+00:00", "2026-01-01T10:15:00+00:00", "q"),
    case(
        crontab("*/15 * * * *"),
        "2026-01-01T10:15:00+00:00",
        "2026-01-01T10:30:00+00:00",
        "quarter-on-tick",
    ),
    case(
        crontab("0 9 * * mon-fri"),
        "2026-01-02T10:00:00+00:00",  # a Friday
        "2026-01-05T09:00:00+00:00",
        "weekdays-over-weekend",
    ),
    case(
        crontab("0 6 1 jan,jul *"),
        "2026-01-01T06:00:00+00:00",
        "2026-07-01T06:00:00+00:00",
        "month-names",
    ),
    case(
        crontab("0 0 */10 * *"),
        "2026-02-21T00:00:00+00:00",
        "2026-03-01T00:00:00+00:00",
        "dom-step-rolls-month",
    ),
    case(
        crontab("0 0 1-7 * 1"),  # Vixie OR rule: day 1-7 OR Monday
        "2026-01-07T12:00:00+00:00",
        "2026-01-12T00:00:00+00:00",
        "dom-or-dow",
    ),
    # ---- 5:03pm every Sunday, London (GMT in winter, BST in summer)
    case(
        crontab("3 17 * * sun", tz=LONDON),
        "2026-01-01T00:00:00+00:00",
        "2026-01-04T17:03:00+00:00",
        "sunday-1703-winter",
    ),
    case(
        crontab("3 17 * * sun", tz=LONDON),
        "2026-07-01T00:00:00+00:00",
        "2026-07-05T17:03:00+01:00",
        "sunday-1703-summer",
    ),
    case(
        crontab("3 17 * * SUN", tz=LONDON),
        "2026-01-04T17:03:00+00:00",
        "2026-01-11T17:03:00+00:00",
        "sunday-1703-on-tick",
    ),
    case(
        crontab("3 17 * * 7", tz=LONDON),
        "2026-01-01T00:00:00+00:00",
        "2026-01-04T17:03:00+00:00",
        "sunday-as-7",
    ),
    # ---- month ends and Feb 29
    case(
        crontab("0 0 31 * *"),
        "2026-04-01T00:00:00+00:00",
        "2026-05-31T00:00:00+00:00",
        "31st-skips-april",
    ),
    case(
        crontab("0 0 31 * *"),
        "2026-01-31T00:00:00+00:00",
        "2026-03-31T00:00:00+00:00",
        "31st-skips-february",
    ),
    case(
        crontab("0 0 31 * *"),
        "2026-08-01T00:00:00+00:00",
        "2026-08-31T00:00:00+00:00",
        "31st-august",
    ),
    case(
        crontab("0 0 30 * *"),
        "2026-02-01T00:00:00+00:00",
        "2026-03-30T00:00:00+00:00",
        "30th-skips-february",
    ),
    case(
        crontab("0 12 29 2 *"),
        "2025-01-01T00:00:00+00:00",
        "2028-02-29T12:00:00+00:00",
        "feb29-from-2025",
    ),
    case(
        crontab("0 12 29 2 *"),
        "2028-02-29T12:00:00+00:00",
        "2032-02-29T12:00:00+00:00",
        "feb29-on-tick",
    ),
    case(
        crontab("0 12 29 2 *", tz=NEW_YORK),
        "2025-01-01T00:00:00+00:00",
        "2028-02-29T12:00:00-05:00",
        "feb29-new-york",
    ),
    # ---- aliases
    case(crontab("@hourly"), "2026-01-01T10:00:00+00:00", "2026-01-01T11:00:00+00:00", "hourly"),
    case(crontab("@daily"), "2026-01-01T10:00:00+00:00", "2026-01-02T00:00:00+00:00", "daily"),
    case(crontab("@midnight"), "2026-01-01T00:00:00+00:00", "2026-01-02T00:00:00+00:00", "mid"),
    case(crontab("@weekly"), "2026-01-01T10:00:00+00:00", "2026-01-04T00:00:00+00:00", "weekly"),
    case(crontab("@monthly"), "2026-01-31T10:00:00+00:00", "2026-02-01T00:00:00+00:00", "month"),
    case(crontab("@yearly"), "2026-01-01T00:00:00+00:00", "2027-01-01T00:00:00+00:00", "yearly"),
    case(crontab("@annually"), "2026-06-01T00:00:00+00:00", "2027-01-01T00:00:00+00:00", "annual"),
    case(crontab("@DAILY"), "2026-01-01T10:00:00+00:00", "2026-01-02T00:00:00+00:00", "alias-case"),
    case(
        crontab("@weekly", tz=NEW_YORK),
        "2026-03-01T05:00:00+00:00",  # Sunday 00:00 EST exactly
        "2026-03-08T00:00:00-05:00",
        "weekly-new-york-on-tick",
    ),
    case(
        crontab("@monthly", tz=LONDON),
        "2026-03-15T00:00:00+00:00",
        "2026-04-01T00:00:00+01:00",
        "monthly-london-bst",
    ),
    # ---- London spring-forward 2026-03-29: 01:00 GMT -> 02:00 BST
    case(
        crontab("30 1 * * *", tz=LONDON),
        "2026-03-28T12:00:00+00:00",
        "2026-03-29T02:00:00+01:00",
        "london-gap-runs-at-gap-end",
    ),
    case(
        crontab("30 1 * * *", tz=LONDON),
        "2026-03-29T02:00:00+01:00",
        "2026-03-30T01:30:00+01:00",
        "london-after-gap-run",
    ),
    case(
        crontab("30 1 * * *", tz=LONDON),
        "2026-03-29T00:59:59+00:00",
        "2026-03-29T02:00:00+01:00",
        "london-gap-second-before",
    ),
    case(
        crontab("*/20 * * * *", tz=LONDON),
        "2026-03-29T00:40:00+00:00",
        "2026-03-29T02:00:00+01:00",
        "london-gap-wildcard",
    ),
    # ---- London fall-back 2026-10-25: 02:00 BST -> 01:00 GMT
    case(
        crontab("30 1 * * *", tz=LONDON),
        "2026-10-24T12:00:00+01:00",
        "2026-10-25T01:30:00+01:00",
        "london-overlap-first",
    ),
    case(
        crontab("30 1 * * *", tz=LONDON),
        "2026-10-25T01:30:00+01:00",
        "2026-10-26T01:30:00+00:00",
        "london-overlap-not-twice",
    ),
    case(
        crontab("30 1 * * *", tz=LONDON),
        "2026-10-25T01:15:00+00:00",  # second pass through 01:xx
        "2026-10-26T01:30:00+00:00",
        "london-overlap-from-second-pass",
    ),
    case(
        crontab("0 * * * *", tz=LONDON),
        "2026-10-25T01:00:00+01:00",
        "2026-10-25T01:00:00+00:00",
        "london-overlap-hourly-elapsed",
    ),
    # ---- New York spring-forward 2026-03-08: 02:00 EST -> 03:00 EDT
    case(
        crontab("30 2 * * *", tz=NEW_YORK),
        "2026-03-07T12:00:00-05:00",
        "2026-03-08T03:00:00-04:00",
        "ny-gap-runs-at-gap-end",
    ),
    case(
        crontab("30 2 * * *", tz=NEW_YORK),
        "2026-03-08T03:00:00-04:00",
        "2026-03-09T02:30:00-04:00",
        "ny-after-gap-run",
    ),
    case(
        crontab("0 2 * * *", tz=NEW_YORK),
        "2026-03-08T01:59:00-05:00",
        "2026-03-08T03:00:00-04:00",
        "ny-gap-start",
    ),
    case(
        crontab("0 */2 * * *", tz=NEW_YORK),
        "2026-03-08T00:00:00-05:00",
        "2026-03-08T03:00:00-04:00",
        "ny-gap-wildcard-hour-not-dropped",
    ),
    case(
        crontab("0 3 * * *", tz=NEW_YORK),
        "2026-03-08T01:00:00-05:00",
        "2026-03-08T03:00:00-04:00",
        "ny-gap-end-itself",
    ),
    # ---- New York fall-back 2026-11-01: 02:00 EDT -> 01:00 EST
    case(
        crontab("30 1 * * *", tz=NEW_YORK),
        "2026-10-31T12:00:00-04:00",
        "2026-11-01T01:30:00-04:00",
        "ny-overlap-first",
    ),
    case(
        crontab("30 1 * * *", tz=NEW_YORK),
        "2026-11-01T01:30:00-04:00",
        "2026-11-02T01:30:00-05:00",
        "ny-overlap-not-twice",
    ),
    case(
        crontab("30 1 * * *", tz=NEW_YORK),
        "2026-11-01T01:15:00-05:00",
        "2026-11-02T01:30:00-05:00",
        "ny-overlap-from-second-pass",
    ),
    case(
        crontab("*/30 * * * *", tz=NEW_YORK),
        "2026-11-01T01:30:00-04:00",
        "2026-11-01T01:00:00-05:00",
        "ny-overlap-wildcard-elapsed",
    ),
    # ---- at
    case(at("2026-12-24T09:00:00+01:00"), "2026-01-01T00:00:00+00:00", "2026-12-24T08:00Z", "at"),
    case(
        at("2026-12-24T08:00:00Z"),
        "2026-12-24T07:59:59.999999+00:00",
        "2026-12-24T08:00Z",
        "at-1us",
    ),
    case(at("2026-12-24T08:00:00Z"), "2026-12-24T08:00:00+00:00", None, "at-exactly-now"),
    case(at("2026-12-24T08:00:00Z"), "2027-01-01T00:00:00+00:00", None, "at-past"),
    case(
        at(datetime(2026, 12, 24, 9, tzinfo=ZoneInfo("Europe/Berlin"))),
        "2026-01-01T00:00:00+00:00",
        "2026-12-24T08:00:00+00:00",
        "at-zoneinfo",
    ),
]


@pytest.mark.parametrize(("schedule", "after", "expected"), NEXT_RUN_TABLE)
def test_next_run(schedule: Schedule, after: str, expected: str | None) -> None:
    result = next_run(schedule, t(after))
    if expected is None:
        assert result is None
        return
    assert result == t(expected)
    assert result is not None
    assert result.tzinfo is UTC
    assert result > t(after)


def day_runs(schedule: Crontab, day: str) -> list[datetime]:
    """All runs during one local calendar day, by feeding next_run its own results."""
    zone = ZoneInfo(schedule.tz)
    start = datetime.fromisoformat(day).replace(tzinfo=zone)
    end = (start + timedelta(days=1)).replace(tzinfo=zone)  # wall-clock midnight
    runs: list[datetime] = []
    cursor: datetime | None = start - timedelta(microseconds=1)
    while True:
        cursor = next_run(schedule, cursor)
        assert cursor is not None
        if cursor >= end:
            return runs
        runs.append(cursor)


def local_times(runs: list[datetime], tz: str) -> list[str]:
    return [run.astimezone(ZoneInfo(tz)).strftime("%H:%M%z") for run in runs]


DST_DAYS = [
    pytest.param("30 1 * * *", LONDON, "2026-03-29", ["02:00+0100"], id="london-spring-daily"),
    pytest.param("30 1 * * *", LONDON, "2026-10-25", ["01:30+0100"], id="london-fall-daily"),
    pytest.param("30 2 * * *", NEW_YORK, "2026-03-08", ["03:00-0400"], id="ny-spring-daily"),
    pytest.param("30 1 * * *", NEW_YORK, "2026-11-01", ["01:30-0400"], id="ny-fall-daily"),
    pytest.param(
        "0,30 1-3 * * *",
        NEW_YORK,
        "2026-03-08",
        # 02:00, 02:30 and 03:00 are the same instant: one run
        ["01:00-0500", "01:30-0500", "03:00-0400", "03:30-0400"],
        id="ny-spring-fixed-list",
    ),
    pytest.param(
        "0,30 1-3 * * *",
        NEW_YORK,
        "2026-11-01",
        ["01:00-0400", "01:30-0400", "02:00-0500", "02:30-0500", "03:00-0500", "03:30-0500"],
        id="ny-fall-fixed-list",
    ),
    pytest.param(
        "0 */2 * * *",
        NEW_YORK,
        "2026-03-08",
        ["00:00-0500", "03:00-0400"] + [f"{h:02}:00-0400" for h in range(4, 24, 2)],
        id="ny-spring-every-2h",
    ),
    pytest.param(
        "0 * * * *",
        LONDON,
        "2026-10-25",
        ["00:00+0100", "01:00+0100", "01:00+0000"] + [f"{h:02}:00+0000" for h in range(2, 24)],
        id="london-fall-hourly",
    ),
]


@pytest.mark.parametrize(("expr", "tz", "day", "expected"), DST_DAYS)
def test_dst_day_runs_each_tick_once(expr: str, tz: str, day: str, expected: list[str]) -> None:
    runs = day_runs(crontab(expr, tz), day)
    assert local_times(runs, tz) == expected
    assert len(set(runs)) == len(runs)


@pytest.mark.parametrize(
    ("tz", "day", "count"),
    [
        pytest.param(LONDON, "2026-03-29", 46, id="london-spring"),
        pytest.param(LONDON, "2026-10-25", 50, id="london-fall"),
        pytest.param(NEW_YORK, "2026-03-08", 46, id="ny-spring"),
        pytest.param(NEW_YORK, "2026-11-01", 50, id="ny-fall"),
        pytest.param(NEW_YORK, "2026-07-01", 48, id="ny-ordinary"),
    ],
)
def test_half_hourly_over_dst_day_is_evenly_spaced(tz: str, day: str, count: int) -> None:
    """*/30 follows elapsed time: the 23- and 25-hour days get 46 and 50 runs, 30 min apart."""
    runs = day_runs(crontab("*/30 * * * *", tz), day)
    assert len(runs) == count
    gaps = {b - a for a, b in pairwise(runs)}
    assert gaps == {timedelta(minutes=30)}


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        pytest.param("* * * *", "has 4 fields, expected 5", id="too-few-fields"),
        pytest.param("0 * * * * *", "has 6 fields, expected 5", id="seconds-field"),
        pytest.param("", "has 0 fields", id="empty"),
        pytest.param("60 * * * *", "Bad minute", id="minute-range"),
        pytest.param("0 24 * * *", "Bad hour", id="hour-range"),
        pytest.param("0 0 32 * *", "Bad day-of-month", id="dom-range"),
        pytest.param("0 0 * 13 *", "Bad month", id="month-range"),
        pytest.param("0 0 * * funday", "Bad day-of-week", id="dow-name"),
        pytest.param("*/0 * * * *", "Bad minute", id="zero-step"),
        pytest.param("5-1 * * * *", "Bad minute", id="backwards-range"),
        pytest.param("0 0 30 2 *", "Bad day-of-month", id="feb-30-never"),
        pytest.param("@reboot", "unknown alias '@reboot'", id="reboot"),
        pytest.param("@fortnightly", "unknown alias", id="unknown-alias"),
    ],
)
def test_invalid_cron_expression(expr: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        crontab(expr)
    assert repr(expr) in str(info.value)


@pytest.mark.parametrize("tz", ["Mars/Olympus", "", "../etc/passwd", "utc+1"])
def test_invalid_zone(tz: str) -> None:
    with pytest.raises(ValueError, match="time zone"):
        crontab("* * * * *", tz)


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        pytest.param(lambda: at("2026-12-24T09:00:00"), ValueError, "timezone-aware", id="naive"),
        pytest.param(
            lambda: at(datetime(2026, 12, 24, 9)), ValueError, "timezone-aware", id="naive-dt"
        ),
        pytest.param(lambda: at("christmas"), ValueError, "ISO-8601", id="at-garbage"),
        pytest.param(lambda: at(1766563200), TypeError, "datetime", id="at-number"),
        pytest.param(lambda: every(), ValueError, "positive", id="every-zero"),
        pytest.param(lambda: every(seconds=-5), ValueError, "negative", id="every-negative"),
        pytest.param(lambda: every(minutes=5, seconds=-1), ValueError, "negative", id="mixed"),
        pytest.param(lambda: every(seconds="5"), TypeError, "number", id="every-str"),
        pytest.param(lambda: every(seconds=True), TypeError, "number", id="every-bool"),
        pytest.param(lambda: every(seconds=1e-6), ValueError, r"at least 0\.1s", id="every-1us"),
        pytest.param(lambda: every(seconds=0.099), ValueError, r"at least 0\.1s", id="every-99ms"),
        pytest.param(
            lambda: every(minutes=0.001), ValueError, r"at least 0\.1s.*got 0\.06s", id="every-60ms"
        ),
        pytest.param(
            lambda: Every(timedelta(milliseconds=50)), ValueError, "MIN_INTERVAL", id="Every-50ms"
        ),
        pytest.param(
            lambda: every(seconds=5, anchor="2026-01-01T00:00:00"),
            ValueError,
            "timezone-aware",
            id="every-naive-anchor",
        ),
        pytest.param(
            lambda: next_run(every(seconds=5), datetime(2026, 1, 1)),
            ValueError,
            "next_run\\(after\\) must be timezone-aware",
            id="next-run-naive",
        ),
        pytest.param(
            lambda: next_run("* * * * *", datetime.now(UTC)), TypeError, "schedule", id="nr"
        ),
    ],
)
def test_invalid_input(make: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        make()


SCHEDULES = [
    pytest.param(every(seconds=5), "every 5s", id="every-5s"),
    pytest.param(every(seconds=0.25), "every 0.25s", id="every-fraction"),
    pytest.param(every(seconds=0.1), "every 0.1s", id="every-minimum"),
    pytest.param(every(hours=1, minutes=30), "every 1h30m", id="every-1h30m"),
    pytest.param(every(days=2, seconds=1), "every 2d1s", id="every-2d1s"),
    pytest.param(
        every(minutes=90, anchor="2026-01-01T01:10:00+01:00"),
        "every 1h30m from 2026-01-01T00:10:00+00:00",
        id="every-anchor",
    ),
    pytest.param(
        crontab("3 17 * * sun", tz=LONDON), "cron '3 17 * * sun' Europe/London", id="cron"
    ),
    pytest.param(crontab("  0   9 * *  mon-fri "), "cron '0 9 * * mon-fri' UTC", id="cron-spaces"),
    pytest.param(crontab("@weekly", tz=NEW_YORK), "cron '@weekly' America/New_York", id="alias"),
    pytest.param(at("2026-12-24T09:00:00+01:00"), "at 2026-12-24T08:00:00+00:00", id="at"),
]


@pytest.mark.parametrize(("schedule", "text"), SCHEDULES)
def test_str(schedule: Schedule, text: str) -> None:
    assert str(schedule) == text


@pytest.mark.parametrize(("schedule", "text"), SCHEDULES)
def test_dict_round_trip_through_msgpack(schedule: Schedule, text: str) -> None:
    data = schedule.to_dict()
    wire = msgpack.unpackb(msgpack.packb(data), strict_map_key=True)
    again = schedule_from_dict(wire)
    assert again == schedule
    assert type(again) is type(schedule)
    assert str(again) == text
    after = t("2026-03-08T01:59:00-05:00")
    assert next_run(again, after) == next_run(schedule, after)


def test_to_dict_shapes() -> None:
    assert every(minutes=1).to_dict() == {
        "kind": "every",
        "seconds": 60,
        "anchor": "1970-01-01T00:00:00+00:00",
    }
    assert crontab("@daily", tz=LONDON).to_dict() == {
        "kind": "crontab",
        "expr": "@daily",
        "tz": LONDON,
    }
    assert at("2026-12-24T08:00:00Z").to_dict() == {
        "kind": "at",
        "when": "2026-12-24T08:00:00+00:00",
    }


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param({"kind": "weekly"}, "unknown schedule kind 'weekly'", id="kind"),
        pytest.param({"expr": "* * * * *", "tz": "UTC"}, "unknown schedule kind None", id="none"),
        pytest.param({"kind": "crontab", "expr": "* * * * *"}, "exactly the keys", id="missing"),
        pytest.param(
            {"kind": "at", "when": "2026-12-24T08:00:00Z", "tz": "UTC"},
            "exactly the keys",
            id="extra",
        ),
        pytest.param({"kind": "crontab", "expr": "* * *", "tz": "UTC"}, "3 fields", id="expr"),
        pytest.param({"kind": "every", "seconds": 0, "anchor": "1970-01-01T00:00Z"}, "pos", id="0"),
        pytest.param(
            {"kind": "every", "seconds": 1e-6, "anchor": "1970-01-01T00:00Z"},
            r"at least 0\.1s",
            id="below-minimum",
        ),
        pytest.param({"kind": "at", "when": "2026-12-24T08:00"}, "timezone-aware", id="naive"),
        pytest.param(["every", 5], "expected a dict", id="not-a-dict"),
    ],
)
def test_schedule_from_dict_rejects(data: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        schedule_from_dict(data)


def test_schedules_are_hashable_values() -> None:
    assert {every(seconds=60), every(minutes=1)} == {every(minutes=1)}
    assert crontab("0 0 * * *") == crontab("0  0 * * *")
    assert crontab("0 0 * * *", LONDON) != crontab("0 0 * * *")
    assert isinstance(every(seconds=1), Every)
    assert isinstance(crontab("@daily"), Crontab)
    assert isinstance(at("2026-01-01T00:00Z"), At)


def test_every_is_deterministic_across_restarts() -> None:
    """Two independently built schedules agree on ticks, whatever `after` they start from."""
    first, second = every(seconds=7), every(seconds=7)
    run = next_run(first, t("2026-05-05T12:00:00.123456+00:00"))
    assert run is not None
    assert next_run(second, run - timedelta(seconds=3)) == run
    assert (run - datetime(1970, 1, 1, tzinfo=UTC)) % timedelta(seconds=7) == timedelta(0)


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        pytest.param(Every(timedelta(microseconds=1), check_minimum=False), True, id="1us"),
        pytest.param(Every(MIN_INTERVAL - timedelta(microseconds=1), check_minimum=False), True),
        pytest.param(every(seconds=0.1), False, id="minimum"),
        pytest.param(crontab("* * * * *"), False, id="cron-every-minute"),
        pytest.param(at("2026-12-24T08:00:00Z"), False, id="at"),
    ],
)
def test_too_frequent(schedule: Schedule, expected: bool) -> None:
    assert too_frequent(schedule) is expected


def test_a_journaled_interval_below_the_minimum_reads_back_only_when_asked() -> None:
    data = {"kind": "every", "seconds": 1e-6, "anchor": "1970-01-01T00:00:00+00:00"}
    with pytest.raises(ValueError, match=r"at least 0\.1s"):
        schedule_from_dict(data)
    old = schedule_from_dict(data, check_minimum=False)
    assert old == Every(timedelta(microseconds=1), check_minimum=False) and too_frequent(old)
    assert old.to_dict() == data  # journaled again as it was
    with pytest.raises(ValueError, match="positive"):  # the rest is still checked
        schedule_from_dict({**data, "seconds": 0}, check_minimum=False)
