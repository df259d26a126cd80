"""Core Celeriac benchmarks: throughput, latency, graphs, data transfer, start-up, memory.

Run from the repository root::

    python benchmarks/core.py              # full sizes, 3 repetitions
    python benchmarks/core.py --quick      # small sizes, a few seconds (smoke test)
    python benchmarks/core.py --repeat 5 --json out.json

Every workload runs against 2 worker processes x 1 thread. The table printed at
the end shows the median of the repetitions beside the target; the JSON file keeps
every sample. Celeriac alone: `compare.py` measures Celery and Dask beside it, in
the same run. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np

import celeriac
from celeriac import Client, Future

N_WORKERS = 2
THREADS_PER_WORKER = 1
MB = 1_000_000
MIB = 1 << 20
RESULTS_DIR = Path(__file__).resolve().parent / "results"


# -- what we measure ---------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    tasks: int = 10_000
    round_trips: int = 1_000
    tree_leaves: int = 4_096
    array_bytes: int = 100 * MB
    warmup_tasks: int = 1_000


QUICK = Sizes(tasks=1_000, round_trips=100, tree_leaves=256, array_bytes=10 * MB, warmup_tasks=200)


@dataclass(frozen=True)
class Metric:
    """One number in the table: how to read it, and the goal.

    ``label`` is a template filled from :class:`Sizes` (plus ``array_mb``).
    """

    label: str
    unit: str
    higher_is_better: bool
    target: float | None = None

    def meets(self, value: float) -> bool | None:
        if self.target is None:
            return None
        return value >= self.target if self.higher_is_better else value <= self.target


METRICS: dict[str, Metric] = {
    "submit_gather": Metric("submit+gather {tasks:,} trivial tasks", "tasks/s", True, 10_000),
    "map_gather": Metric("map+gather {tasks:,} (info: batched)", "tasks/s", True),
    "round_trip_median": Metric("round trip, median", "ms", False, 0.5),
    "round_trip_p99": Metric("round trip, p99", "ms", False, 2.0),
    "tree_reduction": Metric("tree reduction, {tree_leaves:,} leaves", "s", False, 1.5),
    "array_to_client": Metric("{array_mb:g} MB result -> client", "MB/s", True, 800),
    "array_to_task": Metric("{array_mb:g} MB argument -> task", "MB/s", True, 800),
    "cold_start": Metric("cold start to first result", "s", False, 0.6),
    "worker_memory": Metric("worker RSS after warm-up (max)", "MiB", False, 60),
}


@dataclass
class Context:
    """What every workload gets: the shared client (already warm) and the sizes."""

    client: Client
    sizes: Sizes
    details: dict[str, list[Any]] = field(default_factory=dict)

    def note(self, name: str, value: Any) -> None:
        """Keep an extra per-repetition observation for the JSON (not in the table)."""
        self.details.setdefault(name, []).append(value)


Workload = Callable[[Context], dict[str, float]]


# -- functions that run on the workers -------------------------------------------------


def inc(x: int) -> int:
    return x + 1


def add(a: int, b: int) -> int:
    return a + b


def make_array(nbytes: int) -> np.ndarray:
    return np.ones(nbytes // 8, dtype=np.float64)


def array_nbytes(array: np.ndarray) -> int:
    return int(array.nbytes)


# -- shared helpers ------------------------------------------------------------------------


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds ``fn()`` took (wall clock, ``perf_counter``), and what it returned."""
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def settle(client: Client, timeout: float = 30.0) -> None:
    """Wait until the scheduler has forgotten every task, so releases of one
    repetition's futures are not processed during the next one's timing."""
    gc.collect()
    deadline = time.monotonic() + timeout
    while client.scheduler_info().get("tasks", 0) > 0:
        if time.monotonic() > deadline:
            print("warning: scheduler still holds tasks; timings may overlap", file=sys.stderr)
            return
        time.sleep(0.01)


def start_client() -> Client:
    client = Client(n_workers=N_WORKERS, threads_per_worker=THREADS_PER_WORKER, timeout=30.0)
    client.wait_for_workers(N_WORKERS, timeout=30.0)
    return client


def warm_up(client: Client, sizes: Sizes) -> None:
    """Load the functions on every worker and get the sockets and allocators going."""
    client.gather(client.map(inc, range(sizes.warmup_tasks)))
    for i in range(20):
        client.submit(inc, i).result()
    settle(client)


