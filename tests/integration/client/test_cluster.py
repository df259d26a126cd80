"""The embedded cluster behind ``Client()``: start-up on a port it picks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

import celeriac.client.cluster as embedded
from celeriac import Client, LocalCluster
from celeriac.client.cluster import ClusterStartError
from tasks_for_tests import inc


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port something else is already listening on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


@pytest.mark.timeout(60)
def test_a_port_taken_before_the_scheduler_binds_it_is_replaced(
    monkeypatch: pytest.MonkeyPatch, cluster_factory: Callable[..., LocalCluster], busy_port: int
) -> None:
    real_free_port = embedded._free_port
    picks = [busy_port]
    monkeypatch.setattr(embedded, "_free_port", lambda: picks.pop(0) if picks else real_free_port())
    local = cluster_factory(n_workers=1, log_level="ERROR", tcp=True)
    assert local.tcp_address is not None and not local.tcp_address.endswith(f":{busy_port}")
    with Client(local.address) as client:
        assert client.submit(inc, 1).result(timeout=20) == 2


@pytest.mark.timeout(60)
def test_a_port_that_stays_taken_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, busy_port: int
) -> None:
    monkeypatch.setattr(embedded, "_free_port", lambda: busy_port)
    with pytest.raises(ClusterStartError, match="exited with code 1"):
        LocalCluster(1, log_level="ERROR", tcp=True)


@pytest.mark.timeout(60)
def test_the_embedded_scheduler_keeps_work_in_memory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """No journal file: its port is random, so a journal could only litter or
    hand stale work to a later cluster that draws the same port."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    with LocalCluster(1, log_level="ERROR") as local, Client(local.address) as client:
        assert client.submit(inc, 1).result(timeout=20) == 2
    assert list(tmp_path.rglob("*")) == []


@pytest.mark.timeout(60)
def test_zero_workers_is_the_scheduler_alone() -> None:
    with LocalCluster(0, log_level="ERROR") as local, Client(local.address) as client:
        assert client.scheduler_info()["workers"] == []
        future = client.submit(inc, 1)
        assert client.status([future.key]) == {future.key: "PENDING"}  # held until a worker comes


@pytest.mark.timeout(60)
def test_clients_and_workers_meet_on_a_private_unix_socket_alone() -> None:
    with LocalCluster(n_workers=1, log_level="ERROR") as local:
        assert local.address.startswith("ipc://") and local.tcp_address is None
        directory = Path(local.address.removeprefix("ipc://")).parent
        assert directory.stat().st_mode & 0o077 == 0  # no other user may connect
        # ... and nothing else: no TCP port but the dashboard's (which asks a token)
        dashboard_port = int(urlsplit(local.dashboard_address).port or 0)
        assert _tcp_listeners(local.scheduler_pid) == [dashboard_port]
        with Client(local.address) as client:
            assert client.submit(inc, 1).result(timeout=20) == 2
    assert not directory.exists()


@pytest.mark.timeout(60)
def test_tcp_is_there_when_asked_for() -> None:
    with LocalCluster(n_workers=1, log_level="ERROR", tcp=True) as local:
        assert local.address.startswith("ipc://") and local.tcp_address is not None
        port = int(local.tcp_address.rsplit(":", 1)[1])
        assert port in _tcp_listeners(local.scheduler_pid)
        with Client(local.address) as client, Client(local.tcp_address) as over_tcp:
            assert client.submit(inc, 1).result(timeout=20) == 2
            assert over_tcp.submit(inc, 2).result(timeout=20) == 3


def _tcp_listeners(pid: int) -> list[int]:
    """Ports the process listens on (TCP, IPv4 and IPv6), from /proc."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd)
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    ports = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.append(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


@pytest.mark.timeout(60)
def test_the_socket_directory_goes_even_if_nobody_closes_the_cluster(tmp_path: Path) -> None:
    script = "from celeriac import Client; c = Client(n_workers=0); print(c.address)"
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"ipc://{tmp_path}/celeriac-")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.timeout(60)
def test_a_unix_socket_of_ones_own_is_the_cluster_address(tmp_path: Path) -> None:
    path = tmp_path / "mine.sock"
    with LocalCluster(n_workers=1, log_level="ERROR", scheduler_args=("--ipc", str(path))) as local:
        assert local.address == f"ipc://{path}"
        with Client(local.address) as client:
            assert client.submit(inc, 1).result(timeout=20) == 2
