"""Which worker gets each ready task, and how deep a worker's prefetch may grow.

Every worker may hold its slots plus ``prefetch`` tasks.  Beyond that, short
tasks may pile up to ``max_prefetch`` while their estimated run time (a
moving average per task name) stays under ``prefetch_seconds`` per slot:
deep pipelines for tiny tasks, shallow ones for long tasks.

A prefetched task can still end up behind one that hangs: when every slot of
a worker holds an overdue task (running ``steal_after`` seconds and twice its
expected duration) while another worker that serves its queue has an idle
slot, the scheduler asks for its prefetched tasks back (``steal``); the
worker answers with those it had not started (``handed-back``), and they are
assigned again like any ready task.
"""

from __future__ import annotations

import heapq
from typing import Any

from celeriac.scheduler.lifecycle import TaskLifecycle
from celeriac.scheduler.outbox import Outbox
from celeriac.scheduler.policies import RateLimits
from celeriac.scheduler.records import SchedulerConfig, TaskRecord, WorkerRecord
from celeriac.states import TaskState
from celeriac.wire.protocol import Message, Payload


class Assigner:
    """Gives ready tasks to workers: ``assign`` after every batch that made work ready.

    ``config`` holds prefetch and timing; ``workers`` and ``lifecycle`` are the
    state's own (shared, not copied); ``run`` messages go to ``outbox``.
    """

    def __init__(
        self,
        config: SchedulerConfig,
        workers: dict[bytes, WorkerRecord],
        lifecycle: TaskLifecycle,
        outbox: Outbox,
    ) -> None:
        self._config = config
        self._workers = workers
        self._lifecycle = lifecycle
        self._outbox = outbox
        self._rates = RateLimits()
        self._durations: dict[str, float] = {}  # task name -> moving average run time

    def assign(self) -> None:
        """Give each ready task to the least-loaded worker with room that serves its queue.

        Least-loaded first, so a task never waits in one worker's prefetch
        while another worker's slot is idle.
        """
        candidates = [
            (len(w.assigned) / w.slots, i, w)
            for i, w in enumerate(self._workers.values())
            if self._has_room(w)
        ]
        heapq.heapify(candidates)
        while candidates:
            _, order, worker = heapq.heappop(candidates)
            task = self._next_for(worker)
            if task is None:
                continue  # nothing for its queues; it leaves the candidates
            self._give(worker, task)
            if self._has_room(worker):
                heapq.heappush(candidates, (len(worker.assigned) / worker.slots, order, worker))

    def steal(self, now: float) -> None:
        """Ask workers stuck on overdue tasks for their prefetched ones, for idle slots."""
        idle = [w for w in self._workers.values() if not w.closing and len(w.assigned) < w.slots]
        if not idle:
            return
        for worker in self._workers.values():
            if worker.stealing or worker.closing or len(worker.assigned) <= worker.slots:
                continue  # nothing prefetched, or already asked
            free = sum(w.slots - len(w.assigned) for w in idle if _overlap(w, worker))
            if free and (keys := self._stealable(worker, now, free)):
                worker.stealing = True
                self._outbox.put(worker.id, Message("steal", {"keys": keys}))

    def _stealable(self, worker: WorkerRecord, now: float, most: int) -> list[str]:
        """Up to ``most`` of its prefetched keys, in order, if all its slots are overdue."""
        tasks = self._lifecycle.tasks
        overdue, waiting = 0, []
        for key in worker.assigned:
            task = tasks[key]
            if not task.started:
                waiting.append(key)
            elif now - task.started_at > max(self._config.steal_after, 2 * task.estimate):
                overdue += 1
        return waiting[:most] if overdue >= worker.slots else []

    def learn_duration(self, name: str, duration: float | None) -> None:
        """A task of this name ran for ``duration`` seconds (as its worker measured)."""
        if duration is None or duration < 0:
            return
        old = self._durations.get(name)
        self._durations[name] = duration if old is None else 0.8 * old + 0.2 * duration

    def _has_room(self, worker: WorkerRecord) -> bool:
        if worker.closing:
            return False
        held = len(worker.assigned)
        if held < worker.slots + self._config.prefetch:
            return True
        return (
            held < worker.slots + self._config.max_prefetch
            and worker.queued_work < self._config.prefetch_seconds * worker.slots
        )

    def _next_for(self, worker: WorkerRecord) -> TaskRecord | None:
        """The next queued task for this worker, past expiry and rate-limit checks."""
        lifecycle = self._lifecycle
        now = lifecycle.now
        while (task := lifecycle.ready.pop(worker.queues)) is not None:
            if task.expires is not None and task.expires <= now:
                lifecycle.expire(task)
                continue
            if task.rate_limit is not None:
                wait = self._rates.wait_time(task.name, task.rate_limit, now)
                if wait > 0:
                    # Deferred explicitly: on a wall clock, a wait shorter than the
                    # float spacing of ``now`` would leave ``now + wait == now``.
                    lifecycle.defer(task, now + wait)
                    continue
            return task
        return None

    def _give(self, worker: WorkerRecord, task: TaskRecord) -> None:
        self._lifecycle.transition(task, TaskState.PROCESSING)
        task.worker = worker.id
        task.estimate = self._durations.get(task.name, self._config.unknown_duration)
        worker.assigned[task.key] = None
        worker.queued_work += task.estimate
        self._outbox.put(worker.id, Message("run", _run_fields(task), self._run_payloads(task)))

    def _run_payloads(self, task: TaskRecord) -> list[Payload]:
        """The function, the arguments, then the result of each dependency."""
        payloads = [task.function, task.args]
        if task.deps:
            tasks = self._lifecycle.tasks
            for dep_key in task.deps:
                dep = tasks[dep_key]
                assert dep.result is not None
                payloads.append(dep.result)
        return payloads


def _overlap(a: WorkerRecord, b: WorkerRecord) -> bool:
    """Whether the two workers serve a queue in common."""
    return not set(a.queues).isdisjoint(b.queues)


def _run_fields(task: TaskRecord) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "key": task.key,
        "name": task.name,
        "deps": list(task.deps),
        "attempt": task.attempts,
    }
    if task.time_limit is not None:
        fields["time_limit"] = task.time_limit
    if task.soft_time_limit is not None:
        fields["soft_time_limit"] = task.soft_time_limit
    return fields
