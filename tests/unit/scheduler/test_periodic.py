"""Periodic jobs: the pure policies with a fake clock, then real processes."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest

from celeriac import every
from celeriac.scheduler.periodic import MAX_RUNS_PER_TICK, PeriodicJob, due_runs, first_run, run_key
from celeriac.scheduler.state import SchedulerState
from celeriac.schedules import Every, crontab
from celeriac.testing import SimulatedScheduler, message, ops
from celeriac.testing.sim import CLIENT
from celeriac.wire.protocol import Message

C, W = b"client", b"worker"


# -- due runs under each misfire policy (pure) -----------------------------------


def job(policy: str, next_run: float, grace: float = 1.0) -> PeriodicJob:
    return PeriodicJob("j", every(seconds=10), [b"f"], [b"a"], {}, policy, grace, next_run=next_run)


@pytest.mark.parametrize(
    ("policy", "now", "runs", "next_run"),
    [
        ("skip", 100.0, [100.0], 110.0),  # exactly on time
        ("skip", 100.5, [100.0], 110.0),  # late, within grace
        ("skip", 135.0, [], 140.0),  # down across 4 ticks: all missed, none run
        ("run_once", 135.0, [130.0], 140.0),  # coalesced into the latest tick
        ("catch_up", 135.0, [100.0, 110.0, 120.0, 130.0], 140.0),
        ("catch_up", 99.0, [], 100.0),  # nothing due yet
    ],
)
def test_due_runs(policy: str, now: float, runs: list[float], next_run: float) -> None:
    assert due_runs(job(policy, 100.0), now) == (runs, next_run)


def test_catch_up_is_capped() -> None:
    chosen, following = due_runs(job("catch_up", 0.0), 10.0 * 5000)
    assert len(chosen) == MAX_RUNS_PER_TICK == 1000 and following == 10.0 * 5001


@pytest.mark.timeout(5)
def test_a_long_outage_skips_past_the_cap_at_once(caplog: pytest.LogCaptureFixture) -> None:
    """A year of every(seconds=0.1) ticks: stepping through 3e8 of them froze the scheduler."""
    fast = PeriodicJob("fast", every(seconds=0.1), [b"f"], [b"a"], {}, "catch_up", next_run=0.0)
    year = 365 * 86400.0
    with caplog.at_level(logging.WARNING, "celeriac.scheduler"):
        chosen, following = due_runs(fast, year)
    assert len(chosen) == MAX_RUNS_PER_TICK and following == first_run(fast.schedule, year)
    assert "periodic job fast: more than 1000 runs were due at once" in caplog.text


# -- the scheduler state with a fake clock -----------------------------------------


def periodic_set(name: str, seconds: float, **extra: object) -> Message:
    fields = {
        "name": name,
        "schedule": every(seconds=seconds).to_dict(),
        "options": {},
        "misfire": "skip",
        "grace": 1.0,
        "allow_overlap": False,
        **extra,
    }
    return Message("periodic-set", fields, [[b"fn"], [b"args"]])


@pytest.fixture
def state() -> SchedulerState:
    s = SchedulerState()
    s.handle(C, [Message("hello-client", {"version": 1})], now=0.0)
    return s


def submitted(state: SchedulerState) -> list[str]:
    return sorted(k for k in state.tasks if k.startswith("periodic:"))


def test_each_tick_is_enqueued_once_with_a_deterministic_id(state: SchedulerState) -> None:
    state.handle(C, [periodic_set("j", 10, allow_overlap=True)], now=1.0)
    for now in (9.0, 10.0, 10.0, 10.5, 15.0, 20.0):
        state.tick(now)
    assert submitted(state) == [run_key("j", 10.0), run_key("j", 20.0)]
    assert len(state.periodic.jobs) == 1


def test_registering_the_same_name_updates_the_job(state: SchedulerState) -> None:
    state.handle(C, [periodic_set("j", 10)], now=1.0)
    state.handle(C, [periodic_set("j", 5)], now=2.0)
    state.tick(5.0)
    assert list(state.periodic.jobs) == ["j"]
    assert submitted(state) == [run_key("j", 5.0)]


def test_overlap_skips_a_tick_while_the_previous_run_is_going(state: SchedulerState) -> None:
    state.handle(C, [periodic_set("j", 10)], now=1.0)
    state.tick(10.0)
    state.tick(20.0)  # the 10.0 run never finished (no worker)
    assert submitted(state) == [run_key("j", 10.0)]
    assert state.periodic.jobs["j"].skipped == 1


def test_allow_overlap_runs_every_tick(state: SchedulerState) -> None:
    state.handle(C, [periodic_set("j", 10, allow_overlap=True)], now=1.0)
    state.tick(10.0)
    state.tick(20.0)
    assert submitted(state) == [run_key("j", 10.0), run_key("j", 20.0)]


def test_pause_resume_remove_and_run_now(state: SchedulerState) -> None:
    state.handle(C, [periodic_set("j", 10, allow_overlap=True)], now=1.0)
    state.periodic.act("pause", "j", 2.0)
    state.tick(10.0)
    assert submitted(state) == []
    state.periodic.act("resume", "j", 25.0)  # no catch-up for the paused time
    state.tick(30.0)
    assert submitted(state) == [run_key("j", 30.0)]
    state.periodic.act("run-now", "j", 33.0)
    assert run_key("j", 33.0) + ":manual" in state.tasks
    state.periodic.act("remove", "j", 34.0)
    state.tick(40.0)
    assert run_key("j", 40.0) not in state.tasks
    with pytest.raises(LookupError):
        state.periodic.act("pause", "j", 41.0)


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("misfire", "sometimes", "misfire must be"),
        ("schedule", {"kind": "never"}, "unknown schedule kind"),
        ("options", {"key": "x"}, "not allowed"),
    ],
)
def test_bad_job_is_rejected(state: SchedulerState, field: str, value: object, error: str) -> None:
    out = state.handle(C, [periodic_set("j", 10, **{field: value})], now=1.0)
    assert out[0].msg.op == "error" and error in out[0].msg["text"]
    assert not state.periodic.jobs


def test_job_survives_as_plain_data() -> None:
    original = job("run_once", 100.0)
    original.schedule = crontab("3 17 * * sun", tz="Europe/London")
    copy = PeriodicJob.from_dict(original.to_dict())
    assert copy.to_dict() == original.to_dict()


# -- the minimum interval (issue 13, H5) ------------------------------------------------

ANCHOR = "1970-01-01T00:00:00+00:00"
TOO_FAST = {"kind": "every", "seconds": 1e-6, "anchor": ANCHOR}


def periodic_set_message(name: str, schedule: dict[str, Any]) -> Message:
    fields = {"options": {}, "misfire": "skip", "grace": 1.0, "allow_overlap": False}
    return message("periodic-set", [[b"fn"], [b"args"]], name=name, schedule=schedule, **fields)


def runs(sim: SimulatedScheduler) -> list[str]:
    return sorted(key for key in sim.state.tasks if key.startswith("periodic:"))


def test_a_periodic_set_below_the_minimum_interval_is_refused() -> None:
    sim = SimulatedScheduler()
    out = sim(CLIENT, periodic_set_message("spin", TOO_FAST))
    assert ops(out) == [(CLIENT, "error", None)]
    assert "the interval must be at least 0.1s" in out[0].msg["text"]
    assert not sim.state.periodic.jobs
    sim.tick(1.0)
    assert runs(sim) == []


def journaled(name: str, schedule: Any, next_run: float) -> dict[str, Any]:
    """A job's record as an earlier version journaled it."""
    return PeriodicJob(name, schedule, [b"fn"], [b"args"], {}, next_run=next_run).to_dict()


