"""The scheduler's summary of itself, for ``celeriac inspect`` and the dashboard.

Built from counts kept as things change: nothing here walks every task.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from celeriac.scheduler.lifecycle import TaskLifecycle
from celeriac.scheduler.records import TaskRecord, WorkerRecord

#: The latest failures shown, and how much of each traceback's end.
FAILURES_SHOWN = 20
FAILURE_TEXT_CHARS = 2000


def summary(
    about: dict[str, Any],
    lifecycle: TaskLifecycle,
    workers: Iterable[WorkerRecord],
    clients: int,
) -> dict[str, Any]:
    """What ``celeriac inspect`` and the dashboard show: tasks by state, queues, workers, jobs.

    ``about`` holds facts about the server process; ``clients`` is how many are connected.
    """
    depths, oldest = lifecycle.ready.summary()
    return {
        "scheduler": about,
        "tasks": len(lifecycle.tasks),
        "by_state": {state.value: n for state, n in lifecycle.by_state.items() if n},
        "queues": depths,
        "queue_oldest": oldest,
        "workers": [_describe_worker(worker, lifecycle.tasks) for worker in workers],
        "clients": clients,
        "timers": len(lifecycle.timers),
        "periodic": lifecycle.periodic.describe(),
        "counters": dict(lifecycle.counters),
        "failures": [
            {**failure, "text": failure["text"][-FAILURE_TEXT_CHARS:]}
            for failure in list(lifecycle.recent_failures)[-FAILURES_SHOWN:]
        ],
    }


def _describe_worker(worker: WorkerRecord, tasks: dict[str, TaskRecord]) -> dict[str, Any]:
    kept = [tasks[key].nbytes for key in worker.holds if key in tasks]
    return {
        "name": worker.name,
        "pid": worker.pid,
        "slots": worker.slots,
        "queues": list(worker.queues),
        "assigned": len(worker.assigned),
        "running": worker.running,
        "memory": worker.memory,
        "last_seen": worker.last_seen,
        "peer": worker.peer,  # where it serves the results it keeps (None: it keeps none)
        "kept": len(kept),
        "kept_bytes": sum(kept),
        "managed": worker.managed,  # of those, in its memory (the rest: spilled to disk)
        "spilled": worker.spilled,
        "paused": worker.paused,
    }
