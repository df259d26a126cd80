"""The scheduler's dashboard: JSON API, Prometheus metrics and the page in a real browser."""

from __future__ import annotations

import shutil

from celeriac.scheduler.dashboard import prometheus
from support.prometheus import samples

#: Markup in a failure: the page must show it as text, never as an element.


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
