"""The data-plane benchmark runs end to end (``--quick``, Celeriac only).

Each worker and the client get a private ``/dev/shm`` (``unshare -m`` and a
tmpfs mount), which needs root or CAP_SYS_ADMIN: where that is refused, the
test is skipped and says why.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "data_plane.py"
PRIVATE_SHM = ["unshare", "-m", "--propagation", "private", "sh", "-c",
               "mount -t tmpfs -o size=1m tmpfs /dev/shm"]  # fmt: skip


def private_shm_refused() -> str | None:
    """Why this machine cannot give a process a /dev/shm of its own, or None."""
    if shutil.which("unshare") is None:
        return "unshare(1) is not installed"
    try:
        probe = subprocess.run(PRIVATE_SHM, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare -m failed: {exc}"
    if probe.returncode != 0:
        return f"no private /dev/shm here (needs root or CAP_SYS_ADMIN): {probe.stderr.strip()}"
    return None


@pytest.mark.timeout(240)
def test_quick_data_plane_writes_positive_figures(tmp_path: Path) -> None:
    refused = private_shm_refused()
    if refused:
        pytest.skip(refused)
    out = tmp_path / "out.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--peers", "celeriac", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=230,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    data = json.loads(out.read_text())
    result = data["results"]["celeriac"]
    assert result["status"] == "ok", result.get("error")
    assert result["details"]["isolation"]["ok"], result["details"]["isolation"]
    for key in data["rows"]:
        value = result["figures"].get(key)
        assert value is not None and value > 0, (key, value)
    for key, samples in result["samples"].items():
        assert samples and all(s > 0 for s in samples), (key, samples)
    assert len(result["samples"]["fan_in_s"]) == data["config"]["repeat"]
    teardown = result["teardown"]
    assert teardown["survivors"] == [] and teardown["left_in_dev_shm"] == [], teardown
    assert "workload" in proc.stdout and "celeriac" in proc.stdout  # the table was printed
