"""The scheduler's dashboard: JSON API, Prometheus metrics and the page in a real browser."""

from __future__ import annotations

import json
import re
import shutil
import urllib.error
import urllib.request
from typing import Any

from celeriac import LocalCluster
from celeriac.scheduler.dashboard import prometheus

#: Markup in a failure: the page must show it as text, never as an element.


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


def samples(text: str) -> dict[str, float]:
    """Prometheus text format as {'name{labels}': value}, checking every line's shape."""
    values, helped, typed = {}, set(), set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            helped.add(line.split()[2])
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            assert kind in ("counter", "gauge"), line
            typed.add(name)
        else:
            match = re.fullmatch(r'([a-z_]+)(\{[a-z_]+="(?:[^"\\]|\\.)*"\})? (\S+)', line)
            assert match, f"not a sample line: {line!r}"
            assert match[1] in typed and match[1] in helped, f"no HELP/TYPE before {line!r}"
            values[match[1] + (match[2] or "")] = float(match[3])
    return values


def test_metrics_escape_label_values() -> None:
    snapshot = {
        "time": 1.5,
        "info": {
            "counters": {"done": 1},
            "queues": {'we"ird\\queue\nname': 3},
            "workers": [],
            "periodic": [],
        },
    }
    text = prometheus(snapshot)
    assert 'celeriac_queue_depth{queue="we\\"ird\\\\queue\\nname"} 3' in text
    assert samples(text)["celeriac_snapshot_timestamp_seconds"] == 1.5


# -- the page in headless Chromium -----------------------------------------------


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None
