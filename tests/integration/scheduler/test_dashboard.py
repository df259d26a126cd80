"""The scheduler's dashboard: JSON API, Prometheus metrics and the page in a real browser."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import tasks_for_tests as t
from celeriac import Client, LocalCluster, every
from celeriac.scheduler.dashboard import page
from celeriac.testing import FAST_SCHEDULER, wait_until
from support.prometheus import samples

BOOM = "dashboard-boom"
#: Markup in a failure: the page must show it as text, never as an element.
INJECTED = '<b id="injected">not html</b>'


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Status, content type and body of a GET."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read().decode()


def status(cluster: LocalCluster) -> dict[str, Any]:
    code, kind, body = get(f"{cluster.dashboard_address}/api/status")
    assert code == 200 and kind == "application/json"
    snapshot: dict[str, Any] = json.loads(body)
    return snapshot


@pytest.fixture
def busy_cluster(cluster_factory: Callable[..., LocalCluster]) -> Iterator[LocalCluster]:
    """Two workers that ran 20 tasks and one failure, and hold a periodic job.

    The client stays connected, so the scheduler keeps the failed task.
    """
    cluster = cluster_factory(2)
    assert cluster.dashboard_address is not None
    with Client(cluster.address) as client:
        client.wait_for_workers(2)
        assert client.gather(client.map(t.inc, range(20))) == list(range(1, 21))
        failed = client.submit(t.fail, f"{BOOM} {INJECTED}")
        with pytest.raises(ValueError, match=BOOM):
            failed.result(timeout=30)
        client.add_periodic_task(every(hours=1), t.inc, 1, name="hourly-report")
        # the snapshot is rebuilt once a second
        wait_until(lambda: status(cluster)["info"]["counters"]["erred"] == 1, timeout=10)
        wait_until(lambda: status(cluster)["info"]["periodic"], timeout=10)
        yield cluster


# -- JSON API and metrics over HTTP ----------------------------------------------


def test_status_api_reports_workers_counters_and_failures(busy_cluster: LocalCluster) -> None:
    snapshot = status(busy_cluster)
    assert set(snapshot) >= {"time", "address", "info", "history", "failures"}
    assert snapshot["address"] == busy_cluster.tcp_address
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

    history = snapshot["history"]
    assert history and history[-1]["done"] == 20 and history[-1]["erred"] == 1
    times = [point["time"] for point in history]
    assert times == sorted(times)


def test_metrics_match_the_snapshot(busy_cluster: LocalCluster) -> None:
    code, kind, body = get(f"{busy_cluster.dashboard_address}/metrics")
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
    with urllib.request.urlopen(f"{cluster.dashboard_address}/", timeout=10) as response:
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
    assert get(f"{cluster.dashboard_address}/nowhere")[0] == 404


def test_dashboard_refuses_foreign_host_headers(cluster_factory: Callable[..., Any]) -> None:
    """DNS rebinding: a page from evil.example must not read a loopback dashboard."""
    cluster = cluster_factory(1)
    url = f"{cluster.dashboard_address}/api/status"
    assert get(url, {"Host": "evil.example:8787"})[0] == 403
    assert get(url, {"Host": "localhost:8787"})[0] == 200
    assert get(url, {"Host": "[::1]:8787"})[0] == 200


def test_no_dashboard_flag(cluster_factory: Callable[..., LocalCluster]) -> None:
    cluster = cluster_factory(1, scheduler_args=(*FAST_SCHEDULER, "--no-dashboard"))
    assert cluster.dashboard_address is None


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
    url = f"{busy_cluster.dashboard_address}/"
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
