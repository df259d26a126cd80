"""The Celery-style API against real scheduler and worker processes."""

from __future__ import annotations

import gc
import pickle
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import tasks_for_tests as t
from celeriac import (
    App,
    AsyncResult,
    FutureLostError,
    MaxRetriesExceededError,
    SchedulerUnavailable,
    SoftTimeLimitExceeded,
    TaskExpiredError,
    TaskRevokedError,
    TimeLimitExceeded,
    chain,
    chord,
    group,
)
from celeriac.testing import wait_until


@pytest.fixture
def app(cluster) -> App:
    with App(cluster.address, timeout=10) as app:
        app.client.wait_for_workers(cluster.n_workers)
        yield app


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_delay_returns_a_result_readable_by_id_from_another_app(app: App, cluster) -> None:
    add = app.task(t.add)
    result = add.delay(2, 3)
    assert result.get(timeout=10) == 5
    assert result.status == "SUCCESS" and result.ready() and result.successful()
    with App(cluster.address) as other:  # e.g. another web request, another process
        again = AsyncResult(result.id, app=other)
        assert again.get(timeout=10) == 5
        assert again.result == 5


def test_celerys_first_steps_run_with_the_import_changed(cluster) -> None:
    from celeriac import Celery

    with pytest.warns(UserWarning, match="backend='rpc://' ignored"):
        celery_app = Celery("tasks", broker=cluster.address, backend="rpc://")
    with celery_app:
        add = celery_app.task(t.add)
        assert add.delay(4, 4).get(timeout=10) == 8
        assert celery_app.main == "tasks" and celery_app.address == cluster.address


def test_the_outcome_of_a_delay_is_pushed_to_the_result_it_returned(app: App) -> None:
    result = app.task(t.add).delay(20, 22)
    # Nobody asks: the scheduler sends the outcome to the process holding the result.
    assert result._held is not None
    wait_until(result._held.done, timeout=10)
    assert result.get(timeout=0) == 42
    assert pickle.loads(pickle.dumps(result)).id == result.id  # the held future stays here


def test_dropping_the_result_of_a_delay_keeps_the_outcome_for_lookup(app: App) -> None:
    task_id = app.task(t.add).delay(1, 2).id  # the AsyncResult is gone at once
    gc.collect()
    assert AsyncResult(task_id, app=app).get(timeout=10) == 3
    ignored = app.task(t.add, ignore_result=True).delay(1, 2)
    assert ignored._held is None  # nothing will come: nothing is held


def test_unknown_id_is_unknown_not_pending(app: App) -> None:
    result = AsyncResult("never-sent", app=app)
    assert result.status == "UNKNOWN"
    with pytest.raises(FutureLostError, match="unknown"):
        result.get(timeout=5)


def test_same_task_id_runs_once(app: App, tmp_path: Path) -> None:
    record = app.task(t.record)
    path = tmp_path / "runs"
    first = record.apply_async((str(path), "x"), task_id="only-once")
    second = record.apply_async((str(path), "x"), task_id="only-once")
    assert first.get(timeout=10) == second.get(timeout=10) == "x"
    assert lines(path) == ["x"]


def test_failure_keeps_type_and_traceback(app: App) -> None:
    fail = app.task(t.fail)
    result = fail.delay("bad input")
    with pytest.raises(ValueError, match="bad input"):
        result.get(timeout=10)
    assert result.status == "FAILURE" and result.failed()
    assert isinstance(result.get(propagate=False), ValueError)
    assert "in fail" in result.traceback


def test_bound_task_retries_until_it_succeeds(app: App, tmp_path: Path) -> None:
    flaky = app.task(t.flaky_bound, bind=True, retries=3)
    path = tmp_path / "attempts"
    assert flaky.delay(str(path), 2).get(timeout=10) == 2
    assert lines(path) == ["0", "1", "2"]


def test_retry_without_retries_left_fails(app: App, tmp_path: Path) -> None:
    flaky = app.task(t.flaky_bound, bind=True, retries=1)
    with pytest.raises(MaxRetriesExceededError):
        flaky.delay(str(tmp_path / "attempts"), 5).get(timeout=10)


