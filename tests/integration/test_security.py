"""CURVE keys and the ZAP allowlist, with real processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import zmq.auth

from celeriac import Client, LocalCluster, SchedulerUnavailable
from celeriac.wire import protocol
from celeriac.wire.protocol import VERSION, Message
from celeriac.wire.security import KeysError, create_keys, secure_client
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
    with LocalCluster(2, scheduler_args=args, worker_args=args, tcp=True) as cluster:
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


def test_a_client_key_cannot_register_as_a_worker(secure_cluster, keys: Path) -> None:
    """A client key claiming many slots would take other clients' tasks (H7)."""
    hello = Message(
        "hello-worker",
        {"version": VERSION, "slots": 1000, "queues": ["default"], "name": "rogue", "pid": 1},
    )
    context = zmq.Context()
    try:
        for role, refused in (("client", True), ("worker", False)):
            dealer = context.socket(zmq.DEALER)
            dealer.setsockopt(zmq.LINGER, 0)
            secure_client(dealer, keys, role)
            dealer.connect(secure_cluster.address)
            dealer.send_multipart(protocol.encode([hello]))
            assert dealer.poll(10_000), f"no answer to a {role} key"
            reply = protocol.decode(dealer.recv_multipart())[0]
            if refused:
                assert reply.op == "error" and reply["about"] == "hello-worker"
                assert "only a worker key may send hello-worker" in reply["text"]
            else:
                assert reply.op == "welcome"
            dealer.send_multipart(protocol.encode([Message("goodbye")]))
            dealer.close()
        with Client(secure_cluster.address, keys=keys) as client:
            client.wait_for_workers(2, timeout=20)
            assert client.submit(inc, 1).result(timeout=20) == 2
            names = [w["name"] for w in client.scheduler_info()["workers"]]
            assert "rogue" not in names  # the worker key's said goodbye; the other never got in
    finally:
        context.term()


def test_non_loopback_bind_without_keys_points_to_them() -> None:
    # Refused before anything is bound (tests bind loopback only).
    cmd = [*CELERIAC, "scheduler", "--host", "0.0.0.0", "--port", "0", "--no-journal"]
    refused = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert refused.returncode == 2
    assert "celeriac keys create" in refused.stderr and "--keys DIR" in refused.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as a second user")
def test_another_local_user_cannot_reach_the_embedded_cluster(cluster) -> None:
    """Its Unix socket is its only address (no TCP port), in a 0700 directory."""
    assert cluster.tcp_address is None
    path = cluster.address.removeprefix("ipc://")
    assert _connect_as(NOBODY, path) == "PermissionError"
    assert _connect_as(os.getuid(), path) == "connected"  # the check itself can succeed


def test_no_tcp_without_a_unix_socket_is_refused() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "celeriac", "scheduler", "--no-tcp", "--no-dashboard"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "--no-tcp leaves nothing to listen on: give --ipc PATH too" in result.stderr


NOBODY = 65534


def _connect_as(uid: int, path: str) -> str:
    """Connect to a Unix socket from a child process running as ``uid``: what happened."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to uid, try, report, never return into pytest
        outcome = b"error"
        try:
            os.close(read_end)
            if uid != os.getuid():
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(5)
                sock.connect(path)
            outcome = b"connected"
        except PermissionError:
            outcome = b"PermissionError"
        finally:
            os.write(write_end, outcome)
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        answer = reader.read().decode()
    os.waitpid(pid, 0)
    return answer
