"""What a running task can know about itself (Celery's ``self.request``)."""

from __future__ import annotations

import threading
from dataclasses import dataclass

_local = threading.local()


@dataclass(frozen=True)
class TaskRequest:
    """The running task, as ``current_request()`` returns it.

    ``id`` is the task's key; ``name`` its name (the key when the ``run``
    message named none); ``retries`` how many times it has been retried so far,
    as Celery counts: 0 on the first run, and a rerun because its worker was
    lost does not count.
    """

    id: str
    name: str
    retries: int  # retries before this one


def current_request() -> TaskRequest | None:
    """The request of the task running in this thread, or ``None`` outside a task."""
    return getattr(_local, "request", None)


def set_request(request: TaskRequest | None) -> None:
    """Make ``request`` this thread's running task; ``None`` once it returns.

    The worker calls it around each task; a worker with several slots runs each
    in its own thread, hence a thread-local.
    """
    _local.request = request
