"""Celery with Redis as broker and result backend; one prefork worker, concurrency 2.

The Redis server is started by ``compare.py`` (``$BENCH_REDIS_URL``). The
worker runs with ``--without-gossip --without-mingle --without-heartbeat``,
the usual advice for a faster Celery; everything else is Celery's default
(prefetch multiplier 4, early acknowledgement).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from typing import Any

from peers.common import (
    MB,
    MIB,
    Recorder,
    Sizes,
    child_pids,
    cold_start,
    peer_env,
    process_group,
    round_trip_stats,
    rss_mib,
    timed,
    tree_expected,
    wait_until,
)

NAME = "celery"
BATCH = 5_000
WORKER_ARGS = [
    sys.executable, "-m", "celery", "-A", "peers.celery_tasks", "worker",
    "--concurrency", "2", "--pool", "prefork", "--loglevel", "WARNING",
    "--without-gossip", "--without-mingle", "--without-heartbeat", "--hostname", "bench@%h",
]  # fmt: skip

COLD_START_SCRIPT = f"""
import time
start = time.monotonic()
import os, signal, subprocess
from peers.celery_tasks import inc

worker = subprocess.Popen({WORKER_ARGS!r}, start_new_session=True,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    assert inc.delay(1).get(timeout=60) == 2
    done = time.monotonic()
finally:
    worker.terminate()
    try:
        worker.wait(20)
    finally:
        try:
            os.killpg(worker.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
print(start, done)
"""


def available() -> str | None:
    try:
        import celery  # noqa: F401
        import redis  # noqa: F401
    except ImportError:
        return "celery[redis] is not installed (pip install -e '.[bench]')"
    return None


def run(sizes: Sizes, rec: Recorder) -> None:
    import redis

    url = os.environ["BENCH_REDIS_URL"]
    # C_FORCE_ROOT: Celery refuses pickle as root otherwise (this machine runs as root).
    env = peer_env(BENCH_REDIS_URL=url, C_FORCE_ROOT="1")
    broker = redis.Redis.from_url(f"{url}/0")
    broker.flushall()

    def one_cold_start() -> dict[str, float]:
        seconds = cold_start(COLD_START_SCRIPT, env)
        broker.flushall()
        return {"w6_cold_start": seconds}

    rec.repeat_run("W6 cold start", one_cold_start)
    with (
        tempfile.TemporaryFile() as log,
        process_group(WORKER_ARGS, env, stdout=log, stderr=subprocess.STDOUT) as worker,
    ):
        try:
            from peers import celery_tasks as t

            assert t.inc.delay(0).get(timeout=60) == 1  # the worker is up
            _run_workloads(t, worker.pid, redis.Redis.from_url(f"{url}/2"), sizes, rec)
            t.app.close()
        except BaseException:
            log.seek(0)
            print(log.read()[-4000:].decode(errors="replace"), file=sys.stderr)
            raise


def _run_workloads(t: Any, worker_pid: int, counter: Any, sizes: Sizes, rec: Recorder) -> None:
    from celery.result import ResultSet

    ResultSet([t.inc.delay(i) for i in range(sizes.warmup_tasks)]).get(timeout=60)
    for i in range(20):
        t.inc.delay(i).get(timeout=30)
    pool = [rss_mib(pid) or 0.0 for pid in child_pids(worker_pid)]
    rec.detail("worker_memory_main_process_mib", rss_mib(worker_pid))
    rec.add({"worker_memory": max(pool)})
    results_db = t.app.backend.client

    n = sizes.fire_forget
    rec.repeat_run("W1 one .delay() per task", lambda: _w1_loop(t, counter, n))
    rec.repeat_run("W1 one group", lambda: _w1_group(t, counter, n))
    rec.repeat_run("W2 .delay()+.get()", lambda: _w2(t, results_db, sizes.tasks))
    rec.repeat_run("W3 .delay().get()", lambda: _w3(t, results_db, sizes.round_trips))
    rec.repeat_run("W4 nested-chord tree", lambda: _w4(t, results_db, sizes.tree_leaves))
    _w5_to_client(t, sizes.array_bytes), _w5_to_task(t, sizes.array_bytes)  # warm
    rec.repeat_run("W5 result -> client", lambda: _w5_to_client(t, sizes.array_bytes))
    rec.repeat_run("W5 argument -> task", lambda: _w5_to_task(t, sizes.array_bytes))
    results_db.flushdb()
    rec.repeat_run("W7 Redis memory", lambda: _w7(t, counter, sizes, rec), times=1)
    rec.note("W1, W7: each task INCRs a Redis counter so the client knows it ran")
    rec.note("W2/W3 use Celery's only API, so they fill both the futures and Celery-style rows")
    rec.note("W7 reports Redis memory (used_memory_rss): Celery has no scheduler")


def _wait_counted(counter: Any, n: int, timeout: float = 900.0) -> None:
    wait_until(lambda: int(counter.get("bench:executed") or 0) >= n, timeout, interval=0.005)


def _w1_loop(t: Any, counter: Any, n: int) -> dict[str, float]:
    counter.set("bench:executed", 0)
    start = time.perf_counter()
    for i in range(n):
        t.counted.delay(i)
    sent = time.perf_counter()
    _wait_counted(counter, n)
    total = time.perf_counter() - start
    return {"w1_fire_forget": n / total, "w1_enqueue": n / (sent - start)}


def _w1_group(t: Any, counter: Any, n: int) -> dict[str, float]:
    from celery import group

    counter.set("bench:executed", 0)
    start = time.perf_counter()
    for lo in range(0, n, BATCH):
        group(t.counted.s(i) for i in range(lo, min(n, lo + BATCH))).apply_async()
    _wait_counted(counter, n)
    return {"w1_batch": n / (time.perf_counter() - start)}


def _w2(t: Any, results_db: Any, n: int) -> dict[str, float]:
    def run() -> list[int]:
        results = [t.inc.delay(i) for i in range(n)]
        return [r.get(timeout=120) for r in results]

    seconds, values = timed(run)
    assert values == list(range(1, n + 1))
    results_db.flushdb()
    value = n / seconds
    return {"w2_futures": value, "w2_celery_style": value}


def _w3(t: Any, results_db: Any, n: int) -> dict[str, float]:
    median, p99, _ = round_trip_stats(lambda i: t.inc.delay(i).get(timeout=30), n)
    results_db.flushdb()
    return {
        "w3_median": median,
        "w3_p99": p99,
        "w3_celery_style_median": median,
        "w3_celery_style_p99": p99,
    }


def _tree(t: Any, lo: int, hi: int) -> Any:
    """Sum of inc(i) for lo <= i < hi as nested chords: each pair joins into sum_list."""
    from celery import chord

    if hi - lo == 1:
        return t.inc.si(lo)
    mid = (lo + hi) // 2
    return chord([_tree(t, lo, mid), _tree(t, mid, hi)], t.sum_list.s())


def _w4(t: Any, results_db: Any, leaves: int) -> dict[str, float]:
    seconds, total = timed(lambda: _tree(t, 0, leaves).apply_async().get(timeout=600))
    assert total == tree_expected(leaves), total
    results_db.flushdb()
    return {"w4_canvas": seconds}


def _w5_to_client(t: Any, nbytes: int) -> dict[str, float]:
    seconds, array = timed(lambda: t.make_array.delay(nbytes).get(timeout=120))
    assert array.nbytes == nbytes // 8 * 8
    return {"w5_to_client": nbytes / MB / seconds}


def _w5_to_task(t: Any, nbytes: int) -> dict[str, float]:
    import numpy as np

    array = np.ones(nbytes // 8, dtype=np.float64)
    seconds, seen = timed(lambda: t.array_nbytes.delay(array).get(timeout=120))
    assert seen == array.nbytes
    return {"w5_to_task": array.nbytes / MB / seconds}


def _w7(t: Any, counter: Any, sizes: Sizes, rec: Recorder) -> dict[str, float]:
    """Redis memory after every n/samples fire-and-forget tasks have run."""
    from celery import group

    def redis_rss() -> float:
        return float(counter.info("memory")["used_memory_rss"]) / MIB

    counter.set("bench:executed", 0)
    trace = [(0, redis_rss())]
    step = max(1, sizes.w7_tasks // sizes.w7_samples)
    sent = 0
    while sent < sizes.w7_tasks:
        k = min(step, sizes.w7_tasks - sent)
        for lo in range(sent, sent + k, BATCH):
            group(t.counted.s(i) for i in range(lo, min(sent + k, lo + BATCH))).apply_async()
        sent += k
        _wait_counted(counter, sent)
        trace.append((sent, redis_rss()))
    rec.detail("w7_trace", trace)
    return {"w7_memory": trace[-1][1]}
