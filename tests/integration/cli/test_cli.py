"""The command line, run as a user would: real processes, real signals."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import tasks_for_tests as t
from celeriac import Client
from celeriac.client.cluster import LISTENING
from celeriac.testing import wait_until

CELERIAC = [sys.executable, "-m", "celeriac"]


def run(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CELERIAC, *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def scheduler() -> Iterator[tuple[subprocess.Popen[str], str]]:
    popen = subprocess.Popen(
        [*CELERIAC, "scheduler", "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    assert popen.stdout is not None
    line = popen.stdout.readline()
    if line.startswith("celeriac dashboard at "):
        line = popen.stdout.readline()
    assert line.startswith(LISTENING), line
    yield popen, line[len(LISTENING) :].strip()
    _stop(popen)
    popen.stdout.close()


def _stop(popen: subprocess.Popen[str]) -> int:
    if popen.poll() is None:
        popen.send_signal(signal.SIGTERM)
    try:
        return popen.wait(20)
    finally:
        if popen.poll() is None:
            popen.kill()
            popen.wait()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((), ["scheduler", "worker"]),
        (("scheduler",), ["--host", "--port", "--worker-timeout", "--insecure"]),
        (("worker",), ["--nprocs", "--nthreads", "--queues", "--import"]),
    ],
)
def test_help(args: tuple[str, ...], expected: list[str]) -> None:
    result = run(*args, "--help")
    assert result.returncode == 0
    for word in expected:
        assert word in result.stdout


def test_scheduler_worker_and_client_from_the_shell(scheduler) -> None:
    popen, address = scheduler
    worker = subprocess.Popen([*CELERIAC, "worker", address, "--nprocs", "2"])
    try:
        code = (
            f"from celeriac import Client; c = Client({address!r}); "
            "print(c.submit(sum, [1, 2]).result(20))"
        )
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
        )
        assert result.stdout.strip() == "3", result.stderr
        with Client(address) as client:
            client.wait_for_workers(2)
    finally:
        assert _stop(worker) == 0  # graceful on SIGTERM
    assert _stop(popen) == 0


def test_every_worker_process_runs_on_the_command_line_settings(scheduler) -> None:
    _, address = scheduler
    options = ["--nprocs", "2", "--nthreads", "3", "--queues", "a,b", "--name", "web"]
    worker = subprocess.Popen([*CELERIAC, "worker", address, *options, "-A", "json"])
    try:
        with Client(address) as client:
            client.wait_for_workers(2)
            workers = client.scheduler_info()["workers"]
            described = sorted((w["name"], w["slots"], w["queues"]) for w in workers)
            assert described == [("web-0", 3, ["a", "b"]), ("web-1", 3, ["a", "b"])]
    finally:
        assert _stop(worker) == 0


@pytest.mark.timeout(90)
def test_worker_stop_hands_back_prefetched_work_and_finishes_the_running_task(
    scheduler, tmp_path: Path
) -> None:
    _, address = scheduler
    gate = tmp_path / "gate"
    one_slot = [*CELERIAC, "worker", address, "--nprocs", "1", "--nthreads", "1"]
    worker = subprocess.Popen(one_slot)
    replacement = None
    try:
        with Client(address) as client:
            client.wait_for_workers(1)
            (first,) = client.scheduler_info()["workers"]
            running = client.submit(t.wait_for_file, str(gate))
            queued = [client.submit(t.pid) for _ in range(6)]

            def prefetched() -> bool:  # the running task and at least two more are its
                workers = client.scheduler_info()["workers"]
                return bool(workers) and workers[0]["assigned"] >= 3

            wait_until(prefetched)
            worker.send_signal(signal.SIGTERM)
            # it hands back what it has not started and waits for the running task
            wait_until(lambda: client.scheduler_info()["workers"][0]["assigned"] == 1)
            assert worker.poll() is None
            gate.touch()
            assert worker.wait(20) == 0
            assert running.result(timeout=10) == first["pid"]  # finished where it ran
            replacement = subprocess.Popen(one_slot)
            pids = client.gather(queued, timeout=30)
            assert len(pids) == 6 and first["pid"] not in pids  # handed back, run elsewhere
    finally:
        _stop(worker)
        if replacement is not None:
            assert _stop(replacement) == 0


@pytest.mark.timeout(90)
def test_stop_timeout_ends_a_task_that_does_not_finish_and_it_runs_again(
    scheduler, tmp_path: Path
) -> None:
    _, address = scheduler
    gate = tmp_path / "gate"
    cmd = [*CELERIAC, "worker", address, "--nprocs", "1", "--stop-timeout", "1"]
    worker = subprocess.Popen(cmd)
    replacement = None
    try:
        with Client(address) as client:
            client.wait_for_workers(1)
            blocked = client.submit(t.wait_for_file, str(gate))
            wait_until(lambda: client.scheduler_info()["workers"][0]["running"] == 1)
            worker.send_signal(signal.SIGTERM)
            # --stop-timeout 1: killed after a second, far sooner than the 30 s default
            assert worker.wait(10) == 0
            gate.touch()
            replacement = subprocess.Popen(cmd)
            assert isinstance(blocked.result(timeout=30), int)  # re-run, not lost
    finally:
        _stop(worker)
        if replacement is not None:
            assert _stop(replacement) == 0


def test_non_loopback_bind_is_refused_without_insecure() -> None:
    result = run("scheduler", "--host", "0.0.0.0", "--port", "0")
    assert result.returncode == 2
    assert "refusing to bind" in result.stderr and "--insecure" in result.stderr


def test_port_in_use_is_a_clear_error(scheduler) -> None:
    _, address = scheduler
    port = address.rsplit(":", 1)[1]
    result = run("scheduler", "--port", port)
    assert result.returncode == 1
    assert "cannot start the scheduler" in result.stderr


def test_scheduler_also_listens_on_a_unix_socket(tmp_path: Path) -> None:
    path = tmp_path / "scheduler.sock"
    listen = ["--port", "0", "--ipc", str(path)]
    popen = subprocess.Popen(  # --busy-poll 0: the loop that always sleeps works too
        [*CELERIAC, "scheduler", *listen, "--no-dashboard", "--busy-poll", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert popen.stdout is not None
    lines = [popen.stdout.readline().strip(), popen.stdout.readline().strip()]
    worker = subprocess.Popen([*CELERIAC, "worker", f"ipc://{path}"])
    try:
        assert lines[0] == f"{LISTENING}ipc://{path}" and lines[1].startswith(LISTENING + "tcp")
        with Client(f"ipc://{path}") as client:  # and a client on the other address:
            assert client.submit(sum, [1, 2]).result(timeout=20) == 3
        with Client(lines[1][len(LISTENING) :]) as client:
            assert client.submit(sum, [3, 4]).result(timeout=20) == 7
    finally:
        _stop(worker)
        assert _stop(popen) == 0
        popen.stdout.close()
    assert not path.exists()  # the scheduler removed its socket file


@pytest.mark.parametrize("secure", [False, True])
def test_unix_socket_in_a_missing_directory_is_a_clear_error(tmp_path: Path, secure) -> None:
    keys = ()
    if secure:  # the key checker runs by then: stopping it must not hang
        assert run("keys", "create", str(tmp_path / "keys")).returncode == 0
        keys = ("--keys", str(tmp_path / "keys"))
    result = run("scheduler", "--port", "0", *keys, "--ipc", str(tmp_path / "no" / "s.sock"))
    assert result.returncode == 1
    assert f"cannot listen at ipc://{tmp_path}/no/s.sock" in result.stderr


def test_unix_socket_never_replaces_a_file_or_a_live_scheduler(tmp_path: Path) -> None:
    precious = tmp_path / "scheduler.toml"
    precious.write_text("[scheduler]\n")
    result = run("scheduler", "--port", "0", "--no-dashboard", "--ipc", str(precious))
    assert result.returncode == 1 and "exists and is not a socket" in result.stderr
    assert precious.read_text() == "[scheduler]\n"

    path = tmp_path / "s.sock"
    first = subprocess.Popen(
        [*CELERIAC, "scheduler", "--port", "0", "--no-dashboard", "--ipc", str(path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert first.stdout is not None and first.stdout.readline().startswith(LISTENING)
        result = run("scheduler", "--port", "0", "--no-dashboard", "--ipc", str(path))
        assert result.returncode == 1 and "another process listens there" in result.stderr
        with Client(f"ipc://{path}") as client:  # the first one still has its socket
            assert client.scheduler_info()["scheduler"]["pid"] == first.pid
    finally:
        assert _stop(first) == 0
        first.stdout.close()
    assert not path.exists()


def test_worker_with_malformed_address_exits_with_usage_error() -> None:
    result = run("worker", "http://nowhere")
    assert result.returncode == 2
    assert "use tcp:// or ipc://" in result.stderr


def test_unknown_command_is_a_usage_error() -> None:
    result = run("frobnicate")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr
