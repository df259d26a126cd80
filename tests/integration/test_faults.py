"""Bad things happening: remote errors, bad payloads, dead workers, hostile bytes."""

from __future__ import annotations

import os
import signal
import socket
import traceback
from collections.abc import Callable
from pathlib import Path

import msgpack
import pytest
import zmq

from celeriac import (
    Client,
    FutureLostError,
    KilledWorker,
    LocalCluster,
    RemoteError,
    SchedulerUnavailable,
    SerializationError,
)
from celeriac.errors import ArgumentTooLarge, ResultTooLarge
from celeriac.testing import FAST_SCHEDULER, kill, wait_until, worker_pids
from tasks_for_tests import (
    die,
    fail,
    inc,
    pid,
    raise_unpicklable,
    slow_inc,
    touch,
    unpicklable_result,
    wait_for_file,
)


def test_remote_exception_keeps_type_and_traceback(client: Client) -> None:
    future = client.submit(fail, "boom")
    with pytest.raises(ValueError, match="boom") as info:
        future.result(timeout=10)
    frames = [frame.name for frame in traceback.extract_tb(info.value.__traceback__)]
    assert "fail" in frames  # the remote frame, not just ours
    assert isinstance(future.exception(), ValueError)


def test_dependents_of_a_failed_task_fail_with_its_error(client: Client) -> None:
    bad = client.submit(fail, "root cause")
    child = client.submit(inc, bad)
    with pytest.raises(ValueError, match="root cause"):
        child.result(timeout=10)


def test_gather_skip_leaves_out_failures(client: Client) -> None:
    futures = [client.submit(inc, 1), client.submit(fail, "x"), client.submit(inc, 2)]
    assert client.gather(futures, errors="skip") == [2, 3]
    with pytest.raises(ValueError):
        client.gather(futures)


def test_retries_rerun_a_failing_task(client: Client, tmp_path) -> None:
    counter = tmp_path / "attempts"

    def flaky() -> int:
        attempts = int(counter.read_text()) if counter.exists() else 0
        counter.write_text(str(attempts + 1))
        if attempts < 2:
            raise RuntimeError(f"attempt {attempts}")
        return attempts

    assert client.submit(flaky, retries=2).result(timeout=10) == 2
    counter.unlink()
    with pytest.raises(RuntimeError, match="attempt 1"):
        client.submit(flaky, retries=1).result(timeout=10)


def test_unpicklable_result_is_a_clear_error_and_worker_survives(client: Client) -> None:
    before = sorted(worker_pids(client))
    with pytest.raises(SerializationError, match="cannot be sent"):
        client.submit(unpicklable_result).result(timeout=10)
    assert client.submit(inc, 1).result(timeout=10) == 2
    assert sorted(worker_pids(client)) == before


def test_unpicklable_exception_arrives_as_remote_error(client: Client) -> None:
    with pytest.raises(RemoteError, match="Unpicklable") as info:
        client.submit(raise_unpicklable).result(timeout=10)
    assert "raise_unpicklable" in info.value.traceback_text


def test_unpicklable_argument_fails_at_submit(client: Client) -> None:
    import threading

    with pytest.raises(SerializationError, match="could not serialize"):
        client.submit(inc, threading.Lock())


def test_worker_killed_mid_task_results_stay_correct(client: Client, tmp_path) -> None:
    gate = str(tmp_path / "gate")
    held = client.submit(wait_for_file, gate)
    victim = wait_until(lambda: _running_pid(client, gate))
    futures = client.map(slow_inc, range(40), delay=0.01)
    kill(victim)
    touch(gate)
    assert client.gather(futures, timeout=30) == list(range(1, 41))
    assert held.result(timeout=30) != victim  # re-run on another process
    wait_until(lambda: len(worker_pids(client)) == 2 and victim not in worker_pids(client))


def _running_pid(client: Client, gate: str) -> int | None:
    # the gate task reports nothing until it ends; find its worker by elimination
    info = client.scheduler_info()
    busy = [w for w in info["workers"] if w["assigned"]]
    return busy[0]["pid"] if info["by_state"].get("processing") and len(busy) == 1 else None


