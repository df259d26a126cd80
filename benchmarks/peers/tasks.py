"""Plain task functions shared by the futures peers (Celeriac ``Client`` and Dask).

Workers import this module by name (``peers.tasks``): ``compare.py`` puts the
``benchmarks`` directory on their ``PYTHONPATH``, exactly as Celery's workers
import ``peers.celery_tasks``. numpy is imported only by the array tasks, so a
worker's memory after warm-up does not include it.
"""

from __future__ import annotations

from typing import Any


def inc(x: int) -> int:
    return x + 1


def add(a: int, b: int) -> int:
    return a + b


def noop(i: int) -> None:
    return None


def make_array(nbytes: int) -> Any:
    import numpy as np

    return np.ones(nbytes // 8, dtype=np.float64)


def array_nbytes(array: Any) -> int:
    return int(array.nbytes)


def worker_rss_mib() -> float | None:
    """This process's VmRSS in MiB, read on a worker (no Celeriac import there)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None
