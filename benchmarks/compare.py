"""Celeriac beside Celery (+Redis) and Dask distributed: the same workloads, one after another.

Run from the repository root (peers come from ``pip install -e '.[bench]'``)::

    python benchmarks/compare.py                       # full sizes, 3 repetitions
    python benchmarks/compare.py --quick               # tiny sizes, 1 repetition (smoke test)
    python benchmarks/compare.py --peers celeriac,dask --repeat 5 --json out.json --png out.png

Each peer runs in its own Python process with 2 worker processes x 1 slot. The
table shows medians and the Celeriac/peer ratio; the JSON keeps every sample
and the PNG draws the medians. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import importlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # core, peers

import core
from core import Metric
from peers.common import MB, N_WORKERS, QUICK, THREADS_PER_WORKER, Recorder, Sizes

PEERS = ("celeriac", "celery", "dask")
COLORS = {"celeriac": "#2e7d32", "celery": "#8d6e63", "dask": "#1565c0"}

#: key -> (workload, how to read it, Celeriac's target from issue 6). ``label`` is
#: filled from Sizes plus array_mb and tree_tasks.
METRICS: dict[str, tuple[str, Metric]] = {
    "w1_fire_forget": ("W1", Metric("W1 fire-and-forget {fire_forget:,}, a call per task",
                                    "tasks/s", True, 30_000)),
    "w1_enqueue": ("W1", Metric("W1 enqueue rate, one thread", "calls/s", True, 20_000)),
    "w1_batch": ("W1", Metric("W1 fire-and-forget {fire_forget:,}, batched",
                              "tasks/s", True, 30_000)),
    "w2_futures": ("W2", Metric("W2 submit+gather {tasks:,}, futures", "tasks/s", True, 20_000)),
    "w2_celery_style": ("W2", Metric("W2 .delay()+.get() {tasks:,}", "tasks/s", True, 20_000)),
    "w3_median": ("W3", Metric("W3 round trip median, futures", "ms", False, 0.25)),
    "w3_p99": ("W3", Metric("W3 round trip p99, futures", "ms", False, 1.0)),
    "w3_celery_style_median": ("W3", Metric("W3 round trip median, .delay().get()",
                                            "ms", False, 0.25)),
    "w3_celery_style_p99": ("W3", Metric("W3 round trip p99, .delay().get()", "ms", False, 1.0)),
    "w4_tree": ("W4", Metric("W4 tree {tree_leaves:,} leaves ({tree_tasks:,} tasks)",
                             "s", False, 0.4)),
    "w4_canvas": ("W4", Metric("W4 nested-chord tree {tree_leaves:,} leaves", "s", False, 0.4)),
    "w5_to_client": ("W5", Metric("W5 {array_mb:g} MB result -> client", "MB/s", True, 1_500)),
    "w5_to_task": ("W5", Metric("W5 {array_mb:g} MB argument -> task", "MB/s", True, 2_000)),
    "w6_cold_start": ("W6", Metric("W6 cold start to first result", "s", False, 0.4)),
    "w7_memory": ("W7", Metric("W7 sched. RSS after {w7_tasks:,} ignored", "MiB", False, 100)),
    "worker_memory": ("W0", Metric("worker RSS after warm-up (max)", "MiB", False, 40)),
}  # fmt: skip

#: What each peer runs where the APIs differ (printed under the table).
IMPLEMENTATIONS = """\
how each peer runs it:
  W1 a call per task: celeriac App task(ignore_result=True).delay(); celery the same;
                      dask fire_and_forget(client.submit())
  W1 enqueue:         the same loop, calls/s until the last call returned (celeriac and
                      celery: accepted by scheduler / Redis; dask: unconfirmed)
  W1 batched:         celeriac and celery group(...).apply_async() per 5,000;
                      dask fire_and_forget(client.map())
  W2/W3 futures:      celeriac and dask Client.submit + gather / .result();
                      celery .delay() + .get() (its only API, so both W2/W3 rows)
  W2/W3 .delay():     celeriac App task .delay() + AsyncResult.get(); celery the same
  W4 tree:            celeriac and dask pairwise submit on futures; celery nested chords
  W4 nested chords:   celeriac and celery chord([tree, tree], sum_list.s()), recursively
  W7:                 celeriac scheduler RSS; celery Redis used_memory_rss; dask skipped"""


# -- Redis for Celery -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_server_binary() -> str | None:
    """``redis-server``, installed with apt (``apt-get update`` first if needed) when missing."""
    found = shutil.which("redis-server")
    if found:
        return found
    print("redis-server is missing: apt-get install -y redis-server", file=sys.stderr)
    install = ["apt-get", "install", "-y", "redis-server"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    quiet: dict[str, Any] = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env}
    try:
        if subprocess.run(install, **quiet).returncode != 0:
            subprocess.run(["apt-get", "update"], **quiet)
            subprocess.run(install, **quiet)
    except OSError as exc:
        print(f"cannot run apt-get: {exc}", file=sys.stderr)
    return shutil.which("redis-server")


def start_redis(binary: str) -> tuple[subprocess.Popen[bytes], str]:
    """A private Redis on a free loopback port, no persistence."""
    port = free_port()
    popen = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", tempfile.gettempdir(), "--loglevel", "warning"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(16).startswith(b"+PONG"):
                    return popen, f"redis://127.0.0.1:{port}"
        except OSError:
            pass
        if popen.poll() is not None or time.monotonic() > deadline:
            popen.kill()
            raise RuntimeError(f"redis-server did not start on port {port}")
        time.sleep(0.05)


def stop(popen: subprocess.Popen[bytes]) -> None:
    popen.terminate()
    try:
        popen.wait(10)
    except subprocess.TimeoutExpired:
        popen.kill()
        popen.wait()


# -- running one peer (in its own process) --------------------------------------------------


def run_peer_here(name: str, sizes: Sizes, repeat: int, out: Path) -> int:
    """``--run-peer``: run every workload of one peer here and write its samples to ``out``."""
    module = importlib.import_module(f"peers.{name}_peer")

    def save(rec: Recorder, error: str | None = None) -> None:
        data = {k: v for k, v in dataclasses.asdict(rec).items() if k != "save"}
        out.write_text(json.dumps(data | {"error": error}))

    rec = Recorder(name, repeat, save=save)
    error = None
    try:
        module.run(sizes, rec)
    except BaseException:  # SystemExit from SIGTERM too: clean-up ran, keep the samples
        error = traceback.format_exc()
        print(error, file=sys.stderr)
    save(rec, error)
    return 1 if error else 0


def exit_on_sigterm() -> None:
    """SIGTERM unwinds like an exception, so ``finally`` blocks stop what we started."""

    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(f"stopped by signal {signum}")

    signal.signal(signal.SIGTERM, handler)


def run_peer(name: str, args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    """Run one peer in a fresh interpreter; its samples, or why there are none."""
    module = importlib.import_module(f"peers.{name}_peer")
    missing = module.available()
    if not missing and name == "celery" and not env.get("BENCH_REDIS_URL"):
        missing = "no Redis server: redis-server is missing and apt-get could not install it"
    if missing:
        print(f"skipping {name}: {missing}", file=sys.stderr)
        return {"status": "skipped", "reason": missing}
    print(f"== {name}", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / f"{name}.json"
        cmd = [sys.executable, __file__, "--run-peer", name, "--peer-out", str(out),
               "--repeat", str(args.repeat), "--w7-tasks", str(args.sizes.w7_tasks)]  # fmt: skip
        if args.quick:
            cmd.append("--quick")
        start = time.monotonic()
        child = subprocess.Popen(cmd, env=env)
        try:
            code: int | str = child.wait(args.peer_timeout)
        except subprocess.TimeoutExpired:
            code = "timeout"
        finally:
            if child.poll() is None:  # timed out, or we are being stopped: let it clean up
                child.terminate()
                try:
                    child.wait(60)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
        data = json.loads(out.read_text()) if out.exists() else {"samples": {}, "error": None}
    status = "ok" if code == 0 else "failed"
    if code != 0:
        print(f"{name} failed ({code}); keeping what it measured", file=sys.stderr)
    medians = {k: statistics.median(v) for k, v in data["samples"].items() if v}
    return {
        "status": status,
        "seconds": round(time.monotonic() - start, 1),
        "samples": data["samples"],
        "median": medians,
        "details": data.get("details", {}),
        "notes": data.get("notes", []),
        "error": data.get("error") or (None if code == 0 else f"exit {code}"),
    }


# -- the table, the JSON and the chart -------------------------------------------------------


def fill(sizes: Sizes) -> dict[str, Any]:
    return {
        **dataclasses.asdict(sizes),
        "array_mb": sizes.array_bytes / MB,
        "tree_tasks": 2 * sizes.tree_leaves - 1,
    }


def ratio(results: dict[str, Any], metric: str, peer: str) -> float | None:
    ours = results.get("celeriac", {}).get("median", {}).get(metric)
    theirs = results.get(peer, {}).get("median", {}).get(metric)
    return ours / theirs if ours and theirs else None


def render_table(results: dict[str, Any], sizes: Sizes) -> str:
    shown = [p for p in PEERS if p == "celeriac" or results.get(p, {}).get("median")]
    others = shown[1:]
    header = ["workload", "unit", *shown, *(f"celeriac/{p}" for p in others), "target", "ok"]
    rows = [header]
    for key, (_, metric) in METRICS.items():
        medians = [results.get(p, {}).get("median", {}).get(key) for p in shown]
        ours = medians[0]
        met = metric.meets(ours) if ours is not None else None
        rows.append([
            metric.label.format(**fill(sizes)),
            metric.unit + (" ↑" if metric.higher_is_better else " ↓"),
            *(core._fmt(m) for m in medians),
            *(_fmt_ratio(ratio(results, key, p)) for p in others),
            ("≥ " if metric.higher_is_better else "≤ ") + core._fmt(metric.target),
            "" if met is None else "yes" if met else "NO",
        ])  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]

    def line(row: list[str]) -> str:
        cells = zip(row, widths, strict=True)
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(cells))

    lines = [line(row) for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def _fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def draw_chart(results: dict[str, Any], sizes: Sizes, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(METRICS)
    cols = 4
    rows = (len(keys) + 1 + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.0 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys, strict=False):
        metric = METRICS[key][1]
        values = [results.get(p, {}).get("median", {}).get(key) for p in PEERS]
        bars = ax.bar(PEERS, [v or 0 for v in values], color=[COLORS[p] for p in PEERS])
        for bar, value in zip(bars, values, strict=True):
            ax.annotate("n/a" if value is None else core._fmt(value),
                        (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=8)  # fmt: skip
        arrow = "higher is better" if metric.higher_is_better else "lower is better"
        ax.set_title(f"{metric.label.format(**fill(sizes))}\n{metric.unit}, {arrow}", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.margins(y=0.18)
    ax = axes.flat[len(keys)]
    for peer in PEERS:
        for trace in results.get(peer, {}).get("details", {}).get("w7_trace", []):
            xs, ys = zip(*trace, strict=True)
            label = f"{peer} ({'Redis' if peer == 'celery' else 'scheduler'})"
            ax.plot(xs, ys, marker="o", color=COLORS[peer], label=label)
    ax.set_title("W7 memory while ignored-result tasks run\nMiB vs tasks executed", fontsize=9)
    ax.set_ylim(bottom=0)
    ax.xaxis.set_major_formatter(lambda x, _: f"{x / 1000:g}k")
    ax.tick_params(labelsize=8)
    if ax.lines:
        ax.legend(fontsize=8)
    for extra in list(axes.flat)[len(keys) + 1 :]:
        extra.axis("off")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def machine_info() -> dict[str, Any]:
    info = core.machine_info()
    for name in ("celery", "kombu", "redis", "dask", "distributed"):
        info[name] = core._version(name)
    binary = shutil.which("redis-server")
    if binary:
        info["redis_server"] = subprocess.run(
            [binary, "--version"], capture_output=True, text=True
        ).stdout.strip()
    return info


# -- command line --------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 1 repetition")
    parser.add_argument("--repeat", type=int, help="repetitions per workload (3; --quick: 1)")
    parser.add_argument("--peers", default=",".join(PEERS), help="comma-separated subset")
    parser.add_argument("--w7-tasks", type=int, help="W7 task count (200,000; --quick: 2,000)")
    parser.add_argument("--json", type=Path, help="results file (benchmarks/results/...)")
    parser.add_argument("--png", type=Path, help="chart file (default: beside the JSON)")
    parser.add_argument("--peer-timeout", type=float, help="seconds allowed per peer")
    parser.add_argument("--run-peer", help=argparse.SUPPRESS)  # internal: one peer, here
    parser.add_argument("--peer-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.repeat = args.repeat or (1 if args.quick else 3)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    args.peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = set(args.peers) - set(PEERS)
    if unknown:
        parser.error(f"unknown peers {sorted(unknown)}; choose from {','.join(PEERS)}")
    sizes = QUICK if args.quick else Sizes()
    if args.w7_tasks:
        sizes = dataclasses.replace(sizes, w7_tasks=args.w7_tasks)
    args.sizes = sizes
    args.peer_timeout = args.peer_timeout or (300 if args.quick else 3600)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if args.json is None:
        args.json = core.RESULTS_DIR / f"compare-{'quick-' if args.quick else ''}{stamp}.json"
    args.png = args.png or args.json.with_suffix(".png")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    exit_on_sigterm()
    if args.run_peer:
        return run_peer_here(args.run_peer, args.sizes, args.repeat, args.peer_out)
    print(
        f"peers {','.join(args.peers)}: {N_WORKERS} worker processes x {THREADS_PER_WORKER} slot, "
        f"{args.repeat} repetition(s), sizes {dataclasses.asdict(args.sizes)}",
        file=sys.stderr,
    )
    machine = machine_info()
    env = dict(os.environ)
    redis: subprocess.Popen[bytes] | None = None
    results: dict[str, Any] = {}
    try:
        for peer in PEERS:
            if peer not in args.peers:
                continue
            if peer == "celery" and redis is None and importlib.util.find_spec("celery"):
                binary = redis_server_binary()
                if binary:
                    redis, env["BENCH_REDIS_URL"] = start_redis(binary)
            results[peer] = run_peer(peer, args, env)
    finally:
        if redis is not None:
            stop(redis)
    data = {
        "benchmark": "celeriac-compare",
        "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "config": {
            "quick": args.quick,
            "repeat": args.repeat,
            "peers": args.peers,
            "n_workers": N_WORKERS,
            "slots_per_worker": THREADS_PER_WORKER,
            "sizes": dataclasses.asdict(args.sizes),
        },
        "metrics": {
            key: {
                "workload": w,
                **dataclasses.asdict(m),
                "label": m.label.format(**fill(args.sizes)),
            }
            for key, (w, m) in METRICS.items()
        },
        "results": results,
        "ratios": {
            key: {p: ratio(results, key, p) for p in PEERS if p != "celeriac"} for key in METRICS
        },
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(data, indent=2) + "\n")
    title = (
        f"Celeriac vs Celery+Redis vs Dask — {N_WORKERS} worker processes x 1 slot, "
        f"medians of {args.repeat}{' (--quick sizes)' if args.quick else ''}"
    )
    try:
        draw_chart(results, args.sizes, args.png, title)
    except ImportError:
        print("matplotlib is not installed: no chart (pip install -e '.[bench]')", file=sys.stderr)
        args.png = None
    print()
    print(render_table(results, args.sizes))
    print()
    print(IMPLEMENTATIONS)
    print_notes(results)
    print(f"\nmedians of {args.repeat} repetition(s); every sample in {args.json}")
    if args.png:
        print(f"chart: {args.png}")
    return 0 if all(r["status"] != "failed" for r in results.values()) else 1


def print_notes(results: dict[str, Any]) -> None:
    for peer, result in results.items():
        if result["status"] == "skipped":
            print(f"\n{peer}: skipped ({result['reason']})")
            continue
        lines = list(result.get("notes", []))
        for trace in result.get("details", {}).get("w7_trace", []):
            lines.append("W7 MiB by tasks run: " + ", ".join(f"{n:,}: {m:.1f}" for n, m in trace))
        if result["status"] == "failed":
            lines.append(f"FAILED: {(result['error'] or '').strip().splitlines()[-1:]}")
        if lines:
            print(f"\n{peer} ({result['seconds']} s):")
            print("\n".join(f"  - {line}" for line in lines))


if __name__ == "__main__":
    sys.exit(main())
