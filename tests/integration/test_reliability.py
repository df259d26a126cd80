"""Nothing accepted is lost: scheduler kill -9 and restart, workers killed under load.

Each test prints its figures (tasks lost, duplicates, recovery time), which
docs/reliability.md reports.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import tasks_for_tests as t
from celeriac import App, AsyncResult, Client, TaskRevokedError, every
from celeriac.testing import Deployment, kill, wait_until, worker_pids


def report(**figures: object) -> None:
    print("RELIABILITY " + " ".join(f"{k}={v}" for k, v in figures.items()))


@pytest.mark.timeout(300)
def test_kill_9_scheduler_with_10000_accepted_tasks_loses_none(
    deployment: Deployment, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    with App(deployment.address, timeout=20) as app:
        record = app.task(t.record)

        def send(start: int) -> list[str]:
            return [record.delay(str(runs), start + i).id for i in range(1250)]

        with ThreadPoolExecutor(8) as pool:
            ids = [i for batch in pool.map(send, range(0, 10_000, 1250)) for i in batch]
    assert len(set(ids)) == 10_000 and not runs.exists()  # accepted, none run yet
    deployment.kill_scheduler()
    restarted = time.monotonic()
    deployment.start_scheduler()
    deployment.start_worker()
    with App(deployment.address, timeout=20) as app:
        results = [AsyncResult(i, app=app) for i in ids]
        values = [r.get(timeout=120) for r in results]
    recovery = time.monotonic() - restarted
    assert sorted(values) == list(range(10_000))
    counts = Counter(int(v) for v in runs.read_text().split())
    lost = 10_000 - len(counts)
    duplicates = sum(c - 1 for c in counts.values())
    report(test="scheduler-kill-9", accepted=10_000, lost=lost, duplicates=duplicates,
           recovery_s=round(recovery, 2))  # fmt: skip
    assert lost == 0 and duplicates == 0


def test_restart_keeps_etas_revocations_and_results(deployment: Deployment, tmp_path: Path):
    deployment.start_worker()
    with App(deployment.address, timeout=20) as app:
        add, record = app.task(t.add), app.task(t.record)
        done = add.delay(20, 22)
        assert done.get(timeout=20) == 42
        eta = time.time() + 3
        later = record.apply_async((str(tmp_path / "eta"), "x"), eta=eta)
        revoked = record.apply_async((str(tmp_path / "revoked"), "x"), countdown=2)
        revoked.revoke()
        AsyncResult("revoked-before-sent", app=app).revoke()
        wait_until(lambda: revoked.status == "REVOKED")
    deployment.kill_scheduler()
    deployment.start_scheduler()
    with App(deployment.address, timeout=20) as app:
        assert AsyncResult(done.id, app=app).get(timeout=20) == 42  # result within its TTL
        assert AsyncResult(later.id, app=app).get(timeout=30) == "x"
        assert time.time() >= eta  # ran no earlier than its eta
        assert AsyncResult(revoked.id, app=app).status == "REVOKED"
        again = app.task(t.record).apply_async(
            (str(tmp_path / "x"), "x"), task_id="revoked-before-sent"
        )
        with pytest.raises(TaskRevokedError):
            again.get(timeout=10)
    assert not (tmp_path / "revoked").exists()


@pytest.mark.parametrize(
    ("policy", "expected_missed_runs"), [("skip", 0), ("run_once", 1), ("catch_up", 3)]
)
def test_periodic_restart_under_each_misfire_policy(
    deployment: Deployment, tmp_path: Path, policy: str, expected_missed_runs: int
) -> None:
    deployment.start_worker()
    runs = tmp_path / "runs"
    with App(deployment.address, timeout=20) as app:
        task = app.task(t.record_request_id)
        app.add_periodic_task(
            every(seconds=2), task.s(str(runs)), name="job", misfire=policy, grace=0.1
        )
        wait_until(lambda: len(_lines(runs)) >= 2, timeout=15)
    deployment.kill_scheduler()
    before = _lines(runs)
    last_tick = max(_tick_time(i) for i in before)
    # The scenario, not a wait: down across three ticks (+2, +4, +6 s), back 0.3 s
    # after the third (past its 0.1 s grace), so the restart has 1.7 s before the
    # fourth (+8 s) is due: that one must run on time under every policy.
    time.sleep(max(0.0, last_tick + 6.3 - time.time()))
    deployment.start_scheduler()
    with Client(deployment.address) as client:
        wait_until(lambda: max(_tick_time(i) for i in _lines(runs)) >= last_tick + 8, timeout=20)
        client.periodic("pause", "job")
    after = _lines(runs)
    assert len(set(after)) == len(after), "a tick ran twice"
    assert last_tick + 8 in {_tick_time(i) for i in after}, "the first tick after the restart"
    missed = [i for i in after if last_tick < _tick_time(i) < last_tick + 7]
    report(test=f"periodic-restart-{policy}", missed_runs=len(missed), duplicates=0)
    assert len(missed) == expected_missed_runs


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def _tick_time(run_id: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(run_id.split(":", 2)[2]).timestamp()


@pytest.mark.timeout(300)
def test_kill_9_a_random_worker_every_2s_during_10000_tasks(cluster_factory) -> None:
    cluster = cluster_factory(n_workers=2)
    with Client(cluster.address) as client:
        client.wait_for_workers(2)
        futures = client.map(t.slow_inc, range(10_000), delay=0.001)
        stop = threading.Event()
        kills = []

        def killer() -> None:
            rng = random.Random(0)
            while not stop.wait(2.0):
                pids = worker_pids(client)
                if pids:
                    victim = rng.choice(pids)
                    kill(victim)
                    kills.append(victim)

        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        try:
            results = client.gather(futures, timeout=240)
        finally:
            stop.set()
            thread.join()
    wrong = sum(1 for i, r in enumerate(results) if r != i + 1)
    report(
        test="worker-kill-9-every-2s", tasks=10_000, workers_killed=len(kills), lost=0, wrong=wrong
    )
    assert wrong == 0 and len(results) == 10_000
    assert kills, "the run ended before any worker was killed"


def test_in_flight_futures_fail_clearly_when_the_scheduler_restarts(
    deployment: Deployment, tmp_path
):
    from celeriac import FutureLostError

    deployment.start_worker()
    with Client(deployment.address) as client:
        gate = str(tmp_path / "gate")
        future = client.submit(t.wait_for_file, gate)
        wait_until(lambda: client.scheduler_info()["by_state"].get("processing"))
        deployment.kill_scheduler()
        deployment.start_scheduler()
        with pytest.raises(FutureLostError):
            future.result(timeout=30)  # never hangs: futures are not journaled
        t.touch(gate)
        assert client.submit(t.inc, 1).result(timeout=20) == 2


def test_journal_stays_small_once_results_expire(deployment: Deployment) -> None:
    deployment.start_worker()
    with App(deployment.address, timeout=20) as app:
        add = app.task(t.add, result_ttl=0.2)
        results = [add.delay(i, 1) for i in range(500)]
        assert results[-1].get(timeout=30) == 500
        wait_until(lambda: app.client.scheduler_info()["tasks"] == 0, timeout=20)
    import sqlite3

    deployment.stop()
    rows = sqlite3.connect(deployment.journal).execute("SELECT count(*) FROM task").fetchone()[0]
    assert rows == 0
    assert os.path.getsize(deployment.journal) < 5 << 20


def test_a_task_prefetched_behind_a_hung_one_moves_to_an_idle_worker(
    cluster_factory, tmp_path: Path
) -> None:
    """Issue 14, M11: it used to wait behind the hung task for as long as that ran."""
    import subprocess
    import sys

    cluster = cluster_factory(n_workers=1)
    gate = tmp_path / "gate"
    with Client(cluster.address) as client:
        hung = client.submit(t.wait_for_file, str(gate), 60, key="hung")
        behind = client.submit(t.pid, key="behind")  # prefetched on the same worker
        client.wait_for_workers(1, timeout=20)
        wait_until(lambda: client.scheduler_info()["workers"][0]["assigned"] == 2)
        [first] = worker_pids(client)  # both tasks are on that worker now
        second = subprocess.Popen([sys.executable, "-m", "celeriac", "worker", cluster.address])
        try:
            ran_on = behind.result(timeout=30)
            assert ran_on != first  # taken back from the stuck worker, run on the new one
            assert not hung.done()
        finally:
            gate.touch()
            assert hung.result(timeout=30) == first
            second.terminate()
            second.wait(30)
