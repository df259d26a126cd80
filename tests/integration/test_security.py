"""CURVE keys and the ZAP allowlist, with real processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import zmq.auth

from celeriac import Client, LocalCluster, SchedulerUnavailable
from celeriac.wire.security import KeysError, create_keys
from tasks_for_tests import inc

CELERIAC = [sys.executable, "-m", "celeriac"]


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    result = subprocess.run(
        [*CELERIAC, "keys", "create", str(tmp_path / "keys")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return tmp_path / "keys"


@pytest.fixture
def secure_cluster(keys: Path):
    args = ("--keys", str(keys))
    with LocalCluster(2, scheduler_args=args, worker_args=args) as cluster:
        yield cluster


def test_keys_create_writes_pairs_and_allowlist(keys: Path) -> None:
    names = sorted(p.name for p in keys.iterdir())
    assert names == [
        "authorized",
        "client.key",
        "client.key_secret",
        "scheduler.key",
        "scheduler.key_secret",
        "worker.key",
        "worker.key_secret",
    ]
    assert sorted(p.name for p in (keys / "authorized").iterdir()) == ["client.key", "worker.key"]
    assert (keys / "client.key_secret").stat().st_mode & 0o077 == 0
    with pytest.raises(KeysError, match="already holds keys"):
        create_keys(keys)


def test_authorized_client_and_workers_are_served(secure_cluster, keys: Path) -> None:
    with Client(secure_cluster.address, keys=keys) as client:
        client.wait_for_workers(2)
        assert client.submit(inc, 41).result(timeout=20) == 42


def test_client_without_keys_gets_nothing_through(secure_cluster) -> None:
    # Over and over: once its handshake has failed, a DEALER has no connection
    # to queue the hello on, and a plain send would block the caller forever.
    for address in [secure_cluster.address, secure_cluster.tcp_address] * 5:
        with pytest.raises(SchedulerUnavailable):
            Client(address, timeout=0.3)


def test_client_with_an_unlisted_key_gets_nothing_through(secure_cluster, keys, tmp_path) -> None:
    # A valid CURVE key that knows the scheduler's public key, but is not in
    # authorized/: CURVE alone would admit it; the ZAP allowlist must not.
    rogue = tmp_path / "rogue"
    rogue.mkdir()
    zmq.auth.create_certificates(rogue, "client")
    (rogue / "scheduler.key").write_bytes((keys / "scheduler.key").read_bytes())
    with pytest.raises(SchedulerUnavailable):
        Client(secure_cluster.address, keys=rogue, timeout=1)


def test_non_loopback_bind_without_keys_points_to_them() -> None:
    # Refused before anything is bound (tests bind loopback only).
    cmd = [*CELERIAC, "scheduler", "--host", "0.0.0.0", "--port", "0", "--no-journal"]
    refused = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert refused.returncode == 2
    assert "celeriac keys create" in refused.stderr and "--keys DIR" in refused.stderr
