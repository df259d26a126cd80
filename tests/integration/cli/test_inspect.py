"""``celeriac inspect``: what the scheduler sees, for people and for health checks."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

from celeriac import Client, LocalCluster
from celeriac.schedules import every
from celeriac.testing import wait_until
from tasks_for_tests import fail

CELERIAC = [sys.executable, "-m", "celeriac"]


def inspect(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELERIAC_")}
    return subprocess.run(
        [*CELERIAC, "inspect", *args], capture_output=True, text=True, timeout=30, env=env
    )


def test_inspect_shows_workers_queues_tasks_and_periodic_jobs(
    cluster: LocalCluster, client: Client
) -> None:
    assert client.gather(client.map(abs, [-1, -2, -3]), timeout=30) == [1, 2, 3]
    failed = client.submit(fail, "boom for inspect")
    wait_until(lambda: failed.done(), timeout=30)
    client.add_periodic_task(every(minutes=1), abs, -5, name="every-minute-abs")

    result = inspect(cluster.address)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"scheduler {cluster.address}  pid" in out  # its Unix socket alone: no TCP port
    assert "workers (2):" in out
    for worker in client.scheduler_info()["workers"]:
        assert worker["name"] in out and str(worker["pid"]) in out
    assert "MiB" in out  # memory
    assert "queues:\nqueue    depth" in out and "\ndefault  0" in out
    assert "tasks by state:" in out and "erred" in out
    assert "periodic jobs:" in out and "every-minute-abs" in out
    assert "recent failures" in out and "boom for inspect" in out


def test_inspect_json_is_the_scheduler_info(cluster: LocalCluster, client: Client) -> None:
    client.submit(abs, -1).result(timeout=30)
    result = inspect(cluster.address, "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["scheduler"]["address"] == cluster.address
    assert "ipc_address" not in info["scheduler"]  # the address is the Unix socket
    assert len(info["workers"]) == cluster.n_workers
    assert {"slots", "pid", "memory", "assigned"} <= set(info["workers"][0])
    assert info["counters"]["done"] >= 1


def test_status_alias_and_address_from_the_environment(cluster: LocalCluster) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELERIAC_")}
    env["CELERIAC_ADDRESS"] = cluster.address
    result = subprocess.run(
        [*CELERIAC, "status", "--json"], capture_output=True, text=True, timeout=30, env=env
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["scheduler"]["address"] == cluster.address


def test_unreachable_scheduler_exits_2_within_the_timeout() -> None:
    with socket.socket() as s:  # a loopback port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = inspect(f"tcp://127.0.0.1:{port}", "--timeout", "0.5")
    assert result.returncode == 2
    assert "no Celeriac scheduler answered" in result.stderr
    result = inspect("http://nowhere")
    assert result.returncode == 2 and "use tcp:// or ipc://" in result.stderr
