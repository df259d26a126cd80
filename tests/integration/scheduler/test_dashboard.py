"""The scheduler's dashboard: token, redaction, bounded cost, JSON API, metrics, the page.

Against real schedulers (embedded clusters and the ``celeriac scheduler``
command) and, for the page, a real browser.
"""

from __future__ import annotations

import html
import http.cookiejar
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

import tasks_for_tests as t
from celeriac import Client, Future, LocalCluster, every
from celeriac.client.cluster import DASHBOARD_AT, LISTENING
from celeriac.scheduler.dashboard import page
from celeriac.testing import wait_until
from celeriac.testing.processes import CELERIAC
from support.prometheus import samples

BOOM = "dashboard-boom"
#: Markup in a failure: the page must show it as text, never as an element.
INJECTED = '<b id="injected">not html</b>'
#: What a failure's message may hold, that the dashboard must not show by default.
SECRET = "password=hunter2"
GIVEN_TOKEN = "given-token-0123456789abcdef"
#: The limits the scheduler's dashboard keeps (celeriac.scheduler.webserver.Limits).
MAX_CONNECTIONS = 100


def base(cluster: LocalCluster) -> str:
    """``http://host:port`` of the cluster's dashboard (its link without the token)."""
    assert cluster.dashboard_address is not None
    parts = urlsplit(cluster.dashboard_address)
    return f"{parts.scheme}://{parts.netloc}"


def token(cluster: LocalCluster) -> str:
    """The token in the cluster's dashboard link."""
    assert cluster.dashboard_address is not None
    found = re.fullmatch(r"http://[^/]+/\?token=([A-Za-z0-9._~-]+)", cluster.dashboard_address)
    assert found, cluster.dashboard_address
    return found[1]


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Status, content type and body of a GET."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read().decode()


def bearer(cluster: LocalCluster) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(cluster)}"}


def status(cluster: LocalCluster) -> dict[str, Any]:
    code, kind, body = get(f"{base(cluster)}/api/status", bearer(cluster))
    assert code == 200 and kind == "application/json"
    snapshot: dict[str, Any] = json.loads(body)
    return snapshot


def fail_once(client: Client, cluster: LocalCluster) -> Future[None]:
    """A failed task, seen in the snapshot; hold its future so the scheduler keeps it."""
    failed = client.submit(t.fail, f"{BOOM} {INJECTED} {SECRET}")
    with pytest.raises(ValueError, match=BOOM):
        failed.result(timeout=30)
    # the snapshot is rebuilt once a second
    wait_until(lambda: status(cluster)["info"]["counters"]["erred"] == 1, timeout=10)
    return failed


@pytest.fixture
def busy_cluster(cluster_factory: Callable[..., LocalCluster]) -> Iterator[LocalCluster]:
    """Two workers that ran 20 tasks and one failure, and hold a periodic job.

    The client stays connected, so the scheduler keeps the failed task.
    """
    cluster = cluster_factory(2, scheduler_args=("--dashboard-show-errors",))
    with Client(cluster.address) as client:
        client.wait_for_workers(2)
        assert client.gather(client.map(t.inc, range(20))) == list(range(1, 21))
        failed = fail_once(client, cluster)
        client.add_periodic_task(every(hours=1), t.inc, 1, name="hourly-report")
        wait_until(lambda: status(cluster)["info"]["periodic"], timeout=10)
        yield cluster
        assert failed.status == "error"


@pytest.fixture
def failed_cluster(cluster_factory: Callable[..., LocalCluster]) -> Iterator[LocalCluster]:
    """A cluster as started by default (failure texts hidden) that saw one failure."""
    cluster = cluster_factory(1)
    with Client(cluster.address) as client:
        client.wait_for_workers(1)
        failed = fail_once(client, cluster)
        yield cluster
        assert failed.status == "error"


# -- JSON API and metrics over HTTP ----------------------------------------------


