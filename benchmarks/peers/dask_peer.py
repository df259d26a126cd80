"""Dask distributed: futures against LocalCluster(2 processes x 1 thread).

Every submit passes ``pure=False`` so a repetition never reuses a result the
previous one left behind (Dask keys pure calls by their arguments).
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from typing import Any

from peers import tasks
from peers.common import (
    MB,
    N_WORKERS,
    THREADS_PER_WORKER,
    Recorder,
    Sizes,
    cold_start,
    peer_env,
    round_trip_stats,
    timed,
    tree_expected,
    wait_until,
)

NAME = "dask"

COLD_START_SCRIPT = f"""
import time
start = time.monotonic()
from dask.distributed import Client, LocalCluster

def inc(x):
    return x + 1

if __name__ == "__main__":
    cluster = LocalCluster(n_workers={N_WORKERS}, threads_per_worker={THREADS_PER_WORKER},
                           processes=True, host="127.0.0.1", dashboard_address=None)
    client = Client(cluster)
    assert client.submit(inc, 1).result() == 2
    done = time.monotonic()
    client.close()
    cluster.close()
    print(start, done)
"""


def available() -> str | None:
    try:
        import distributed  # noqa: F401
    except ImportError:
        return "dask[distributed] is not installed (pip install -e '.[bench]')"
    return None


def run(sizes: Sizes, rec: Recorder) -> None:
    from dask.distributed import Client, LocalCluster

    env = peer_env()
    rec.repeat_run("W6 cold start", lambda: {"w6_cold_start": cold_start(COLD_START_SCRIPT, env)})
    os.environ["PYTHONPATH"] = env["PYTHONPATH"]  # worker processes import peers.tasks
    warnings.simplefilter("ignore")  # "large object in task graph" for W5, by design
    logging.getLogger("distributed").setLevel(logging.ERROR)
    with (
        LocalCluster(
            n_workers=N_WORKERS,
            threads_per_worker=THREADS_PER_WORKER,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        client.wait_for_workers(N_WORKERS)
        _run_workloads(client, sizes, rec)


def _run_workloads(client: Any, sizes: Sizes, rec: Recorder) -> None:
    client.gather(client.map(tasks.inc, range(sizes.warmup_tasks), pure=False))
    for i in range(20):
        client.submit(tasks.inc, i, pure=False).result()
    _settle(client)
    rec.add({"worker_memory": max(client.run(tasks.worker_rss_mib).values())})

    n = sizes.fire_forget
    rec.repeat_run("W1 one submit per task", lambda: _w1_loop(client, n))
    rec.repeat_run("W1 one map", lambda: _w1_map(client, n))
    rec.repeat_run("W2 futures", lambda: _w2(client, sizes.tasks))
    rec.repeat_run("W3 futures", lambda: _w3(client, sizes.round_trips))
    rec.repeat_run("W4 futures tree", lambda: _w4(client, sizes.tree_leaves))
    _w5_to_client(client, sizes.array_bytes), _w5_to_task(client, sizes.array_bytes)  # warm
    rec.repeat_run("W5 result -> client", lambda: _w5_to_client(client, sizes.array_bytes))
    rec.repeat_run("W5 argument -> task", lambda: _w5_to_task(client, sizes.array_bytes))
    rec.note("W7 skipped: Dask keeps no record of fire-and-forget tasks once they finish")
    rec.note("W1 enqueue: Dask's submit returns before the scheduler has the task (unconfirmed)")


def _n_tasks(client: Any) -> int:
    return int(client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)))


def _settle(client: Any, timeout: float = 60.0) -> None:
    wait_until(lambda: _n_tasks(client) == 0, timeout, interval=0.005)


def _w1_loop(client: Any, n: int) -> dict[str, float]:
    from dask.distributed import fire_and_forget

    start = time.perf_counter()
    for i in range(n):
        fire_and_forget(client.submit(tasks.noop, i, pure=False))
    sent = time.perf_counter()
    _settle(client, 600)
    total = time.perf_counter() - start
    return {"w1_fire_forget": n / total, "w1_enqueue": n / (sent - start)}


def _w1_map(client: Any, n: int) -> dict[str, float]:
    from dask.distributed import fire_and_forget

    start = time.perf_counter()
    fire_and_forget(client.map(tasks.noop, range(n), pure=False))
    _settle(client, 600)
    return {"w1_batch": n / (time.perf_counter() - start)}


def _w2(client: Any, n: int) -> dict[str, float]:
    def run() -> list[int]:
        futures = [client.submit(tasks.inc, i, pure=False) for i in range(n)]
        return list(client.gather(futures))

    seconds, values = timed(run)
    assert values == list(range(1, n + 1))
    _settle(client)
    return {"w2_futures": n / seconds}


def _w3(client: Any, n: int) -> dict[str, float]:
    median, p99, _ = round_trip_stats(lambda i: client.submit(tasks.inc, i, pure=False).result(), n)
    _settle(client)
    return {"w3_median": median, "w3_p99": p99}


def _w4(client: Any, leaves: int) -> dict[str, float]:
    def run() -> int:
        level = client.map(tasks.inc, range(leaves), pure=False)
        while len(level) > 1:
            level = [
                client.submit(tasks.add, a, b, pure=False)
                for a, b in zip(level[::2], level[1::2], strict=True)
            ]
        return int(level[0].result())

    seconds, total = timed(run)
    assert total == tree_expected(leaves)
    _settle(client)
    return {"w4_tree": seconds}


def _w5_to_client(client: Any, nbytes: int) -> dict[str, float]:
    seconds, array = timed(lambda: client.submit(tasks.make_array, nbytes, pure=False).result())
    assert array.nbytes == nbytes // 8 * 8
    del array
    _settle(client)
    return {"w5_to_client": nbytes / MB / seconds}


def _w5_to_task(client: Any, nbytes: int) -> dict[str, float]:
    array = tasks.make_array(nbytes)
    seconds, seen = timed(lambda: client.submit(tasks.array_nbytes, array, pure=False).result())
    assert seen == array.nbytes
    _settle(client)
    return {"w5_to_task": array.nbytes / MB / seconds}
