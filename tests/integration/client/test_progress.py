"""The progress bar, driven by real futures, read back from its text output."""

from __future__ import annotations

import io

from celeriac import App, Client, progress
from tasks_for_tests import fail, slow_inc


def test_progress_counts_every_future_and_the_failures(client: Client) -> None:
    futures = [*client.map(slow_inc, range(20), delay=0.01), client.submit(fail, "x")]
    out = io.StringIO()
    progress(futures, file=out, mininterval=0, timeout=30)
    text = out.getvalue()
    assert "21/21" in text and "failed=1" in text
    assert all(f.done() for f in futures)


def test_progress_follows_async_results(cluster) -> None:
    with App(cluster.address) as app:
        task = app.task(slow_inc)
        results = [task.delay(i, delay=0.01) for i in range(5)]
        out = io.StringIO()
        progress(results, file=out, mininterval=0, timeout=30)
    assert "5/5" in out.getvalue()