def test_status_api_reports_workers_counters_and_failures(busy_cluster: LocalCluster) -> None:
    snapshot = status(busy_cluster)
    assert set(snapshot) >= {"time", "address", "info", "history", "failures"}
    assert snapshot["address"] == busy_cluster.address
    info = snapshot["info"]
    assert info["counters"] == {"done": 20, "erred": 1, "submitted": 21}
    assert len(info["workers"]) == 2
    for worker in info["workers"]:
        assert worker["slots"] == 1 and worker["memory"] > 0 and worker["pid"] > 0
    assert info["by_state"].get("erred") == 1
    assert [job["name"] for job in info["periodic"]] == ["hourly-report"]
    assert info["periodic"][0]["next_run"] is not None

    (failure,) = snapshot["failures"]
    assert failure["name"] == "fail" and BOOM in failure["text"]
    assert "ValueError" in failure["text"] and "Traceback" in failure["text"]
    assert failure["type"] == "ValueError" and snapshot["errors_shown"] is True

    history = snapshot["history"]
    assert history and history[-1]["done"] == 20 and history[-1]["erred"] == 1
    times = [point["time"] for point in history]
    assert times == sorted(times)


def test_metrics_match_the_snapshot(busy_cluster: LocalCluster) -> None:
    code, kind, body = get(f"{base(busy_cluster)}/metrics", bearer(busy_cluster))
    assert code == 200 and kind.startswith("text/plain; version=0.0.4")
    values = samples(body)
    assert values['celeriac_tasks_total{outcome="done"}'] == 20
    assert values['celeriac_tasks_total{outcome="erred"}'] == 1
    assert values['celeriac_tasks_total{outcome="submitted"}'] == 21
    assert values['celeriac_tasks{state="erred"}'] == 1
    assert values['celeriac_tasks{state="queued"}'] == 0  # every state, even when empty
    assert values["celeriac_workers"] == 2
    assert values['celeriac_queue_depth{queue="default"}'] == 0
    workers = status(busy_cluster)["info"]["workers"]
    for worker in workers:
        assert values[f'celeriac_worker_slots{{worker="{worker["name"]}"}}'] == 1
        assert values[f'celeriac_worker_memory_bytes{{worker="{worker["name"]}"}}'] > 0
    assert values['celeriac_periodic_runs_total{job="hourly-report"}'] == 0
    assert values['celeriac_periodic_next_run_timestamp_seconds{job="hourly-report"}'] > 0
    assert values["celeriac_snapshot_timestamp_seconds"] > 0


def test_page_is_self_contained_and_locked_down(cluster_factory: Callable[..., Any]) -> None:
    cluster = cluster_factory(1)
    request = urllib.request.Request(f"{base(cluster)}/", headers=bearer(cluster))
    with urllib.request.urlopen(request, timeout=10) as response:
        body = response.read().decode()
        policy = response.headers["Content-Security-Policy"]
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    assert "unsafe-inline" not in policy  # only the page's own script, by hash
    assert "innerHTML" not in body and "http://" not in body.replace(
        "http://www.w3.org/2000/svg", ""
    )  # no CDN, no raw HTML from data
    assert page()[0].decode() == body
    for testid in ("workers-count", "done-count", "erred-count", "throughput-chart", "failures"):
        assert f'data-testid="{testid}"' in body
    assert get(f"{base(cluster)}/nowhere", bearer(cluster))[0] == 404


def test_dashboard_refuses_foreign_host_headers(cluster_factory: Callable[..., Any]) -> None:
    """DNS rebinding: a page from evil.example must not read a loopback dashboard."""
    cluster = cluster_factory(1)
    url = f"{base(cluster)}/api/status"
    assert get(url, {"Host": "evil.example:8787", **bearer(cluster)})[0] == 403
    assert get(url, {"Host": "localhost:8787", **bearer(cluster)})[0] == 200
    assert get(url, {"Host": "[::1]:8787", **bearer(cluster)})[0] == 200


