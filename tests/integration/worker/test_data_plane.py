"""Results live on the workers, between "hosts": real scheduler and worker processes.

Each worker runs with a ``/dev/shm`` of its own (a mount namespace with a
fresh tmpfs), so nothing can travel through shared memory and the scheduler
must not see the bytes: large results stay where they were made, dependents
fetch them from the worker that keeps them, clients too.  One test puts the
workers on two hosts of their own (network namespaces joined by a veth pair,
CURVE keys on every socket).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from celeriac import Client, FutureLostError, wait
from celeriac.testing import wait_until
from celeriac.testing.hosts import (
    CELERIAC,
    Hosts,
    NetworkPair,
    netns_problem,
    private_shm,
    unshare_problem,
)
from celeriac.testing.processes import FAST_SCHEDULER, free_port
from tasks_for_tests import array_sum, filled

MB = 1_000_000
PART = 4 * MB  # over the 1 MiB inline limit: kept on the worker

_UNSHARE = unshare_problem()
pytestmark = pytest.mark.skipif(_UNSHARE is not None, reason=_UNSHARE or "")


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[Hosts]:
    with Hosts(str(tmp_path)) as started:
        yield started


def start(
    hosts: Hosts, workers: int, *scheduler_args: str, worker_args: tuple[str, ...] = ()
) -> str:
    """A scheduler on a free loopback port and ``workers`` workers with private ``/dev/shm``."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    hosts.start(
        "scheduler",
        [*CELERIAC, "scheduler", "--port", str(port), "--no-dashboard", *scheduler_args],
    )
    for i in range(workers):
        command = [*CELERIAC, "worker", address, "--log-level", "INFO", *worker_args]
        hosts.start(f"worker-{i}", private_shm(command))
    return address


def kept(client: Client) -> list[tuple[int, int]]:
    """(results, bytes) each worker keeps, as the scheduler counts them."""
    return [(w["kept"], w["kept_bytes"]) for w in client.scheduler_info()["workers"]]