def test_poison_task_ends_in_killed_worker(client: Client) -> None:
    with pytest.raises(KilledWorker, match="died"):
        client.submit(die).result(timeout=40)
    assert client.submit(inc, 1).result(timeout=20) == 2  # supervisor replaced the children


def test_garbage_frames_are_rejected_and_scheduler_keeps_serving(
    client: Client, raw: zmq.Socket
) -> None:
    hostile = [
        [b"\xff\xfe garbage"],
        [msgpack.packb([1, [{"op": "submit", "key": 5}]])],
        [msgpack.packb([1, [{"op": "no-such-op"}]])],
        [msgpack.packb([99, []])],
        [msgpack.packb([1, [{"op": "hello-client", "version": 1, "nf": [3]}]]), b"x"],
    ]
    for frames in hostile:
        raw.send_multipart(frames)
        reply = msgpack.unpackb(raw.recv_multipart()[0])
        assert reply[1][0]["op"] == "error" and "bad message" in reply[1][0]["text"]
    assert client.submit(inc, 41).result(timeout=10) == 42


def test_raw_tcp_bytes_do_not_hurt_the_scheduler(cluster_factory) -> None:
    cluster = cluster_factory(tcp=True)
    assert cluster.tcp_address is not None
    host, port = cluster.tcp_address.removeprefix("tcp://").rsplit(":", 1)
    for payload in (b"GET / HTTP/1.1\r\n\r\n", b"\x00" * 10_000, bytes(range(256)) * 40):
        with socket.create_connection((host, int(port)), timeout=5) as conn:
            conn.sendall(payload)
    with Client(cluster.address) as client:
        assert client.submit(inc, 1).result(timeout=10) == 2


def test_oversized_submission_is_refused_by_the_client(cluster_factory) -> None:
    cluster = cluster_factory(scheduler_args=("--max-message-size", "100000"))
    with Client(cluster.address) as client:
        with pytest.raises(ArgumentTooLarge, match="message limit"):
            client.submit(len, b"x" * 200_000)
        assert client.submit(len, b"x" * 1000).result(timeout=10) == 1000


def test_a_result_over_the_message_limit_fails_its_task_and_writes_nothing(
    cluster_factory,
) -> None:
    cluster = cluster_factory(n_workers=1, scheduler_args=("--max-message-size", "2000000"))
    segments_before = set(os.listdir("/dev/shm"))
    with Client(cluster.address) as client:
        # 3 MB would go through /dev/shm (frames from 1 MiB do): nothing is written
        future = client.submit(bytes, 3_000_000)
        with pytest.raises(ResultTooLarge, match=r"takes 30000\d\d bytes .* limit of 2000000"):
            future.result(timeout=20)
        assert client.submit(bytes, 1000).result(timeout=10) == bytes(1000)  # worker serves on
    assert set(os.listdir("/dev/shm")) <= segments_before


def test_unreachable_scheduler_fails_fast() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nobody listens here once the socket closes
    with pytest.raises(SchedulerUnavailable, match="no Celeriac scheduler answered"):
        Client(f"tcp://127.0.0.1:{port}", timeout=0.5)


def test_an_unreachable_unix_socket_says_why(tmp_path: Path) -> None:
    missing = tmp_path / "scheduler.sock"
    with pytest.raises(SchedulerUnavailable, match=f"there is no socket at {missing}"):
        Client(f"ipc://{missing}", timeout=0.2)
    with pytest.raises(SchedulerUnavailable, match=f"{tmp_path} is not a socket"):
        Client(f"ipc://{tmp_path}", timeout=0.2)


def test_other_protocol_version_is_refused(raw: zmq.Socket) -> None:
    raw.send_multipart([msgpack.packb([1, [{"op": "hello-client", "version": 999}]])])
    reply = msgpack.unpackb(raw.recv_multipart()[0])[1][0]
    assert reply["op"] == "error" and "version 999 is not supported" in reply["text"]


def test_unknown_key_is_lost(client: Client) -> None:
    future = client.submit(inc, 1)
    future.result(timeout=10)
    other = client.submit(inc, future)
    assert other.result(10) == 3
    assert pid  # imported for workers; keeps the module's helpers in use
    with pytest.raises(FutureLostError):
        _future_for_unknown_key(client).result(timeout=10)


