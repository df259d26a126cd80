"""Deadlines the scheduler keeps: etas, retry back-offs, expiries, result TTLs.

A heap of ``(when, seq, key, kind)``.  Entries are never removed early: a
fired entry whose task has moved on is simply ignored by the caller, which
keeps every operation O(log n).
"""

from __future__ import annotations

import heapq
import itertools
from typing import NamedTuple


class Timer(NamedTuple):
    """One timer: at ``when``, act on task ``key`` (or periodic job) as ``kind`` says."""

    when: float
    seq: int
    key: str
    kind: str  # "ready" (eta, back-off, rate limit), "expire", "forget"


class TimerQueue:
    """Every timer of the scheduler in one heap, earliest first; ties in insertion order."""

    def __init__(self) -> None:
        self._heap: list[Timer] = []
        self._seq = itertools.count()

    def add(self, when: float, key: str, kind: str) -> None:
        """Set a timer; stale ones are not removed, the handler checks when they fire."""
        heapq.heappush(self._heap, Timer(when, next(self._seq), key, kind))

    def due(self, now: float) -> list[Timer]:
        """Remove and return every timer at or before ``now``, earliest first."""
        fired = []
        while self._heap and self._heap[0].when <= now:
            fired.append(heapq.heappop(self._heap))
        return fired

    def next_deadline(self) -> float | None:
        """When the earliest timer is due (``None``: no timer)."""
        return self._heap[0].when if self._heap else None

    def __len__(self) -> int:
        return len(self._heap)
