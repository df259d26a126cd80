"""The comparison runs end to end (``--quick``, Celeriac only: no Redis, Celery or Dask needed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

COMPARE = Path(__file__).resolve().parents[2] / "benchmarks" / "compare.py"

WORKLOADS = ("W0", "W1", "W2", "W3", "W4", "W5", "W6", "W7")


@pytest.mark.timeout(180)
def test_quick_compare_writes_every_workload(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    proc = subprocess.run(
        [sys.executable, str(COMPARE), "--quick", "--repeat", "1", "--peers", "celeriac",
         "--json", str(out), "--png", str(tmp_path / "out.png")],
        capture_output=True,
        text=True,
        timeout=170,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    data = json.loads(out.read_text())
    result = data["results"]["celeriac"]
    assert result["status"] == "ok", result.get("error")
    seen = set()
    for key, metric in data["metrics"].items():
        samples, median = result["samples"].get(key), result["median"].get(key)
        assert samples and len(samples) == 1 and samples[0] > 0, (key, samples)
        assert median and median > 0, (key, median)
        seen.add(metric["workload"])
    assert seen == set(WORKLOADS)
    assert "workload" in proc.stdout and "celeriac" in proc.stdout  # the table was printed