def test_no_dashboard_flag(cluster_factory: Callable[..., LocalCluster]) -> None:
    cluster = cluster_factory(0, scheduler_args=("--no-dashboard",))
    assert cluster.dashboard_address is None


# -- the token ---------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/api/status", "/metrics", "/nowhere"])
def test_every_endpoint_needs_the_token(cluster_factory: Callable[..., Any], path: str) -> None:
    cluster = cluster_factory(0)
    url, secret = base(cluster) + path, token(cluster)
    assert len(secret) >= 32
    expected = 404 if path == "/nowhere" else 200
    assert get(url)[0] == 401
    assert get(url, {"Authorization": "Bearer wrong-token-0123456789"})[0] == 401
    assert get(url, {"Cookie": f"celeriac-dashboard-1={secret}"})[0] == 401  # another port's
    assert get(url, {"Authorization": f"Bearer {secret}"})[0] == expected
    if path != "/":  # on the page, ?token= is a login: see the next test
        assert get(f"{url}?token={secret}")[0] == expected


def test_the_link_opens_the_page_and_its_cookie_reads_the_api() -> None:
    """What a browser does with client.dashboard_link: the token becomes a cookie."""
    with Client(n_workers=0) as client:
        link = client.dashboard_link
        assert link is not None
        found = re.fullmatch(r"(http://[^/]+)/\?token=([A-Za-z0-9_-]{32})", link)
        assert found, link
        home, secret = found[1], found[2]
        jar = http.cookiejar.CookieJar()
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        with browser.open(link, timeout=10) as response:
            assert response.status == 200 and response.url == f"{home}/"  # the token is gone
            assert 'data-testid="failures"' in response.read().decode()
        (cookie,) = jar
        assert cookie.value == secret and cookie.has_nonstandard_attr("HttpOnly")
        with browser.open(f"{home}/api/status", timeout=10) as response:
            assert json.loads(response.read())["address"]


