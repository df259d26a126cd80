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
from celeriac.wire.protocol import Message


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
            load, order, worker = heapq.heappop(candidates)
            if load != len(worker.assigned) / worker.slots:  # given a task meanwhile
                if self._has_room(worker):
                    heapq.heappush(candidates, (len(worker.assigned) / worker.slots, order, worker))
                continue
            task = self._next_for(worker)
            if task is None:
                continue  # nothing for its queues; it leaves the candidates
            taker = self._local_worker(task, worker) if task.deps else worker
            self._give(taker, task)
            if self._has_room(worker):
                heapq.heappush(candidates, (len(worker.assigned) / worker.slots, order, worker))

    def _local_worker(self, task: TaskRecord, least_loaded: WorkerRecord) -> WorkerRecord:
        """Who should run ``task``: the worker keeping most of its input bytes, or
        ``least_loaded``, whichever would start it sooner.

        A worker's start time (Dask's worker objective) is what it must fetch,
        at ``bandwidth``, plus the estimated run time of what it holds already,
        per slot.  So a task whose inputs are large waits behind short tasks on
        the worker that has them (the all-to-all's pieces), and goes elsewhere
        when that worker is busy for longer than the transfer takes.  The holder
        may queue it past the usual prefetch, up to ``max_prefetch``: the cost
        of that waiting is in its start time.  Results the scheduler has (small
        ones, or shared memory) move nothing and count for nobody.
        """
        tasks = self._lifecycle.tasks
        by_holder: dict[bytes, int] = {}
        for key in task.deps:
            dep = tasks[key]
            if dep.holder is not None:
                by_holder[dep.holder] = by_holder.get(dep.holder, 0) + dep.nbytes
        if not by_holder:
            return least_loaded
        holder = self._workers.get(max(by_holder, key=by_holder.__getitem__))
        if holder is None or holder is least_loaded or task.queue not in holder.queues:
            return least_loaded
        if holder.closing or holder.paused:
            return least_loaded
        if len(holder.assigned) >= holder.slots + self._config.max_prefetch:
            return least_loaded
        total = sum(by_holder.values())
        bandwidth = self._config.bandwidth

        def start(worker: WorkerRecord) -> float:
            fetch = (total - by_holder.get(worker.id, 0)) / bandwidth
            return fetch + worker.queued_work / worker.slots

        return holder if start(holder) <= start(least_loaded) else least_loaded

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
        if worker.closing or worker.paused:
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
        self._outbox.put(worker.id, self._run_message(worker, task))

    def _run_message(self, worker: WorkerRecord, task: TaskRecord) -> Message:
        """The function, the arguments, then the result of each dependency (an empty
        payload for one a worker keeps: ``where`` names it, and the worker fetches it)."""
        fields = _run_fields(task)
        payloads = [task.function, task.args]
        if task.deps:
            tasks, workers = self._lifecycle.tasks, self._workers
            where: list[str] = []
            for dep_key in task.deps:
                dep = tasks[dep_key]
                if dep.holder is None:
                    assert dep.result is not None
                    payloads.append(dep.result)
                    where.append("")
                else:
                    payloads.append([])
                    where.append(workers[dep.holder].peer or "")
            if any(where):
                fields["where"] = where
        if worker.peer is not None and not (task.durable or task.ignore_result):
            # Between hosts, a future's large result stays where it was made.
            # Durable work's outcome must outlive the worker: it comes here.
            fields["keep"] = self._config.inline_result_bytes
        return Message("run", fields, payloads)


def _load(worker: WorkerRecord) -> float:
    """Tasks per slot a worker holds (running and prefetched)."""
    return len(worker.assigned) / worker.slots


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
