"""The Flask example in docs/examples/webapp, served by gunicorn with pre-forked workers.

Real processes throughout: a scheduler, a worker that imports the example's
``tasks`` module (``-A tasks``), and gunicorn with ``--preload``, so the
Celeriac ``App`` is created in the gunicorn master and used in forked workers.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from celeriac import App, AsyncResult, LocalCluster

pytest.importorskip("flask", reason="the web app test needs flask (pip install flask)")
pytest.importorskip("gunicorn", reason="the web app test needs gunicorn (pip install gunicorn)")

WEBAPP = Path(__file__).resolve().parents[3] / "docs" / "examples" / "webapp"
REQUESTS = 200

#: Open the Celeriac connection in the gunicorn master before it forks, the
#: way a Django or Flask app does when its start-up code sends or looks up a
#: task: each forked worker must then notice and open a connection of its own.
WARM_MASTER = """
def when_ready(server):
    import tasks

    tasks.app.client.status(["warm-up-in-the-master"])
"""

# No proxy from the environment for loopback requests.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(method: str, url: str, timeout: float = 30.0) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=b"" if method == "POST" else None, method=method)
    try:
        with _opener.open(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def webapp_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(WEBAPP) + (os.pathsep + path if path else "")
    env.update(extra)
    return env


def wait_for_port(port: int, server: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    """Until something accepts connections on ``port``; fail early if the server died."""
    deadline = time.monotonic() + timeout
    while True:
        code = server.poll()
        if code is not None:
            raise AssertionError(f"gunicorn exited with {code}:\n{log.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"gunicorn did not listen within {timeout} s:\n{log.read_text()}")
        time.sleep(0.05)  # polling the port, bounded by the deadline


def stop(server: subprocess.Popen[bytes]) -> None:
    """SIGTERM (gunicorn stops its workers gracefully); then SIGKILL the whole group."""
    if server.poll() is None:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(server.pid, signal.SIGKILL)  # any worker the master left behind
    except ProcessLookupError:
        pass
    server.wait()


@pytest.fixture
def gunicorn(tmp_path: Path) -> Iterator[Any]:
    """Start gunicorn on a free loopback port; every server is stopped after the test."""
    servers: list[subprocess.Popen[bytes]] = []

    def start(address: str, extra_args: tuple[str, ...] = (), **env: str) -> str:
        port = free_port()
        log = tmp_path / f"gunicorn-{port}.log"
        cmd = [
            sys.executable,
            "-m",
            "gunicorn",
            "--preload",  # import the app (and create the App) in the master, then fork
            "--workers",
            "3",
            "--bind",
            f"127.0.0.1:{port}",
            "--graceful-timeout",
            "10",
            *extra_args,
            "flask_app:app",
        ]
        with open(log, "wb") as out:
            server = subprocess.Popen(
                cmd,
                cwd=WEBAPP,
                env=webapp_env(CELERIAC_ADDRESS=address, **env),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, for the last-resort kill
            )
        servers.append(server)
        wait_for_port(port, server, log, timeout=30)
        return f"http://127.0.0.1:{port}"

    try:
        yield start
    finally:
        for server in servers:
            stop(server)


@pytest.fixture
def welcome_log(tmp_path: Path) -> Path:
    """Where ``send_welcome`` appends a line per run (``$WELCOME_LOG`` on the workers)."""
    return tmp_path / "welcome.log"


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch, welcome_log: Path) -> Iterator[LocalCluster]:
    """A scheduler and two worker processes that import the example's ``tasks`` module."""
    monkeypatch.setenv("PYTHONPATH", webapp_env()["PYTHONPATH"])  # for the workers' -A tasks
    monkeypatch.setenv("WELCOME_LOG", str(welcome_log))
    worker_args = ("-A", "tasks", "--queues", "default,emails")
    with LocalCluster(2, worker_args=worker_args) as cluster:
        yield cluster


@pytest.mark.timeout(180)
@pytest.mark.parametrize("master_connected", [False, True], ids=["lazy", "master-connected"])
def test_concurrent_requests_each_run_their_task_once(
    cluster: LocalCluster, gunicorn: Any, tmp_path: Path, welcome_log: Path, master_connected: bool
) -> None:
    extra: tuple[str, ...] = ()
    if master_connected:
        conf = tmp_path / "gunicorn_conf.py"
        conf.write_text(WARM_MASTER)
        extra = ("--config", str(conf))
    base = gunicorn(cluster.address, extra)

    with ThreadPoolExecutor(32) as pool:
        replies = list(
            pool.map(lambda user: http("POST", f"{base}/users/{user}/welcome"), range(REQUESTS))
        )
    assert [code for code, _ in replies] == [202] * REQUESTS, replies[:5]
    ids = [body["task_id"] for _, body in replies]
    assert len(set(ids)) == REQUESTS

    with App(cluster.address, timeout=10) as app:  # another process reads them by id
        outcomes = [AsyncResult(task_id, app=app).get(timeout=60) for task_id in ids]
    assert outcomes == [f"welcome sent to user {user}" for user in range(REQUESTS)]

    with ThreadPoolExecutor(32) as pool:
        statuses = list(pool.map(lambda i: http("GET", f"{base}/status/{i}"), ids))
    for (code, body), user in zip(statuses, range(REQUESTS), strict=True):
        assert code == 200, body
        assert body["status"] == "SUCCESS", body
        assert body["result"] == f"welcome sent to user {user}"

    runs = Counter(welcome_log.read_text().split())
    assert runs == Counter({str(user): 1 for user in range(REQUESTS)})  # each exactly once


@pytest.mark.timeout(180)
def test_status_of_an_unknown_id_is_404_not_pending(cluster: LocalCluster, gunicorn: Any) -> None:
    base = gunicorn(cluster.address)
    code, body = http("GET", f"{base}/status/no-such-task")
    assert (code, body["status"]) == (404, "UNKNOWN")
    code, body = http("POST", f"{base}/reports/10")
    assert code == 202
    with App(cluster.address, timeout=10) as app:
        assert AsyncResult(body["task_id"], app=app).get(timeout=30) == {"n": 10, "total": 45}


@pytest.mark.timeout(180)
def test_request_fails_fast_when_no_scheduler_answers(gunicorn: Any) -> None:
    nobody = f"tcp://127.0.0.1:{free_port()}"
    base = gunicorn(nobody)
    started = time.monotonic()
    code, body = http("POST", f"{base}/users/1/welcome")
    assert code == 503
    assert "scheduler" in body["error"]
    assert time.monotonic() - started < 10  # App(timeout=2.0) in tasks.py, not a hang
