"""Celery tasks for the comparison; the worker runs ``celery -A peers.celery_tasks worker``.

Broker and result backend are the Redis instance ``compare.py`` starts
(``$BENCH_REDIS_URL``): broker in db 0, results in db 1. Pickle carries the
numpy arrays of W5 (JSON cannot), so it is used for every task.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379")
COUNTER = "bench:executed"

app = Celery("bench", broker=f"{REDIS_URL}/0", backend=f"{REDIS_URL}/1")
app.conf.update(
    task_serializer="pickle",
    result_serializer="pickle",
    accept_content=["pickle"],
    result_accept_content=["pickle"],
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    # Sending a chord nested 12 deep (W4) holds one pooled producer connection per
    # level: the default pool of 10 deadlocks the client. Unlimited avoids that.
    broker_pool_limit=None,
)

_redis: Any = None


@app.task
def inc(x: int) -> int:
    return x + 1


@app.task
def sum_list(values: list[Any]) -> Any:
    return sum(values)


@app.task(ignore_result=True)
def counted(i: int) -> None:
    """A trivial fire-and-forget task that says it ran (one Redis INCR).

    Celery has no record of executed ignore-result tasks, so this counter is
    how W1 and W7 know when all have run.
    """
    global _redis
    if _redis is None:
        import redis

        _redis = redis.Redis.from_url(f"{REDIS_URL}/2")
    _redis.incr(COUNTER)


@app.task
def make_array(nbytes: int) -> Any:
    import numpy as np

    return np.ones(nbytes // 8, dtype=np.float64)


@app.task
def array_nbytes(array: Any) -> int:
    return int(array.nbytes)
