"""Ready tasks, one heap per named queue: highest priority first, then oldest."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable


class ReadyQueues:
    """Entries are ``(-priority, seq, key)``.

    Tasks that leave a queue by other means (cancelled, expired, released)
    are not searched for: their entries go stale and are skipped on pop.
    """

    def __init__(self, is_live: Callable[[str], bool]) -> None:
        self._heaps: dict[str, list[tuple[int, int, str]]] = {}
        self._is_live = is_live

    def push(self, queue: str, priority: int, seq: int, key: str) -> None:
        heapq.heappush(self._heaps.setdefault(queue, []), (-priority, seq, key))

    def pop(self, queues: Iterable[str]) -> str | None:
        """The best live key across ``queues``, removed; ``None`` if all are empty."""
        best = None
        for name in queues:
            heap = self._heaps.get(name)
            while heap and not self._is_live(heap[0][2]):
                heapq.heappop(heap)
            if heap and (best is None or heap[0] < best[0]):
                best = heap
        return heapq.heappop(best)[2] if best is not None else None

    def summary(self, queued_at: Callable[[str], float]) -> tuple[dict[str, int], dict[str, float]]:
        """Per queue: how many live tasks wait, and since when the oldest has waited."""
        depths: dict[str, int] = {}
        oldest: dict[str, float] = {}
        for name, heap in self._heaps.items():
            live = [key for *_, key in heap if self._is_live(key)]
            depths[name] = len(live)
            if live:
                oldest[name] = min(queued_at(key) for key in live)
        return depths, oldest