def test_autoretry_with_backoff_reaches_the_final_failure(app: App, tmp_path: Path) -> None:
    task = app.task(
        t.always_fails,
        autoretry_for=(ConnectionError,),
        retries=3,
        retry_backoff=True,
        retry_backoff_max=0.05,
    )
    path = tmp_path / "runs"
    result = task.delay(str(path))
    with pytest.raises(ConnectionError, match="service down"):
        result.get(timeout=20)
    assert lines(path) == ["run"] * 4  # the first run and three retries


def test_errors_not_listed_in_autoretry_for_do_not_retry(app: App, tmp_path: Path) -> None:
    task = app.task(t.always_fails, autoretry_for=(KeyError,), retries=3)
    path = tmp_path / "runs"
    with pytest.raises(ConnectionError):
        task.delay(str(path)).get(timeout=10)
    assert lines(path) == ["run"]


def test_eta_task_runs_no_earlier_than_its_eta(app: App) -> None:
    now = app.task(t.record)
    sent = time.time()
    result = now.apply_async(("/dev/null", "x"), countdown=0.5)
    assert result.status == "PENDING"
    result.get(timeout=10)
    assert time.time() - sent >= 0.5


def test_expired_task_never_runs(app: App, tmp_path: Path) -> None:
    record = app.task(t.record)
    path = tmp_path / "runs"
    result = record.apply_async((str(path), "x"), expires=-1)
    with pytest.raises(TaskExpiredError):
        result.get(timeout=10)
    assert result.status == "EXPIRED"
    assert not path.exists()


def test_revoke_queued_and_eta_tasks(app: App, tmp_path: Path) -> None:
    record = app.task(t.record)
    path = tmp_path / "runs"
    later = record.apply_async((str(path), "later"), countdown=30)
    later.revoke()
    with pytest.raises(TaskRevokedError):
        later.get(timeout=10)
    assert later.status == "REVOKED"
    assert not path.exists()


def test_revoking_an_id_before_it_is_sent_holds(app: App, tmp_path: Path) -> None:
    record = app.task(t.record)
    AsyncResult("future-id", app=app).revoke()
    result = record.apply_async((str(tmp_path / "x"), "x"), task_id="future-id")
    with pytest.raises(TaskRevokedError):
        result.get(timeout=10)


def test_revoke_with_terminate_kills_the_running_task(app: App) -> None:
    sleeper = app.task(t.sleep_for)
    result = sleeper.delay(60)
    wait_until(lambda: result.status == "STARTED")
    result.revoke(terminate=True)
    with pytest.raises(TaskRevokedError):
        result.get(timeout=10)
    add = app.task(t.add)
    assert add.delay(1, 1).get(timeout=20) == 2  # the worker was replaced


@pytest.mark.parametrize("body", [t.sleep_for, t.spin_in_c], ids=["sleep", "c-call"])
def test_hard_time_limit_kills_and_worker_serves_again(app: App, body) -> None:
    task = app.task(body, time_limit=1)
    with pytest.raises(TimeLimitExceeded, match="time limit"):
        task.delay(30).get(timeout=20)
    add = app.task(t.add)
    assert add.delay(2, 2).get(timeout=20) == 4


def test_soft_time_limit_lets_the_task_clean_up(app: App) -> None:
    task = app.task(t.cleanup_on_soft_limit, soft_time_limit=0.3)
    assert task.delay(30).get(timeout=10) == "cleaned up"


def test_soft_time_limit_in_a_thread_slot(cluster_factory) -> None:
    cluster = cluster_factory(n_workers=1, threads_per_worker=2)
    with App(cluster.address) as app:
        # A thread slot gets the exception at its next bytecode, not inside a
        # blocking call (docs/tasks.md): so the task waits in short sleeps.  A
        # long one would hold the exception pending for its whole length, and
        # under coverage's tracer that starves the worker's helper thread.
        task = app.task(t.cleanup_on_soft_limit_in_python, soft_time_limit=0.3)
        results = [task.delay(5) for _ in range(2)]  # one lands on the non-main slot
        assert [r.get(timeout=20) for r in results] == ["cleaned up"] * 2
        assert SoftTimeLimitExceeded  # exported for tasks to catch


