"""Periodic jobs: the pure policies with a fake clock, then real processes."""

from __future__ import annotations

import itertools
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import tasks_for_tests as t
from celeriac import App, Client, every
from celeriac.scheduler.periodic import PeriodicJob
from celeriac.testing import wait_until

C, W = b"client", b"worker"


# -- due runs under each misfire policy (pure) -----------------------------------


def job(policy: str, next_run: float, grace: float = 1.0) -> PeriodicJob:
    return PeriodicJob("j", every(seconds=10), [b"f"], [b"a"], {}, policy, grace, next_run=next_run)


# -- the scheduler state with a fake clock -----------------------------------------


# -- real processes --------------------------------------------------------------


def test_every_second_runs_each_tick_once_one_second_apart(cluster, tmp_path: Path) -> None:
    with App(cluster.address) as app:
        task = app.task(t.record_request_id)
        path = tmp_path / "runs"
        app.add_periodic_task(every(seconds=1), task.s(str(path)), name="ticker")

        def runs() -> list[str]:
            return path.read_text().split() if path.exists() else []

        wait_until(lambda: len(runs()) >= 5, timeout=20)
        app.client.periodic("pause", "ticker")
        (job,) = app.client.periodic()
        wait_until(lambda: len(runs()) == job["runs"], timeout=10)  # the last run finished
    ids = runs()
    assert len(set(ids)) == len(ids)  # each tick ran exactly once
    ticks = sorted(datetime.fromisoformat(i.split(":", 2)[2]).timestamp() for i in ids)
    assert [round(b - a, 6) for a, b in itertools.pairwise(ticks)] == [1.0] * (len(ticks) - 1)


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
    monkeypatch.setenv("PYTHONPATH", str(Path(t.__file__).parent))  # workers import it
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
