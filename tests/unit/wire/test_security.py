"""CURVE keys and the ZAP allowlist, with real processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from celeriac import Client

CELERIAC = [sys.executable, "-m", "celeriac"]


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    result = subprocess.run(
        [*CELERIAC, "keys", "create", str(tmp_path / "keys")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return tmp_path / "keys"


def test_missing_key_files_are_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        Client("tcp://127.0.0.1:1", keys=tmp_path, timeout=0.5)
