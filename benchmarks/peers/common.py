"""What every peer shares: sizes, the sample recorder, timing and process helpers.

Timing and /proc helpers come from ``benchmarks/core.py`` (the Celeriac-only
suite), so both suites measure the same way.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core import MB, MIB, N_WORKERS, THREADS_PER_WORKER, rss_mib, timed

BENCH_DIR = Path(__file__).resolve().parents[1]

__all__ = ["MB", "MIB", "N_WORKERS", "THREADS_PER_WORKER", "rss_mib", "timed"]


@dataclass(frozen=True)
class Sizes:
    fire_forget: int = 20_000  # W1
    tasks: int = 10_000  # W2
    round_trips: int = 1_000  # W3
    tree_leaves: int = 4_096  # W4
    array_bytes: int = 100 * MB  # W5
    w7_tasks: int = 200_000  # W7
    w7_samples: int = 8  # W7: RSS samples after the baseline
    warmup_tasks: int = 1_000


QUICK = Sizes(
    fire_forget=500,
    tasks=500,
    round_trips=50,
    tree_leaves=64,
    array_bytes=5 * MB,
    w7_tasks=2_000,
    w7_samples=4,
    warmup_tasks=100,
)


@dataclass
class Recorder:
    """Collects one peer's samples (``metric -> [value per repetition]``) and notes."""

    peer: str
    repeat: int
    samples: dict[str, list[float]] = field(default_factory=dict)
    details: dict[str, list[Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    save: Callable[[Recorder], None] | None = field(default=None, repr=False)

    def add(self, values: dict[str, float]) -> None:
        for metric, value in values.items():
            self.samples.setdefault(metric, []).append(float(value))

    def detail(self, name: str, value: Any) -> None:
        self.details.setdefault(name, []).append(value)

    def note(self, text: str) -> None:
        print(f"  [{self.peer}] note: {text}", file=sys.stderr, flush=True)
        self.notes.append(text)

    def repeat_run(self, name: str, once: Callable[[], dict[str, float]], times: int = 0) -> None:
        """Run one workload ``times`` (default: ``repeat``) times, recording every sample."""
        times = times or self.repeat
        for i in range(times):
            start = time.perf_counter()
            self.add(once())
            took = time.perf_counter() - start
            print(
                f"  [{self.peer}] {name} [{i + 1}/{times}] {took:.2f} s",
                file=sys.stderr,
                flush=True,
            )
            if self.save is not None:
                self.save(self)  # a peer stopped later still keeps what it measured


def round_trip_stats(call: Callable[[int], Any], n: int) -> tuple[float, float, float]:
    """Median, p99 and max latency (ms) of ``call(i)`` for ``i in range(n)``, one at a time."""
    latencies = []
    for i in range(n):
        seconds, result = timed(lambda i=i: call(i))
        if result != i + 1:
            raise AssertionError(f"round trip {i} returned {result!r}")
        latencies.append(seconds * 1000)
    p99 = statistics.quantiles(latencies, n=100, method="inclusive")[98]
    return statistics.median(latencies), p99, max(latencies)


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.002) -> Any:
    """Poll ``predicate`` until truthy; raise TimeoutError at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout:g} s")
        time.sleep(interval)


def tree_expected(leaves: int) -> int:
    """sum(inc(i) for i in range(leaves))"""
    return leaves * (leaves + 1) // 2


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc)."""
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                children.append(int(entry))
    return children


def peer_env(**extra: str) -> dict[str, str]:
    """Environment for peer worker processes: ``benchmarks/`` importable (``peers.*``)."""
    env = dict(os.environ)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(BENCH_DIR) + (os.pathsep + path if path else "")
    env.update(extra)
    return env


def cold_start(script: str, env: dict[str, str] | None = None, timeout: float = 120) -> float:
    """Run ``script`` in a fresh interpreter; it prints ``start done`` (``time.monotonic``).

    Returns ``done - start``: from the script's first line to its first result.
    """
    with tempfile.NamedTemporaryFile("w", suffix=".py", prefix="coldstart-", delete=False) as f:
        f.write(script)
    try:
        proc = subprocess.run(
            [sys.executable, f.name],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=BENCH_DIR,
        )
    finally:
        os.unlink(f.name)
    if proc.returncode != 0:
        raise RuntimeError(f"cold-start script failed:\n{proc.stderr[-3000:]}")
    start, done = map(float, proc.stdout.split()[-2:])
    return done - start


@contextmanager
def process_group(args: list[str], env: dict[str, str], **kwargs: Any) -> Iterator[Any]:
    """Start ``args`` in its own session; on exit SIGTERM it, then SIGKILL its whole group."""
    popen = subprocess.Popen(args, env=env, cwd=BENCH_DIR, start_new_session=True, **kwargs)
    try:
        yield popen
    finally:
        stop_group(popen)


def stop_group(popen: subprocess.Popen[Any], timeout: float = 15.0) -> None:
    if popen.poll() is None:
        popen.send_signal(signal.SIGTERM)
        try:
            popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(popen.pid, signal.SIGKILL)  # stragglers: pool children, grandchildren
    except (ProcessLookupError, PermissionError):
        pass
    if popen.poll() is None:
        popen.wait()
