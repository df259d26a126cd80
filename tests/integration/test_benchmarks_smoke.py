"""The benchmark suite runs end to end (``--quick``) and writes every workload's numbers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "benchmarks" / "core.py"

WORKLOADS = (
    "submit_gather",
    "map_gather",
    "round_trip_median",
    "round_trip_p99",
    "tree_reduction",
    "array_to_client",
    "array_to_task",
    "cold_start",
    "worker_memory",
)


@pytest.mark.timeout(120)
def test_quick_benchmark_writes_every_workload(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    proc = subprocess.run(
        [sys.executable, str(CORE), "--quick", "--repeat", "1", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    data = json.loads(out.read_text())
    assert data["machine"]["cpu_count"]
    results = data["results"]
    for name in WORKLOADS:
        assert name in results, f"{name} missing from the JSON"
        samples, median = results[name]["samples"], results[name]["median"]
        assert len(samples) == 1 and all(s > 0 for s in samples), (name, samples)
        assert median > 0, (name, median)
    assert "workload" in proc.stdout  # the table was printed