def warm_up_arrays(ctx: Context) -> None:
    """Import numpy on the workers and move one full-size array each way, untimed.

    The first large transfer also pays for growing every process's heap; its time
    is kept as a detail so the table shows the steady state.
    """
    small = make_array(64)
    assert ctx.client.submit(array_nbytes, small).result() == small.nbytes
    for name, workload in (("to_client", bench_array_to_client), ("to_task", bench_array_to_task)):
        ctx.note(f"array_{name}_first_mb_s", workload(ctx)[f"array_{name}"])


def rss_mib(pid: int) -> float | None:
    """Resident set size of ``pid`` from /proc (Linux), or None where unavailable."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024 / MIB
    except OSError:
        pass
    return None


# -- workloads: each runs one repetition and returns {metric: value} ------------------------


def bench_submit_gather(ctx: Context) -> dict[str, float]:
    n = ctx.sizes.tasks

    def run() -> list[int]:
        futures = [ctx.client.submit(inc, i) for i in range(n)]
        return ctx.client.gather(futures)

    seconds, results = timed(run)
    assert results == list(range(1, n + 1))
    del results
    settle(ctx.client)
    return {"submit_gather": n / seconds}


def bench_map_gather(ctx: Context) -> dict[str, float]:
    n = ctx.sizes.tasks
    seconds, results = timed(lambda: ctx.client.gather(ctx.client.map(inc, range(n))))
    assert results == list(range(1, n + 1))
    del results
    settle(ctx.client)
    return {"map_gather": n / seconds}


def bench_round_trip(ctx: Context) -> dict[str, float]:
    latencies_ms = []
    for i in range(ctx.sizes.round_trips):
        seconds, result = timed(lambda i=i: ctx.client.submit(inc, i).result())
        assert result == i + 1
        latencies_ms.append(seconds * 1000)
    settle(ctx.client)
    p99 = statistics.quantiles(latencies_ms, n=100, method="inclusive")[98]
    ctx.note("round_trip_max_ms", max(latencies_ms))
    return {"round_trip_median": statistics.median(latencies_ms), "round_trip_p99": p99}


def tree_reduce(client: Client, leaves: int) -> int:
    """Sum ``inc(i)`` over ``range(leaves)`` pairwise, level by level: 2 * leaves - 1 tasks."""
    level: list[Future[int]] = client.map(inc, range(leaves))
    while len(level) > 1:
        level = [client.submit(add, a, b) for a, b in zip(level[::2], level[1::2], strict=True)]
    return level[0].result()


def bench_tree(ctx: Context) -> dict[str, float]:
    leaves = ctx.sizes.tree_leaves
    seconds, total = timed(lambda: tree_reduce(ctx.client, leaves))
    assert total == leaves * (leaves + 1) // 2
    settle(ctx.client)
    return {"tree_reduction": seconds}


def bench_array_to_client(ctx: Context) -> dict[str, float]:
    """Task builds the array (``np.ones``) and returns it; time until the client holds it."""
    nbytes = ctx.sizes.array_bytes
    seconds, array = timed(lambda: ctx.client.submit(make_array, nbytes).result())
    assert array.nbytes == nbytes // 8 * 8
    del array
    settle(ctx.client)
    return {"array_to_client": nbytes / MB / seconds}


def bench_array_to_task(ctx: Context) -> dict[str, float]:
    """Client-side array passed as an argument; time until the task's (tiny) result is back."""
    array = make_array(ctx.sizes.array_bytes)
    seconds, seen = timed(lambda: ctx.client.submit(array_nbytes, array).result())
    assert seen == array.nbytes
    settle(ctx.client)
    return {"array_to_task": array.nbytes / MB / seconds}


COLD_START_SCRIPT = f"""
import time
start = time.monotonic()
from celeriac import Client

def inc(x):
    return x + 1

client = Client(n_workers={N_WORKERS}, threads_per_worker={THREADS_PER_WORKER})
assert client.submit(inc, 1).result() == 2
done = time.monotonic()
client.close()
print(start, done)
"""


def bench_cold_start(ctx: Context) -> dict[str, float]:
    """A fresh interpreter: ``import celeriac`` + ``Client()`` + the first result.

    ``time.monotonic`` is system-wide on Linux, so the interpreter's own start-up
    (before the script's first line) is kept too, as a detail.
    """
    spawned = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", COLD_START_SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    start, done = map(float, proc.stdout.split()[-2:])
    ctx.note("cold_start_with_interpreter_s", done - spawned)
    return {"cold_start": done - start}


def bench_worker_memory(ctx: Context) -> dict[str, float]:
    """A fresh cluster, warmed up with trivial tasks; RSS of each worker process."""
    with start_client() as client:
        warm_up(client, ctx.sizes)
        workers = client.scheduler_info()["workers"]
        per_worker = [rss_mib(w["pid"]) or w["memory"] / MIB for w in workers]
    ctx.note("worker_memory_mib_each", per_worker)
    return {"worker_memory": max(per_worker)}


