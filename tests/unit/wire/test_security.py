"""CURVE keys: the files `celeriac keys create` writes, and clear errors for missing ones."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest
import zmq.auth

from celeriac import Client
from celeriac.wire.security import create_keys


def test_missing_key_files_are_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        Client("tcp://127.0.0.1:1", keys=tmp_path, timeout=0.5)


def test_key_files_are_created_with_their_final_modes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # issue 13, M2: secrets were written readable and chmod-ed after (a window
    # another user hit 19 times in 20); now each is created 0600, and nothing
    # is ever narrowed afterwards.
    opened: dict[str, tuple[int, int]] = {}
    real_open = os.open

    def recording_open(path: Any, flags: int, mode: int = 0o777, **kw: Any) -> int:
        opened[os.path.basename(path)] = (flags, mode)
        return real_open(path, flags, mode, **kw)

    def no_chmod(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a key file's mode was changed after it was created")

    monkeypatch.setattr(os, "open", recording_open)
    monkeypatch.setattr(os, "chmod", no_chmod)
    old_umask = os.umask(0)  # the widest umask: modes must not depend on it
    try:
        written = create_keys(tmp_path / "keys")
    finally:
        os.umask(old_umask)
    for role in ("scheduler", "worker", "client"):
        flags, mode = opened[f"{role}.key_secret"]
        assert flags & os.O_EXCL and flags & os.O_NOFOLLOW and mode == 0o600
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in written}
    assert {n: m for n, m in modes.items() if n.endswith("_secret")} == {
        "scheduler.key_secret": 0o600,
        "worker.key_secret": 0o600,
        "client.key_secret": 0o600,
    }
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    assert zmq.auth.load_certificate(tmp_path / "keys" / "client.key_secret")[1]