def _future_for_unknown_key(client: Client):
    from celeriac.wire.protocol import Message

    future = client._new_future("never-submitted")
    client._conn.send(Message("want", {"key": "never-submitted"}))
    return future


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_workers_reregister_after_scheduler_restart() -> None:
    import subprocess
    import sys

    port = str(_free_port())
    base = [sys.executable, "-m", "celeriac"]
    scheduler_cmd = [*base, "scheduler", "--port", port, "--heartbeat-interval", "0.1"]
    scheduler_cmd += ["--no-dashboard", "--no-journal"]
    scheduler = subprocess.Popen(scheduler_cmd, stdout=subprocess.DEVNULL)
    worker = subprocess.Popen([*base, "worker", f"tcp://127.0.0.1:{port}"])
    try:
        with Client(f"tcp://127.0.0.1:{port}") as client:
            assert client.submit(inc, 1).result(timeout=20) == 2
        kill(scheduler.pid)
        scheduler.wait()
        scheduler = subprocess.Popen(scheduler_cmd, stdout=subprocess.DEVNULL)
        with Client(f"tcp://127.0.0.1:{port}") as client:
            client.wait_for_workers(1, timeout=20)
            assert client.submit(inc, 2).result(timeout=20) == 3
    finally:
        for popen in (worker, scheduler):
            popen.terminate()
            popen.wait(20)


def test_supervisor_reports_a_dead_child_before_heartbeats_would(cluster_factory, tmp_path):
    # Heartbeats alone would take 60 s to notice; the supervisor's report must be sooner.
    cluster = cluster_factory(scheduler_args=("--worker-timeout", "60"))
    with Client(cluster.address) as client:
        client.wait_for_workers(2)
        gate = str(tmp_path / "gate")
        held = client.submit(wait_for_file, gate)
        victim = wait_until(lambda: _running_pid(client, gate))
        kill(victim)
        touch(gate)
        assert held.result(timeout=15) != victim


def test_max_tasks_per_child_recycles_processes_and_loses_nothing(cluster_factory) -> None:
    cluster = cluster_factory(n_workers=1, worker_args=("--max-tasks-per-child", "5"))
    with Client(cluster.address) as client:
        futures = [client.submit(pid, key=f"pid-{i}") for i in range(20)]
        pids = client.gather(futures, timeout=60)
    assert len(pids) == 20
    assert len(set(pids)) >= 4  # at most 5 tasks per process


def test_max_memory_per_child_recycles_a_leaky_process(cluster_factory) -> None:
    from tasks_for_tests import leak

    cluster = cluster_factory(n_workers=1, worker_args=("--max-memory-per-child", "120MB"))
    with Client(cluster.address) as client:
        pids = [client.submit(leak, 40, key=f"leak-{i}").result(timeout=30) for i in range(8)]
    assert len(set(pids)) >= 2  # 8 x 40 MB cannot fit under 120 MB in one process


def test_a_process_past_its_memory_limit_is_restarted_and_its_task_fails_at_last(
    cluster_factory,
) -> None:
    from tasks_for_tests import hog

    # 95% of 150 MB: a task that holds 200 MB gets its process killed, three times
    cluster = cluster_factory(
        n_workers=1, worker_args=("--memory-limit", "150MB"), scheduler_args=FAST_SCHEDULER
    )
    with Client(cluster.address) as client:
        with pytest.raises(KilledWorker):
            client.submit(hog, 200, 30.0).result(timeout=60)
        assert client.submit(inc, 1).result(timeout=30) == 2  # a fresh process serves on


def test_a_request_that_timed_out_leaves_no_reply_behind(
    cluster_factory: Callable[..., LocalCluster],
) -> None:
    cluster = cluster_factory(n_workers=1)
    with Client(cluster.address) as client:
        os.kill(cluster.scheduler_pid, signal.SIGSTOP)  # it answers, but only later
        try:
            with pytest.raises(SchedulerUnavailable, match="did not answer 'status'"):
                client.status(["k"], timeout=0.2)
        finally:
            os.kill(cluster.scheduler_pid, signal.SIGCONT)
        assert client.status(["k"]) == {"k": "UNKNOWN"}  # the late reply came first, unwanted
        assert len(client._replies) == 0  # no request id left waiting