def test_queues_route_tasks_and_hold_them_until_a_worker_comes(app: App, cluster) -> None:
    import subprocess
    import sys

    task = app.task(t.pid, queue="emails")
    result = task.delay()
    wait_until(lambda: app.client.scheduler_info()["queues"].get("emails") == 1)
    assert result.status == "PENDING"  # no worker consumes "emails" yet
    cmd = [sys.executable, "-m", "celeriac", "worker", cluster.address, "--queues", "emails"]
    emails_worker = subprocess.Popen(cmd)
    try:
        ran_on = result.get(timeout=20)
        info = app.client.scheduler_info()["workers"]
        assert [w["queues"] for w in info if w["pid"] == ran_on] == [["emails"]]
    finally:
        emails_worker.terminate()
        assert emails_worker.wait(20) == 0


def test_ignore_result_keeps_nothing(app: App, tmp_path: Path) -> None:
    record = app.task(t.record, ignore_result=True)
    path = tmp_path / "runs"
    result = record.delay(str(path), "x")
    wait_until(lambda: lines(path) == ["x"])
    wait_until(lambda: result.status == "UNKNOWN")


def test_result_ttl_drops_results_and_bounds_memory(app: App) -> None:
    add = app.task(t.add, result_ttl=0.5)
    results = [add.delay(i, i) for i in range(200)]
    assert results[-1].get(timeout=10) == 398
    wait_until(lambda: app.client.scheduler_info()["tasks"] == 0, timeout=10)
    assert results[0].status == "UNKNOWN"


def test_forget_drops_a_result_now(app: App) -> None:
    add = app.task(t.add)
    result = add.delay(1, 2)
    assert result.get(timeout=10) == 3
    result.forget()
    wait_until(lambda: result.status == "UNKNOWN")


def test_rate_limit_is_cluster_wide(app: App, tmp_path: Path) -> None:
    record = app.task(t.record, rate_limit="10/s")
    path = tmp_path / "runs"
    started = time.monotonic()
    results = [record.delay(str(path), i) for i in range(6)]
    for r in results:
        r.get(timeout=20)
    # one token at start, then one every 0.1 s, across both workers
    assert time.monotonic() - started >= 0.45


def test_chain_group_and_chord(app: App) -> None:
    add, total = app.task(t.add), app.task(t.total_of)
    assert chain(add.s(1, 2), add.s(10), add.s(100)).apply_async().get(timeout=10) == 113
    assert (add.s(1, 1) | add.s(5)).apply_async().get(timeout=10) == 7
    assert group(add.s(i, i) for i in range(5)).apply_async().get(timeout=10) == [0, 2, 4, 6, 8]
    header = [add.s(i, 1) for i in range(10)]
    assert chord(header, total.s()).apply_async().get(timeout=10) == sum(range(1, 11))


def test_failure_in_a_chain_fails_the_rest(app: App) -> None:
    add, fail = app.task(t.add), app.task(t.fail)
    result = chain(fail.s("early"), add.s(1)).apply_async()
    with pytest.raises(ValueError, match="early"):
        result.get(timeout=10)


def test_five_thousand_delays_from_eight_threads_all_accounted_for(app: App) -> None:
    add = app.task(t.add, result_ttl=60)

    def send(start: int) -> list[AsyncResult]:
        return [add.delay(start, i) for i in range(625)]

    with ThreadPoolExecutor(8) as pool:
        batches = list(pool.map(send, range(8)))
    ids = [r.id for batch in batches for r in batch]
    assert len(set(ids)) == 5000
    values = [r.get(timeout=60) for batch in batches for r in batch]
    assert values == [s + i for s in range(8) for i in range(625)]


def test_delay_without_a_scheduler_fails_fast() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = App(f"tcp://127.0.0.1:{port}", timeout=0.5)
    add = app.task(t.add)
    started = time.monotonic()
    with pytest.raises(SchedulerUnavailable):
        add.delay(1, 2)
    assert time.monotonic() - started < 5


def test_task_called_directly_runs_locally(app: App) -> None:
    add = app.task(t.add)
    assert add(2, 2) == 4
    assert add.name == "tasks_for_tests.add"
