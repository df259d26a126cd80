"""CURVE keys and the ZAP allowlist, with real processes."""

from __future__ import annotations

from pathlib import Path

import pytest

from celeriac import Client


def test_missing_key_files_are_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        Client("tcp://127.0.0.1:1", keys=tmp_path, timeout=0.5)
