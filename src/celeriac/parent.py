"""Processes started on behalf of another stop when it is gone.

The embedded cluster's scheduler and workers, and each worker process of a
supervisor, are told their parent's pid and check it in their loops: once the
parent is gone, re-parenting changes ``getppid()`` (even if the parent died
before the child started, the first check fires).
"""

from __future__ import annotations

import os


def parent_gone(parent_pid: int | None) -> bool:
    """Whether the process we were started for (``None``: none) has exited."""
    return parent_pid is not None and os.getppid() != parent_pid
