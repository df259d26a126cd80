"""Tasks keep their signatures for mypy (``Task(Generic[P, R])``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SAMPLE = Path(__file__).parent / "typing" / "task_signatures.py"


@pytest.mark.timeout(120)
def test_mypy_checks_delay_arguments_and_result_types() -> None:
    pytest.importorskip("mypy")
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-error-summary", "--hide-error-context", str(SAMPLE)],
        capture_output=True,
        text=True,
        timeout=110,
    )
    reported = {
        int(line.split(":")[1]) for line in result.stdout.splitlines() if ": error:" in line
    }
    expected = {
        number
        for number, line in enumerate(SAMPLE.read_text().splitlines(), start=1)
        if "# E:" in line
    }
    assert reported == expected, result.stdout