def test_a_fan_in_fetches_each_input_from_the_worker_that_keeps_it(hosts: Hosts) -> None:
    address = start(hosts, 2)
    with Client(address, timeout=30) as client:
        client.wait_for_workers(2, timeout=30)
        parts = [client.submit(filled, i, PART) for i in range(6)]
        wait(parts, timeout=60)
        counts = kept(client)
        assert sum(n for n, _ in counts) == 6, hosts.log("scheduler")
        assert all(n > 0 for n, _ in counts)  # each worker keeps some: the fan-in must fetch
        assert sum(size for _, size in counts) >= 6 * PART
        assert client.submit(array_sum, *parts).result(timeout=60) == sum(
            i * (PART // 8) for i in range(6)
        )
        np.testing.assert_array_equal(parts[5].result(timeout=60), np.full(PART // 8, 5.0))
        del parts
        wait_until(lambda: kept(client) == [(0, 0), (0, 0)], timeout=30)


def test_a_client_that_cannot_reach_the_worker_gets_the_result_through_the_scheduler(
    hosts: Hosts,
) -> None:
    # The worker tells peers an address where nothing listens.
    address = start(hosts, 1, worker_args=("--contact-address", f"127.0.0.1:{free_port()}"))
    with Client(address, timeout=2) as client:  # the time the worker gets to answer
        client.wait_for_workers(1, timeout=30)
        future = client.submit(filled, 7, PART)
        wait([future], timeout=60)
        ((count, size),) = kept(client)
        assert count == 1 and PART <= size < PART + 1000  # the array and its pickle's header
        np.testing.assert_array_equal(future.result(timeout=60), np.full(PART // 8, 7.0))
        # a dependent on the same worker reads it from there, not from the address
        assert client.submit(array_sum, future).result(timeout=60) == 7.0 * (PART // 8)


def test_results_lost_with_a_killed_worker_are_computed_again(hosts: Hosts) -> None:
    address = start(hosts, 2, *FAST_SCHEDULER)
    with Client(address, timeout=30) as client:
        client.wait_for_workers(2, timeout=30)
        parts = [client.submit(filled, i, PART) for i in range(4)]
        wait(parts, timeout=60)
        victim = next(w for w in client.scheduler_info()["workers"] if w["kept"] > 0)
        os.kill(victim["pid"], signal.SIGKILL)  # its supervisor starts another process
        total = client.submit(array_sum, *parts)
        assert total.result(timeout=60) == sum(i * (PART // 8) for i in range(4))
        alive = {w["pid"] for w in client.scheduler_info()["workers"]}
        assert victim["pid"] not in alive
        for i, part in enumerate(parts):
            np.testing.assert_array_equal(part.result(timeout=60), np.full(PART // 8, float(i)))


def test_scattered_data_goes_to_the_workers_and_feeds_tasks(hosts: Hosts) -> None:
    address = start(hosts, 2)
    with Client(address, timeout=30) as client:
        client.wait_for_workers(2, timeout=30)
        arrays = [np.full(PART // 8, float(i)) for i in range(4)]
        futures = client.scatter(arrays)
        assert isinstance(futures, list) and len(futures) == 4
        assert client.scatter(arrays[1]).key == futures[1].key  # by content: one key
        where = client.who_has(futures)
        assert sorted(len(where[f.key]) for f in futures) == [1, 1, 1, 1]
        assert len({address for f in futures for address in where[f.key]}) == 2  # spread
        assert sorted(n for n, _ in kept(client)) == [2, 2]
        assert client.submit(array_sum, *futures).result(timeout=60) == 6.0 * (PART // 8)
        np.testing.assert_array_equal(futures[3].result(timeout=60), arrays[3])
        named = client.scatter({"x": 1, "y": 2})
        assert sorted(named) == ["x", "y"] and client.gather(named) == {"x": 1, "y": 2}
        with pytest.raises(NotImplementedError):
            client.scatter([1], broadcast=True)


def test_scattered_data_lost_with_its_worker_fails_clearly(hosts: Hosts) -> None:
    address = start(hosts, 1, *FAST_SCHEDULER)
    with Client(address, timeout=30) as client:
        client.wait_for_workers(1, timeout=30)
        future = client.scatter(np.zeros(PART // 8))
        (worker,) = client.scheduler_info()["workers"]
        os.kill(worker["pid"], signal.SIGKILL)
        with pytest.raises(FutureLostError, match="scattered data"):
            client.submit(array_sum, future).result(timeout=60)


def test_kept_results_past_the_memory_target_spill_to_disk_and_come_back(
    hosts: Hosts, tmp_path: Path
) -> None:
    spill = tmp_path / "spill"
    spill.mkdir()
    limit = ("--memory-limit", "400MB", "--local-directory", str(spill))
    address = start(hosts, 1, worker_args=limit)
    with Client(address, timeout=30) as client:
        client.wait_for_workers(1, timeout=30)
        parts = [client.submit(filled, i, 30 * MB) for i in range(10)]  # 300 MB > 240 MB
        wait(parts, timeout=120)
        (worker,) = wait_until(
            lambda: [w for w in client.scheduler_info()["workers"] if w["spilled"] > 0], timeout=30
        )
        assert worker["managed"] <= 0.6 * 400 * 2**20 < worker["kept_bytes"]
        assert any(spill.rglob("*"))  # the files are there
        assert client.submit(array_sum, *parts).result(timeout=120) == sum(
            i * (30 * MB // 8) for i in range(10)
        )
        np.testing.assert_array_equal(parts[0].result(timeout=60), np.full(30 * MB // 8, 0.0))
        del parts
        wait_until(lambda: kept(client) == [(0, 0)], timeout=30)
    hosts.close()
    assert not any(spill.iterdir()), hosts.log("worker-0")  # its spill directory is gone


_NETNS = netns_problem()


@pytest.mark.skipif(_NETNS is not None, reason=_NETNS or "")
def test_workers_on_two_hosts_fetch_from_each_other_over_curve(
    hosts: Hosts, tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    subprocess.run([*CELERIAC, "keys", "create", str(keys)], check=True, capture_output=True)
    with NetworkPair() as net:
        port = free_port()
        address = f"tcp://{net.addresses[0]}:{port}"
        scheduler = [*CELERIAC, "scheduler", "--host", net.addresses[0], "--port", str(port)]
        scheduler += ["--no-dashboard", "--keys", str(keys)]
        hosts.start("scheduler", net.run_in(0, scheduler))
        for host in (0, 1):
            worker = [*CELERIAC, "worker", address, "--keys", str(keys), "--log-level", "INFO"]
            hosts.start(f"worker-{host}", net.run_in(host, private_shm(worker)))
        tests = str(Path(__file__).parents[2])  # where tasks_for_tests is
        driver = hosts.start(
            "client",
            net.run_in(0, [sys.executable, "-c", _TWO_HOSTS, address, str(keys)]),
            env={**os.environ, "PYTHONPATH": tests},
        )
        try:
            assert driver.wait(120) == 0, hosts.log("client") + hosts.log("worker-1")
        finally:
            hosts.close()  # before the namespaces go
    out = hosts.log("client")
    assert "peers " + " ".join(sorted(f"tcp://{a}" for a in net.addresses)) in out, out
    assert f"total {sum(i * (PART // 8) for i in range(4))}" in out, out


# Runs inside the first host: both workers keep results; the total needs both.
_TWO_HOSTS = f"""
import sys
import cloudpickle
import tasks_for_tests
from celeriac import Client, FutureLostError, wait
cloudpickle.register_pickle_by_value(tasks_for_tests)
with Client(sys.argv[1], keys=sys.argv[2], timeout=30) as client:
    client.wait_for_workers(2, timeout=60)
    parts = [client.submit(tasks_for_tests.filled, i, {PART}) for i in range(4)]
    wait(parts, timeout=60)
    workers = client.scheduler_info()["workers"]
    print("peers", " ".join(sorted(w["peer"].rsplit(":", 1)[0] for w in workers)))
    assert all(w["kept"] > 0 for w in workers), workers
    print("total", int(client.submit(tasks_for_tests.array_sum, *parts).result(timeout=60)))
    assert parts[3].result(timeout=60)[0] == 3.0
"""
