"""Periodic jobs: the pure policies with a fake clock, then real processes."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

import tasks_for_tests as t
from celeriac import App, Client, every
from celeriac.scheduler.periodic import PeriodicJob, due_runs, run_key
from celeriac.scheduler.state import SchedulerState
from celeriac.schedules import crontab
from celeriac.wire.protocol import Message
from conftest import wait_until

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


# -- real processes --------------------------------------------------------------


def test_every_second_for_five_seconds_runs_five_times_each_once(cluster, tmp_path: Path) -> None:
    with App(cluster.address) as app:
        task = app.task(t.record_request_id)
        path = tmp_path / "runs"
        app.add_periodic_task(every(seconds=1), task.s(str(path)), name="ticker")
        started = time.monotonic()
        wait_until(lambda: time.monotonic() - started >= 5.0, timeout=10, interval=0.1)
        app.client.periodic("pause", "ticker")
        ids = path.read_text().split()
    assert 4 <= len(ids) <= 6
    assert len(set(ids)) == len(ids)  # each tick ran exactly once


def test_a_failing_job_keeps_its_schedule_and_records_the_failure(cluster) -> None:
    with Client(cluster.address) as client:
        client.add_periodic_task(every(seconds=0.2), t.fail, "periodic boom", name="bad")

        def failed_twice() -> bool:
            (job_info,) = client.periodic()
            return job_info["runs"] >= 2 and job_info["last_status"] == "FAILURE"

        wait_until(failed_twice, timeout=15)


def test_cli_lists_pauses_and_runs_jobs(cluster) -> None:
    base = [sys.executable, "-m", "celeriac", "periodic"]
    with Client(cluster.address) as client:
        client.add_periodic_task(every(hours=1), t.inc, 1, name="hourly")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [*base, *args, "--scheduler", cluster.address]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30)

    listing = cli("list")
    assert listing.returncode == 0 and "hourly" in listing.stdout and "every 1h" in listing.stdout
    assert cli("pause", "hourly").returncode == 0
    assert '"paused": true' in cli("list", "--json").stdout
    assert cli("run-now", "hourly").returncode == 0
    missing = cli("remove", "nope")
    assert missing.returncode == 1 and "no periodic job named 'nope'" in missing.stderr
    nobody = subprocess.run(
        [*base, "list", "--scheduler", "tcp://127.0.0.1:9", "--timeout", "0.5"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert nobody.returncode == 2 and "no Celeriac scheduler answered" in nobody.stderr


def test_schedule_file_is_loaded_at_start(tmp_path: Path, monkeypatch) -> None:
    from celeriac.client.cluster import LocalCluster

    schedule = tmp_path / "jobs.toml"
    marker = tmp_path / "ran"
    schedule.write_text(
        f"""
[[job]]
name = "touch"
task = "tasks_for_tests:touch"
every = {{ seconds = 0.3 }}
args = ["{marker}"]
"""
    )
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent))  # workers import the task
    with LocalCluster(1, scheduler_args=("--schedule", str(schedule))) as cluster:
        wait_until(marker.exists, timeout=15)
        with Client(cluster.address) as client:
            assert [j["name"] for j in client.periodic()] == ["touch"]


def test_bad_schedule_file_stops_the_scheduler_with_a_clear_error(tmp_path: Path) -> None:
    schedule = tmp_path / "jobs.toml"
    schedule.write_text('[[job]]\nname = "x"\ntask = "m:f"\nevery = { fortnights = 1 }\n')
    cmd = [
        sys.executable,
        "-m",
        "celeriac",
        "scheduler",
        "--port",
        "0",
        "--schedule",
        str(schedule),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "job 'x'" in result.stderr
