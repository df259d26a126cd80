"""Celeriac's Celery-style tasks (``App``) for the comparison.

Workers import this module by name, as Celery's import ``celery_tasks``. The
address is a placeholder: ``celeriac_peer`` points ``app`` at its cluster
before first use (an app connects lazily, so workers never connect through it).
"""

from __future__ import annotations

from typing import Any

from celeriac import App

app = App("tcp://127.0.0.1:1", timeout=30.0)


@app.task
def inc(x: int) -> int:
    return x + 1


@app.task
def sum_list(values: list[Any]) -> Any:
    return sum(values)


@app.task(ignore_result=True)
def noop(i: int) -> None:
    return None
