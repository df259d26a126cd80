"""What a running task can know about itself (Celery's ``self.request``)."""

from __future__ import annotations

import threading
from dataclasses import dataclass

_local = threading.local()


@dataclass(frozen=True)
class TaskRequest:
    id: str
    name: str
    retries: int  # attempts before this one


def current_request() -> TaskRequest | None:
    """The request of the task running in this thread, or ``None`` outside a task."""
    return getattr(_local, "request", None)


def set_request(request: TaskRequest | None) -> None:
    _local.request = request
