"""Does the journal cost `.delay()` throughput?  Journal off vs on, same run.

    python benchmarks/journal.py [--tasks 20000] [--threads 8] [--repeat 3] [--json PATH]

Starts a scheduler (on a fixed free port, so it may journal) and 2 worker
processes for each mode: ``--no-journal``, ``--fsync batch`` (the default) and
``--fsync always``; sends ``--tasks`` confirmed ``.delay()`` calls of a trivial
task from ``--threads`` threads and reports calls/s until all were accepted, and
tasks/s until all ran. The target (issue 5): with ``--fsync batch``, within 25%
of journal-off.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from celeriac import App

QUIET = ["--log-level", "WARNING"]
MODES = {
    "journal off": ["--no-journal"],
    "journal, fsync batch": ["--fsync", "batch"],
    "journal, fsync always": ["--fsync", "always"],
}


def noop(i: int) -> int:
    return i


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_mode(args: list[str], tasks: int, threads: int) -> dict[str, float]:
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    base = [sys.executable, "-m", "celeriac"]
    with tempfile.TemporaryDirectory() as tmp:
        journal = [] if "--no-journal" in args else ["--journal", f"{tmp}/journal.sqlite3"]
        scheduler = subprocess.Popen(
            [*base, "scheduler", "--port", str(port), "--no-dashboard", *journal, *args, *QUIET],
            stdout=subprocess.DEVNULL,
        )
        worker = subprocess.Popen(
            [*base, "worker", address, "--nprocs", "2", "--log-level", "WARNING"]
        )
        try:
            return measure(address, tasks, threads)
        finally:
            for popen in (worker, scheduler):
                popen.terminate()
                popen.wait(30)


def measure(address: str, tasks: int, threads: int) -> dict[str, float]:
    with App(address, timeout=30, result_ttl=600) as app:
        task = app.task(noop, ignore_result=False)
        app.client.wait_for_workers(2, timeout=30)
        per_thread = tasks // threads
        started = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            batches = list(
                pool.map(lambda t: [task.delay(i) for i in range(per_thread)], range(threads))
            )
        accepted = time.perf_counter() - started
        for result in (r for batch in batches for r in batch):
            result.get(timeout=120)
        ran = time.perf_counter() - started
    total = per_thread * threads
    return {"accepted_per_s": total / accepted, "ran_per_s": total / ran}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results: dict[str, dict[str, float]] = {}
    for name, mode_args in MODES.items():
        samples = [run_mode(mode_args, args.tasks, args.threads) for _ in range(args.repeat)]
        results[name] = {key: statistics.median(s[key] for s in samples) for key in samples[0]}
        figures = results[name]
        accepted, ran = figures["accepted_per_s"], figures["ran_per_s"]
        print(f"{name:24} accepted {accepted:9,.0f}/s   ran {ran:9,.0f}/s", flush=True)
    base = results["journal off"]["accepted_per_s"]
    for name, figures in results.items():
        print(f"{name:24} {figures['accepted_per_s'] / base:6.0%} of journal-off acceptance")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