def test_a_journaled_job_below_the_minimum_is_restored_paused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sim = SimulatedScheduler()
    spin = Every(timedelta(microseconds=1), check_minimum=False)  # before there was a minimum
    records = [journaled("spin", spin, 5.0), journaled("ok", every(seconds=10), 10.0)]
    with caplog.at_level(logging.WARNING, "celeriac.scheduler"):
        sim.state.restore([], {}, records, now=7.0)  # the scheduler starts
    assert "periodic job spin runs every 1e-06s, more often than the minimum" in caplog.text
    jobs = sim.state.periodic.jobs
    assert jobs["spin"].paused and not jobs["ok"].paused
    sim.tick(10.0)
    assert runs(sim) == [run_key("ok", 10.0)]  # the other job runs; the fast one does not

    [reply] = sim(CLIENT, message("periodic", rid=1, action="resume", name="spin"))
    assert reply.msg.op == "periodic-reply" and "give it a longer schedule" in reply.msg["error"]
    assert jobs["spin"].paused
    sim(CLIENT, periodic_set_message("spin", every(seconds=5).to_dict()))
    [reply] = sim(CLIENT, message("periodic", rid=2, action="resume", name="spin"))
    assert "error" not in reply.msg.fields and not jobs["spin"].paused
    sim.tick(15.0)
    assert run_key("spin", 15.0) in runs(sim)


def test_a_journaled_job_that_cannot_be_read_back_is_skipped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sim = SimulatedScheduler()
    lost = journaled("lost", crontab("@daily"), 86400.0)
    lost["schedule"]["tz"] = "Mars/Olympus"  # a zone tzdata has since dropped
    with caplog.at_level(logging.ERROR, "celeriac.scheduler"):
        sim.state.restore([], {}, [lost, journaled("ok", every(seconds=10), 10.0)], now=1.0)
    assert "periodic job 'lost' in the journal cannot be loaded" in caplog.text
    assert list(sim.state.periodic.jobs) == ["ok"]
