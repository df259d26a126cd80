"""Ready tasks, one queue per name: highest priority first, then oldest."""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable

from celeriac.scheduler.records import TaskRecord
from celeriac.states import TaskState

_QUEUED = TaskState.QUEUED  # a task in any other state has left its queue

#: ``(-priority, seq, task)``: ``seq`` is unique, so tasks themselves never compare.
Entry = tuple[int, int, TaskRecord]


class ReadyQueues:
    """The named queues; a task is taken from the best head among a worker's queues.

    Tasks that leave a queue by other means (cancelled, expired, released)
    are not searched for: their entries go stale and are skipped on pop.  An
    entry holds the task itself, not its key: a stale entry stays stale even
    if the key is submitted again, and checking it needs no lookup.
    """

    def __init__(self) -> None:
        self._queues: dict[str, _Queue] = {}

    def push(self, task: TaskRecord) -> None:
        """Queue a ready task in its queue, ordered by (priority, submission order)."""
        queue = self._queues.get(task.queue)
        if queue is None:
            queue = self._queues[task.queue] = _Queue()
        queue.push((-task.priority, task.seq, task))
        queue.live += 1

    def left(self, task: TaskRecord) -> None:
        """``task`` left the QUEUED state (its entry, if still there, is stale now)."""
        self._queues[task.queue].live -= 1

    def pop(self, queues: Iterable[str]) -> TaskRecord | None:
        """The best live task across ``queues``, removed; ``None`` if all are empty."""
        best: Entry | None = None
        best_queue = None
        for name in queues:
            queue = self._queues.get(name)
            entry = queue.head() if queue is not None else None
            if entry is not None and (best is None or entry < best):
                best, best_queue = entry, queue
        if best is None or best_queue is None:
            return None
        best_queue.remove(best)
        return best[2]

    def summary(self) -> tuple[dict[str, int], dict[str, float]]:
        """Per queue: how many live tasks wait, and since when the oldest has waited.

        Cheap enough to ask often (monitoring polls it while 20,000 tasks
        wait): counted as tasks come and go, and ``run`` is in arrival order,
        so its oldest live task is its first.
        """
        depths: dict[str, int] = {}
        oldest: dict[str, float] = {}
        for name, queue in self._queues.items():
            depths[name] = queue.live
            if queue.live:
                oldest[name] = queue.oldest_wait()
        return depths, oldest


class _Queue:
    """A heap, plus the entries that arrived in order.

    Tasks mostly arrive in order (one priority, rising ``seq``): those are
    appended to ``run``, which stays sorted, and leave from its front, with
    no heap work at all.  Only an entry that belongs ahead of the run's last
    (a higher priority, an older task back from a lost worker or a retry)
    goes to the heap.  The best entry is the smaller of the two heads.
    """

    __slots__ = ("heap", "live", "run")

    def __init__(self) -> None:
        self.heap: list[Entry] = []
        self.run: deque[Entry] = deque()
        self.live = 0  # entries of tasks still QUEUED

    def oldest_wait(self) -> float:
        """The earliest ``queued_at`` among live entries (``inf`` if none)."""
        run = self.run
        while run and run[0][2].state is not _QUEUED:
            run.popleft()
        times = [task.queued_at for *_, task in self.heap if task.state is _QUEUED]
        if run:
            times.append(run[0][2].queued_at)
        return min(times, default=float("inf"))

    def push(self, entry: Entry) -> None:
        run = self.run
        if not run or run[-1] < entry:
            run.append(entry)
        else:
            heapq.heappush(self.heap, entry)

    def head(self) -> Entry | None:
        """The best live entry, left in place (stale ones in front are dropped)."""
        heap, run = self.heap, self.run
        while heap and heap[0][2].state is not _QUEUED:
            heapq.heappop(heap)
        while run and run[0][2].state is not _QUEUED:
            run.popleft()
        if heap and (not run or heap[0] < run[0]):
            return heap[0]
        return run[0] if run else None

    def remove(self, head: Entry) -> None:
        """Remove the entry ``head`` just returned."""
        if self.heap and self.heap[0] is head:
            heapq.heappop(self.heap)
        else:
            self.run.popleft()
