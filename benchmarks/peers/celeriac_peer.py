"""Celeriac: futures (``Client``) and Celery-style (``App``) against one LocalCluster.

The futures workloads are the Celeriac-only suite's own (``core.bench_*``), so
both suites time exactly the same code.
"""

from __future__ import annotations

import os
import time
from typing import Any

import core
from celeriac import Client, LocalCluster, chord, group
from peers import celeriac_tasks as ct
from peers.common import (
    N_WORKERS,
    THREADS_PER_WORKER,
    Recorder,
    Sizes,
    cold_start,
    peer_env,
    round_trip_stats,
    rss_mib,
    timed,
    tree_expected,
    wait_until,
)

NAME = "celeriac"
BATCH = 5_000  # tasks per group when sending many at once


def available() -> str | None:
    return None  # the package under test


def run(sizes: Sizes, rec: Recorder) -> None:
    env = peer_env()
    rec.repeat_run(
        "W6 cold start", lambda: {"w6_cold_start": cold_start(core.COLD_START_SCRIPT, env)}
    )
    os.environ["PYTHONPATH"] = env["PYTHONPATH"]  # the cluster's workers import peers.*
    with LocalCluster(N_WORKERS, THREADS_PER_WORKER, timeout=30.0) as cluster:
        ct.app.address = cluster.address
        with Client(cluster.address, timeout=30.0) as client:
            client.wait_for_workers(N_WORKERS, timeout=30.0)
            try:
                _run_workloads(client, cluster, sizes, rec)
            finally:
                ct.app.close()


def _run_workloads(client: Client, cluster: LocalCluster, sizes: Sizes, rec: Recorder) -> None:
    ctx = core.Context(
        client,
        core.Sizes(
            tasks=sizes.tasks,
            round_trips=sizes.round_trips,
            tree_leaves=sizes.tree_leaves,
            array_bytes=sizes.array_bytes,
            warmup_tasks=sizes.warmup_tasks,
        ),
    )
    core.warm_up(client, ctx.sizes)
    warm = [ct.inc.delay(i) for i in range(20)]
    assert [r.get(timeout=30) for r in warm] == list(range(1, 21))
    _forget(client, warm)
    workers = client.scheduler_info()["workers"]
    rec.add({"worker_memory": max(rss_mib(w["pid"]) or w["memory"] / core.MIB for w in workers)})

    n = sizes.fire_forget
    rec.repeat_run("W1 one .delay() per task", lambda: _w1_loop(client, n))
    rec.repeat_run("W1 one group", lambda: _w1_group(client, n))
    rec.repeat_run("W2 futures", lambda: _renamed(core.bench_submit_gather(ctx), "w2_futures"))
    rec.repeat_run("W2 .delay()+.get()", lambda: _w2_app(client, sizes.tasks))
    rec.repeat_run("W3 futures", lambda: _w3_futures(ctx))
    rec.repeat_run("W3 .delay().get()", lambda: _w3_app(client, sizes.round_trips))
    rec.repeat_run("W4 futures tree", lambda: _renamed(core.bench_tree(ctx), "w4_tree"))
    rec.repeat_run("W4 nested-chord tree", lambda: _w4_canvas(client, sizes.tree_leaves))
    core.warm_up_arrays(ctx)
    rec.repeat_run(
        "W5 result -> client",
        lambda: {"w5_to_client": core.bench_array_to_client(ctx)["array_to_client"]},
    )
    rec.repeat_run(
        "W5 argument -> task",
        lambda: {"w5_to_task": core.bench_array_to_task(ctx)["array_to_task"]},
    )
    rec.details.update(ctx.details)
    rec.repeat_run("W7 scheduler memory", lambda: _w7(client, cluster, sizes, rec), times=1)


def _chord_tree(lo: int, hi: int) -> Any:
    """Sum of inc(i) for lo <= i < hi as nested chords, as celery_peer builds it."""
    if hi - lo == 1:
        return ct.inc.si(lo)
    mid = (lo + hi) // 2
    return chord([_chord_tree(lo, mid), _chord_tree(mid, hi)], ct.sum_list.s())


