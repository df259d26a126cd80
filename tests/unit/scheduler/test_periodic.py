"""Periodic jobs: the pure policies with a fake clock, then real processes."""

from __future__ import annotations

import pytest

from celeriac import every
from celeriac.scheduler.periodic import PeriodicJob, due_runs, run_key
from celeriac.scheduler.state import SchedulerState
from celeriac.schedules import crontab
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
    assert len(chosen) == 1000 and following == 10.0 * 5001


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