def start_scheduler(
    *args: str, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], str]:
    """``celeriac scheduler`` on free ports; its process and the dashboard line it printed."""
    popen = subprocess.Popen(
        [*CELERIAC, "scheduler", "--port", "0", "--no-journal", "--log-level", "WARNING", *args],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    assert popen.stdout is not None
    lines = [popen.stdout.readline()]
    while lines[-1] and not lines[-1].startswith(LISTENING + "tcp://"):
        lines.append(popen.stdout.readline())
    (dashboard,) = [line.strip() for line in lines if line.startswith(DASHBOARD_AT)]
    return popen, dashboard[len(DASHBOARD_AT) :]


def stop(popen: subprocess.Popen[str]) -> None:
    popen.send_signal(signal.SIGTERM)
    assert popen.wait(20) == 0
    assert popen.stdout is not None
    popen.stdout.close()


def test_the_start_up_line_carries_the_token() -> None:
    popen, link = start_scheduler()
    try:
        found = re.fullmatch(r"(http://127\.0\.0\.1:\d+)/\?token=([A-Za-z0-9_-]{32})", link)
        assert found, link
        url, secret = found[1] + "/metrics", found[2]
        assert get(url)[0] == 401 and get(f"{url}?token={secret}")[0] == 200
    finally:
        stop(popen)
    again, other = start_scheduler()  # a new token each start
    stop(again)
    assert other.split("token=")[1] != secret


def test_a_given_token_is_not_printed_and_no_auth_needs_none() -> None:
    popen, link = start_scheduler(env={"CELERIAC_DASHBOARD_TOKEN": GIVEN_TOKEN})
    try:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/\?token=\.\.\.", link), link  # Jupyter's way
        url = link.split("?")[0] + "api/status"
        assert get(url)[0] == 401
        assert get(url, {"Authorization": f"Bearer {GIVEN_TOKEN}"})[0] == 200
    finally:
        stop(popen)
    popen, link = start_scheduler("--dashboard-no-auth")
    try:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", link), link
        assert get(link + "api/status")[0] == 200
    finally:
        stop(popen)


def test_an_embedded_cluster_links_with_a_given_token(
    cluster_factory: Callable[..., LocalCluster],
) -> None:
    cluster = cluster_factory(0, scheduler_args=("--dashboard-token", GIVEN_TOKEN))
    assert cluster.dashboard_address == f"{base(cluster)}/?token={GIVEN_TOKEN}"
    assert get(f"{base(cluster)}/api/status", bearer(cluster))[0] == 200


# -- failure texts ----------------------------------------------------------------


def test_failure_texts_are_hidden_by_default(failed_cluster: LocalCluster) -> None:
    code, _, body = get(f"{base(failed_cluster)}/api/status", bearer(failed_cluster))
    assert code == 200
    snapshot = json.loads(body)
    assert snapshot["errors_shown"] is False
    (failure,) = snapshot["failures"]
    assert failure["name"] == "fail" and failure["kind"] == "remote"
    assert failure["type"] == "ValueError" and failure["key"].startswith("fail-")
    assert "text" not in failure and snapshot["info"]["failures"][0].get("text") is None
    for hidden in (BOOM, SECRET, "Traceback"):
        assert hidden not in body


# -- bounded cost (issue 13, H6) ------------------------------------------------------


def threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.fixture
def many_descriptors() -> Iterator[None]:
    """This test process may open 1,500 sockets and more."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.timeout(180)
def test_1500_idle_connections_hold_no_threads_and_lock_no_one_out(
    cluster_factory: Callable[..., LocalCluster], many_descriptors: None
) -> None:
    """1,500 half-open requests held 1,504 threads of the old dashboard."""
    cluster = cluster_factory(1)
    pid = cluster.scheduler_pid
    host, port = urlsplit(base(cluster)).netloc.rsplit(":", 1)
    with Client(cluster.address) as client:
        client.wait_for_workers(1)
    threads_before, descriptors_before = threads(pid), descriptors(pid)
    most_threads, most_descriptors = threads_before, descriptors_before
    attackers: list[socket.socket] = []
    try:
        for n in range(1500):
            attacker = socket.create_connection((host, int(port)), timeout=10)
            attackers.append(attacker)
            try:
                attacker.sendall(b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never ends
            except OSError:  # refused: closed at once
                pass
            if n % 50 == 0:
                most_threads = max(most_threads, threads(pid))
                most_descriptors = max(most_descriptors, descriptors(pid))
        most_threads = max(most_threads, threads(pid))
        # refused connections are closed on the loop's next turns, not one by one
        bound = descriptors_before + MAX_CONNECTIONS + 10
        wait_until(lambda: descriptors(pid) <= bound, timeout=2)
        settled = descriptors(pid)
        started = time.perf_counter()
        with Client(cluster.address) as client:  # a new client, served meanwhile
            assert client.submit(t.inc, 1).result(timeout=10) == 2
        round_trip = time.perf_counter() - started
        held = 0
        for attacker in attackers:
            attacker.setblocking(False)
            try:
                answer = attacker.recv(64)
            except BlockingIOError:
                held += 1  # still open, unanswered
            else:
                assert answer.startswith((b"HTTP/1.1 503 ", b"HTTP/1.1 408 ", b"")), answer
        print(
            f"scheduler threads {threads_before} -> at most {most_threads}; descriptors "
            f"{descriptors_before} -> at most {most_descriptors}, {settled} settled; "
            f"{held} connections held; a new client's round trip {round_trip * 1000:.0f} ms"
        )
        assert most_threads <= 50
        assert held <= MAX_CONNECTIONS
        assert round_trip <= 1.0
    finally:
        for attacker in attackers:
            attacker.close()
    # and once the attackers are gone, the dashboard serves again
    wait_until(lambda: get(f"{base(cluster)}/api/status", bearer(cluster))[0] == 200, timeout=10)


# -- the page in headless Chromium -----------------------------------------------


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def run_chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """One headless Chromium run, in its own process group so nothing outlives it."""
    binary = chromium()
    assert binary is not None
    command = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=5000",
        *args,
    ]
    popen = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = popen.communicate(timeout=60)
    finally:
        try:  # renderer and GPU helpers too, whatever happened
            os.killpg(popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        popen.wait()
    return subprocess.CompletedProcess(command, popen.returncode, stdout, stderr)


def shown(dom: str, testid: str) -> str:
    match = re.search(rf'data-testid="{testid}"[^>]*>([^<]*)<', dom)
    assert match, f"no element with data-testid={testid!r} in the page"
    return html.unescape(match[1]).strip()


@pytest.mark.timeout(120)
@pytest.mark.skipif(
    chromium() is None,
    reason="Chromium is not installed (run scripts/install-test-deps, or apt-get install chromium)",
)
def test_page_shows_the_real_numbers_in_chromium(
    busy_cluster: LocalCluster, tmp_path: Path
) -> None:
    url = busy_cluster.dashboard_address  # the printed link: the token, then its cookie
    assert url is not None
    workers = status(busy_cluster)["info"]["workers"]

    dumped = run_chromium(tmp_path / "profile", "--dump-dom", url)
    assert dumped.returncode == 0, dumped.stderr[-3000:]
    dom = dumped.stdout
    (tmp_path / "dashboard.html").write_text(dom)

    assert shown(dom, "status") == "live"  # the script ran and fetched the API
    assert shown(dom, "workers-count") == "2"
    assert shown(dom, "done-count") == "20"
    assert shown(dom, "erred-count") == "1"
    assert shown(dom, "submitted-count") == "21"
    assert shown(dom, "slots-total") == "2"
    assert dom.count('data-testid="worker-row"') == 2
    for worker in workers:
        assert f'data-worker="{worker["name"]}"' in dom
        assert f'data-field="pid">{worker["pid"]}<' in dom
    assert re.search(r'data-state="erred">.*?data-field="count"[^>]*>1<', dom)
    assert 'data-testid="periodic-row" data-job="hourly-report"' in dom
    assert "<polyline" in dom  # the throughput chart has data

    # the failure, with its traceback, as text
    assert dom.count('data-testid="failure"') == 1
    traceback = shown(dom, "failure-text")
    assert "Traceback" in traceback and f"ValueError: {BOOM} {INJECTED}" in traceback
    assert INJECTED not in dom and html.escape(INJECTED, quote=False) in dom

    shot = tmp_path / "dashboard.png"
    taken = run_chromium(
        tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,900", url
    )
    assert taken.returncode == 0, taken.stderr[-3000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    # all of the page, failures included, for a person to look at
    run_chromium(
        tmp_path / "profile",
        f"--screenshot={tmp_path / 'dashboard-full.png'}",
        "--window-size=1280,1600",
        url,
    )


@pytest.mark.timeout(120)
@pytest.mark.skipif(chromium() is None, reason="Chromium is not installed")
def test_page_hides_failure_texts_by_default_in_chromium(
    failed_cluster: LocalCluster, tmp_path: Path
) -> None:
    assert failed_cluster.dashboard_address is not None
    dumped = run_chromium(tmp_path / "profile", "--dump-dom", failed_cluster.dashboard_address)
    assert dumped.returncode == 0, dumped.stderr[-3000:]
    dom = dumped.stdout
    assert shown(dom, "status") == "live" and shown(dom, "erred-count") == "1"
    assert dom.count('data-testid="failure"') == 1
    assert re.search(r'data-field="type">ValueError<', dom)
    assert 'data-testid="failure-text"' not in dom
    assert re.search(r'data-testid="errors-hidden"(?! hidden)[^>]*>', dom)  # the page says so
    assert "--dashboard-show-errors" in dom
    for hidden in (BOOM, SECRET, html.escape(INJECTED, quote=False)):
        assert hidden not in dom