def _w4_canvas(client: Client, leaves: int) -> dict[str, float]:
    sent: list[Any] = []

    def run() -> Any:
        sent.append(_chord_tree(0, leaves).apply_async())
        return sent[0].get(timeout=600)

    seconds, total = timed(run)
    assert total == tree_expected(leaves), total
    _forget(client, _canvas_results(sent[0]))
    return {"w4_canvas": seconds}


def _canvas_results(result: Any) -> list[Any]:
    """A chord's result, its header's and theirs: what the scheduler keeps for the tree."""
    found = [result]
    parent = getattr(result, "parent", None)
    for member in getattr(parent, "results", ()):
        found.extend(_canvas_results(member))
    return found


def _renamed(values: dict[str, float], name: str) -> dict[str, float]:
    (value,) = values.values()
    return {name: value}


def _done(client: Client) -> int:
    return int(client.scheduler_info()["counters"].get("done", 0))


def _wait_done(client: Client, target: int, timeout: float = 300.0) -> None:
    wait_until(lambda: _done(client) >= target, timeout, interval=0.005)


def _w1_loop(client: Client, n: int) -> dict[str, float]:
    """Fire-and-forget, one confirmed ``.delay()`` per task from one thread (a web request)."""
    base = _done(client)
    start = time.perf_counter()
    for i in range(n):
        ct.noop.delay(i)
    sent = time.perf_counter()
    _wait_done(client, base + n)
    total = time.perf_counter() - start
    core.settle(client)
    return {"w1_fire_forget": n / total, "w1_enqueue": n / (sent - start)}


def _w1_group(client: Client, n: int) -> dict[str, float]:
    """Fire-and-forget sent as groups of BATCH (one batched send, confirmed, per group)."""
    base = _done(client)
    start = time.perf_counter()
    for lo in range(0, n, BATCH):
        group(ct.noop.s(i) for i in range(lo, min(n, lo + BATCH))).apply_async()
    _wait_done(client, base + n)
    total = time.perf_counter() - start
    core.settle(client)
    return {"w1_batch": n / total}


def _w2_app(client: Client, n: int) -> dict[str, float]:
    def run() -> list[Any]:
        results = [ct.inc.delay(i) for i in range(n)]
        values = [r.get(timeout=60) for r in results]
        _sent.extend(results)
        return values

    _sent: list[Any] = []
    seconds, values = timed(run)
    assert values == list(range(1, n + 1))
    _forget(client, _sent)
    return {"w2_celery_style": n / seconds}


def _forget(client: Client, results: list[Any]) -> None:
    """Untimed clean-up: drop kept results so the next repetition starts empty."""
    for r in results:
        r.forget()
    core.settle(client)


def _w3_futures(ctx: core.Context) -> dict[str, float]:
    values = core.bench_round_trip(ctx)
    return {"w3_median": values["round_trip_median"], "w3_p99": values["round_trip_p99"]}


def _w3_app(client: Client, n: int) -> dict[str, float]:
    sent: list[Any] = []

    def call(i: int) -> Any:
        sent.append(ct.inc.delay(i))
        return sent[-1].get(timeout=30)

    median, p99, _ = round_trip_stats(call, n)
    _forget(client, sent)
    return {"w3_celery_style_median": median, "w3_celery_style_p99": p99}


def _w7(client: Client, cluster: LocalCluster, sizes: Sizes, rec: Recorder) -> dict[str, float]:
    """Scheduler RSS after every n/samples ignored-result tasks have run."""
    pid = cluster.scheduler_pid
    trace = [(0, rss_mib(pid))]
    step = max(1, sizes.w7_tasks // sizes.w7_samples)
    sent = 0
    while sent < sizes.w7_tasks:
        k = min(step, sizes.w7_tasks - sent)
        base = _done(client)
        for lo in range(sent, sent + k, BATCH):
            group(ct.noop.s(i) for i in range(lo, min(sent + k, lo + BATCH))).apply_async()
        _wait_done(client, base + k)
        core.settle(client)
        sent += k
        trace.append((sent, rss_mib(pid)))
    rec.detail("w7_trace", trace)
    return {"w7_memory": trace[-1][1] or 0.0}
