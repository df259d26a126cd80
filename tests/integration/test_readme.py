"""The README's two commands: the quickstart runs on the embedded default, and CI runs
exactly the README's test command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


@pytest.mark.timeout(120)
def test_quickstart_runs_on_an_embedded_cluster_and_prints_its_results() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "examples" / "quickstart.py")],
        capture_output=True,
        text=True,
        timeout=100,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "add(inc(1), 10) = 12" in proc.stdout
    assert "10,000 tasks gathered, sum = 50005000" in proc.stdout
    assert "tree reduction of 1,024 leaves = 524800" in proc.stdout
