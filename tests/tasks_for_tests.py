"""Task functions for the integration tests, importable by worker processes."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any


def inc(x: int) -> int:
    return x + 1


def add(a: int, b: int) -> int:
    return a + b


def total(*args: object, **kwargs: object) -> object:
    return (args, kwargs)


def slow_inc(x: int, delay: float = 0.2) -> int:
    time.sleep(delay)
    return x + 1


def fail(message: str) -> None:
    raise ValueError(message)


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def pid() -> int:
    return os.getpid()


def touch(path: str) -> str:
    Path(path).write_text(str(os.getpid()))
    return path


def wait_for_file(path: str, timeout: float = 30.0) -> int:
    """Block until ``path`` exists (a test's gate for 'task is running')."""
    deadline = time.monotonic() + timeout
    while not Path(path).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.01)
    return os.getpid()


def unpicklable_result() -> object:
    return threading.Lock()


class Unpicklable(Exception):
    def __init__(self, a: object, b: object) -> None:
        super().__init__(a)  # args do not match __init__: unpickling fails
        self.lock = threading.Lock()


def raise_unpicklable() -> None:
    raise Unpicklable("odd", "exception")


def append_line(path: str, word: str) -> None:
    with open(path, "a") as f:
        f.write(word + "\n")


def record(path: str, value: object) -> object:
    """Append one line per run: lets a test count executions."""
    with open(path, "a") as f:
        f.write(f"{value}\n")
    return value


def flaky_bound(self, path: str, failures: int) -> int:
    """Fail (asking for a retry) ``failures`` times, then report the attempt number."""
    record(path, self.request.retries)
    if self.request.retries < failures:
        raise self.retry(countdown=0.01)
    return self.request.retries


def always_fails(path: str) -> None:
    record(path, "run")
    raise ConnectionError("service down")


def sleep_for(seconds: float) -> str:
    time.sleep(seconds)
    return "slept"


def spin_in_c(seconds: float) -> int:
    """Hold the GIL in C code: a regex with catastrophic backtracking."""
    import re

    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        re.match(r"(a+)+$", "a" * 26 + "b")
        n += 1
    return n


def cleanup_on_soft_limit(seconds: float) -> str:
    from celeriac import SoftTimeLimitExceeded

    try:
        time.sleep(seconds)
    except SoftTimeLimitExceeded:
        return "cleaned up"
    return "not interrupted"


def cleanup_on_soft_limit_in_python(seconds: float) -> str:
    """Wait in short sleeps: in a thread slot the limit lands at the next bytecode."""
    from celeriac import SoftTimeLimitExceeded

    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            time.sleep(0.01)
    except SoftTimeLimitExceeded:
        return "cleaned up"
    return "not interrupted"


def total_of(values: list[int]) -> int:
    return sum(values)


def record_request_id(path: str) -> str:
    """Append the running task's id: a periodic run's id names its tick."""
    from celeriac.context import current_request

    request = current_request()
    assert request is not None
    return str(record(path, request.id))


_LEAK: list[bytes] = []


def leak(megabytes: int) -> int:
    """Keep memory forever, as a leaky task would; returns this process's pid."""
    _LEAK.append(b"x" * (megabytes << 20))
    return os.getpid()


def array_backing(array: Any) -> tuple[str, float]:
    """What holds the argument's memory here ("mmap": a shared memory mapping), and its sum."""
    holder = array.base
    while holder is not None and not isinstance(holder, memoryview):
        holder = getattr(holder, "base", None)
    owner = holder.obj if isinstance(holder, memoryview) else holder
    return type(owner).__name__, float(array.sum())


def mul(a: int, b: int) -> int:
    return a * b


def record_failure(request: Any, exc: BaseException, traceback: str, path: str) -> None:
    """A ``link_error`` errback (Celery's current convention): one line per call."""
    with open(path, "a") as f:
        f.write(f"{request.id} {type(exc).__name__} {'Traceback' in traceback}\n")


def filled(value: float, nbytes: int) -> Any:
    """A float64 array of ``nbytes`` bytes, every item ``value``."""
    import numpy as np

    return np.full(nbytes // 8, float(value))


def array_sum(*arrays: Any) -> float:
    """The sum of every item of every array."""
    return float(sum(float(array.sum()) for array in arrays))


def hog(megabytes: int, seconds: float) -> int:
    """Hold ``megabytes`` of memory for ``seconds`` while running, then let it go."""
    held = bytearray(megabytes << 20)
    for i in range(0, len(held), 4096):  # touch every page: resident, not just reserved
        held[i] = 1
    time.sleep(seconds)
    return len(held)
