"""Dask collections on Celeriac beside Dask distributed, in the same run (issue 16's rows).

Both sides get 2 worker processes x 1 thread: ``Client(n_workers=2,
threads_per_worker=1)`` for Celeriac, ``LocalCluster(n_workers=2,
threads_per_worker=1, processes=True)`` for Dask.  Each workload is computed
once untimed on each side (imports, warm caches), then ``--repeat`` times;
the median is reported, with the ratio Celeriac / Dask (below 1: Celeriac faster).

    python benchmarks/dask_collections.py            # the issue's sizes
    python benchmarks/dask_collections.py --quick    # small sizes, seconds
    python benchmarks/dask_collections.py --only array,get

Needs ``pip install 'dask[distributed,array,dataframe,bag]' pandas``.
"""

from __future__ import annotations

import argparse
import json
import operator
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import dask
import dask.array as da
import dask.bag as db
import dask.dataframe as dd
import numpy as np
import pandas as pd


def bag_workload(quick: bool) -> Any:
    items, partitions = (2_000, 400) if quick else (20_000, 4_000)
    bag = db.from_sequence(range(items), npartitions=partitions)
    return bag.map(lambda v: v * 2).filter(lambda v: v % 3 != 0).sum()


def array_workload(quick: bool) -> Any:
    n, chunk = (1_200, 200) if quick else (6_000, 500)
    x = da.random.default_rng(0).random((n, n), chunks=chunk)
    return (x + x.T).sum(axis=0).mean()


def dataframe_workload(quick: bool) -> Any:
    rows, partitions = (200_000, 8) if quick else (2_000_000, 40)
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"k": rng.integers(0, 1_000, rows), "v": rng.random(rows)})
    return dd.from_pandas(frame, npartitions=partitions).groupby("k").v.mean()


def graph_workload(quick: bool) -> tuple[dict[Any, Any], list[Any]]:
    """A legacy graph of trivial tasks: a wide layer, then pairwise sums down to one."""
    n = 5_000 if quick else 50_000  # leaves; the tree adds n - 1 more nodes
    dsk: dict[Any, Any] = {("leaf", i): (operator.add, i, 1) for i in range(n)}
    level = [("leaf", i) for i in range(n)]
    depth = 0
    while len(level) > 1:
        depth += 1
        nxt = []
        for j in range(0, len(level) - 1, 2):
            key = ("sum", depth, j)
            dsk[key] = (operator.add, level[j], level[j + 1])
            nxt.append(key)
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return dsk, level


WORKLOADS: dict[str, Callable[[bool], Any]] = {
    "bag": bag_workload,
    "array": array_workload,
    "dataframe": dataframe_workload,
}


def timed(run: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    run()  # untimed: imports on the workers, caches
    times = []
    result = None
    for _ in range(repeat):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def measure(client: Any, name: str, quick: bool, repeat: int) -> tuple[float, Any]:
    if name == "get":
        dsk, keys = graph_workload(quick)
        return timed(lambda: client.get(dsk, keys), repeat)
    collection = WORKLOADS[name](quick)
    return timed(lambda: dask.compute(collection, scheduler=client)[0], repeat)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", default="bag,array,dataframe,get")
    parser.add_argument("--json", help="write the figures here too")
    args = parser.parse_args(argv)
    names = args.only.split(",")

    from distributed import Client as DaskClient
    from distributed import LocalCluster

    from celeriac import Client

    figures: dict[str, dict[str, float]] = {}
    with Client(n_workers=2, threads_per_worker=1, set_as_default=False) as ours:
        ours.wait_for_workers(2)
        for name in names:
            seconds, result = measure(ours, name, args.quick, args.repeat)
            figures[name] = {"celeriac": seconds}
            print(f"celeriac {name}: {seconds:.3f} s", file=sys.stderr)
            figures[name]["result"] = float(np.asarray(result).ravel()[0])
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        DaskClient(cluster, set_as_default=False) as theirs,
    ):
        for name in names:
            seconds, result = measure(theirs, name, args.quick, args.repeat)
            figures[name]["dask"] = seconds
            print(f"dask {name}: {seconds:.3f} s", file=sys.stderr)
            same = np.allclose(figures[name]["result"], np.asarray(result).ravel()[0])
            figures[name]["same_result"] = float(same)

    print(f"{'workload':<10} {'celeriac s':>11} {'dask s':>9} {'ratio':>7}")
    for name, row in figures.items():
        ratio = row["celeriac"] / row["dask"]
        print(f"{name:<10} {row['celeriac']:>11.3f} {row['dask']:>9.3f} {ratio:>7.2f}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(figures, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