#: In run order: the fresh-process workloads first, while the shared client is idle.
WORKLOADS: list[Workload] = [
    bench_cold_start,
    bench_worker_memory,
    bench_submit_gather,
    bench_map_gather,
    bench_round_trip,
    bench_tree,
    bench_array_to_client,
    bench_array_to_task,
]


# -- running and reporting -----------------------------------------------------------------


def run_all(sizes: Sizes, repeat: int) -> tuple[dict[str, list[float]], dict[str, list[Any]]]:
    samples: dict[str, list[float]] = {name: [] for name in METRICS}
    with start_client() as client:
        warm_up(client, sizes)
        ctx = Context(client, sizes)
        warm_up_arrays(ctx)
        for workload in WORKLOADS:
            name = workload.__name__.removeprefix("bench_")
            for i in range(repeat):
                for metric, value in workload(ctx).items():
                    samples[metric].append(value)
                print(f"  {name} [{i + 1}/{repeat}] done", file=sys.stderr, flush=True)
    return samples, ctx.details


def machine_info() -> dict[str, Any]:
    def read(path: str, prefix: str) -> str | None:
        try:
            with open(path) as f:
                return next(
                    (ln.split(":", 1)[1].strip() for ln in f if ln.startswith(prefix)), None
                )
        except OSError:
            return None

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "cpu": read("/proc/cpuinfo", "model name") or platform.processor(),
        "cpu_count": os.cpu_count(),
        "memory_total": read("/proc/meminfo", "MemTotal"),
        "load_average_at_start": os.getloadavg(),
        "python": sys.version.split()[0],
        "celeriac": celeriac.__version__,
        "numpy": np.__version__,
        "pyzmq": _version("zmq"),
        "git_commit": commit,
    }


def _version(module: str) -> str | None:
    try:
        return str(__import__(module).__version__)
    except ImportError:
        return None


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def render_table(samples: dict[str, list[float]], sizes: Sizes) -> str:
    fill = {**asdict(sizes), "array_mb": sizes.array_bytes / MB}
    header = ("workload", "unit", "celeriac", "min..max", "target", "ok")
    rows = [header]
    for name, metric in METRICS.items():
        values = samples[name]
        median = statistics.median(values)
        met = metric.meets(median)
        goal = None if metric.target is None else ">= " if metric.higher_is_better else "<= "
        rows.append(
            (
                metric.label.format(**fill),
                metric.unit,
                _fmt(median),
                f"{_fmt(min(values))}..{_fmt(max(values))}",
                "-" if goal is None else goal + _fmt(metric.target),
                "" if met is None else "yes" if met else "NO",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def report(
    machine: dict[str, Any],
    samples: dict[str, list[float]],
    details: dict[str, list[Any]],
    args: argparse.Namespace,
) -> dict[str, Any]:
    return {
        "benchmark": "celeriac-core",
        "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "config": {
            "quick": args.quick,
            "repeat": args.repeat,
            "n_workers": N_WORKERS,
            "threads_per_worker": THREADS_PER_WORKER,
            "sizes": asdict(args.sizes),
        },
        "results": {
            name: {
                **asdict(metric),
                "samples": samples[name],
                "median": statistics.median(samples[name]),
                "meets_target": metric.meets(statistics.median(samples[name])),
            }
            for name, metric in METRICS.items()
        },
        "details": details,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions per workload")
    parser.add_argument(
        "--json",
        type=Path,
        help="where to write the results (default: benchmarks/results/core-<time>.json)",
    )
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    args.sizes = QUICK if args.quick else Sizes()
    if args.json is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        args.json = RESULTS_DIR / f"core-{'quick-' if args.quick else ''}{stamp}.json"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if __name__ != "__main__":  # imported: workers cannot import this module by name
        cloudpickle.register_pickle_by_value(sys.modules[__name__])
    print(
        f"celeriac {celeriac.__version__}: {N_WORKERS} workers x {THREADS_PER_WORKER} thread, "
        f"{args.repeat} repetitions, sizes {asdict(args.sizes)}",
        file=sys.stderr,
    )
    machine = machine_info()
    samples, details = run_all(args.sizes, args.repeat)
    data = report(machine, samples, details, args)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(data, indent=2) + "\n")
    print()
    print(render_table(samples, args.sizes))
    if args.quick:
        print("\n--quick: sizes are reduced, so numbers are not comparable with the targets.")
    print(f"\nmedians of {args.repeat} repetitions; every sample in {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
