"""The tasks the scheduler holds, and every move they make.

Pure, like the rest of the state machine: the caller sets ``now`` before
each event, and what must be said to peers or written to the journal goes
to the :class:`Outbox` and :class:`JournalOps` it was given.
"""

from __future__ import annotations

import itertools
import logging
import pickle
import random
from collections import deque
from typing import Any

from celeriac.scheduler.outbox import JournalOps, Outbox
from celeriac.scheduler.periodic import PeriodicJobs
from celeriac.scheduler.policies import backoff_delay
from celeriac.scheduler.queues import ReadyQueues
from celeriac.scheduler.records import (
    DETACHED,
    SUBMIT_OPTIONS,
    ClientRecord,
    SchedulerConfig,
    TaskRecord,
    WorkerRecord,
)
from celeriac.scheduler.timers import TimerQueue
from celeriac.scheduler.transitions import TRANSITIONS, check_transition
from celeriac.states import FINISHED, TaskState
from celeriac.wire.protocol import Message, Payload, nbytes

log = logging.getLogger("celeriac.scheduler")

_QUEUED = TaskState.QUEUED
#: States in which a task holds on to its inputs being there.
_READY_WITH_INPUTS = (TaskState.SCHEDULED, TaskState.QUEUED, TaskState.PROCESSING)

#: The payload of ``None``, for tasks whose result is ignored.  Making a
#: constant pickle is not unpickling anything: the rule holds.
_NONE = (pickle.dumps(None, protocol=5),)
_OPTIONS = frozenset(SUBMIT_OPTIONS)


class TaskLifecycle:
    """Tasks from submission to being forgotten.

    Every move is checked against the transition table and counted by state,
    and carries its consequences: the clients that want a task hear how it
    ended, its dependents become ready or inherit its failure, and a
    finished task that nobody needs any more is forgotten.  Timers (etas,
    back-offs, expiry, result TTLs) and periodic jobs start moves too.

    ``tasks``, ``ready``, ``timers``, ``periodic`` and ``now`` are shared with
    the rest of the state machine; ``needs_assigning`` tells it that a task
    became ready or a worker got room since it last assigned.
    """

    def __init__(
        self,
        config: SchedulerConfig,
        workers: dict[bytes, WorkerRecord],
        outbox: Outbox,
        journal: JournalOps,
    ) -> None:
        self._config = config
        self.tasks: dict[str, TaskRecord] = {}
        self.ready = ReadyQueues()
        self.timers = TimerQueue()
        self.periodic = PeriodicJobs(
            self.timers,
            self._enqueue_periodic_run,
            lambda key: self.tasks.get(key),
            journal.job,
        )
        self.now = 0.0
        self.needs_assigning = False
        self.counters = {"done": 0, "erred": 0, "submitted": 0}
        #: Tasks by state, kept as they change: inspection must not walk every task.
        self.by_state: dict[TaskState, int] = dict.fromkeys(TaskState, 0)
        #: The last failures, with their tracebacks, for inspection and the dashboard.
        self.recent_failures: deque[dict[str, Any]] = deque(maxlen=50)
        self._workers = workers  # only to take a task back from the worker that holds it
        self._outbox = outbox
        self._journal = journal
        self._rng = random.Random(config.seed)
        self._seq = itertools.count()

    # -- new tasks ---------------------------------------------------------------------

    def submit(
        self, msg: Message, wanted_by: ClientRecord | None, *, durable: bool, revoked: bool = False
    ) -> TaskRecord:
        """A task from a ``submit`` message whose key is new; ``None`` wants it detached."""
        task = self._new_task(msg)
        task.durable = durable
        self.want(wanted_by, task)
        self._journal.task(task)
        if revoked:
            self.cancel(task)
        else:
            self.link_dependencies(task)
        return task

    def add(self, task: TaskRecord) -> None:
        """Put a task in the table (counted by its state), as submitted or restored."""
        self.tasks[task.key] = task
        self.by_state[task.state] += 1

    def next_seq(self) -> int:
        """The next submission number: ties in priority go to the older task."""
        return next(self._seq)

    def link_dependencies(self, task: TaskRecord) -> None:
        """Wait for unfinished dependencies, inherit a failed one's fate, or become ready."""
        for dep_key in task.deps:
            dep = self.tasks.get(dep_key)
            if dep is None:
                self.fail(task, "lost-dependency", f"dependency {dep_key!r} is not known")
                return
            dep.dependents[task.key] = None
            if dep.state.finished and dep.state is not TaskState.MEMORY:
                self._inherit_failure(task, dep)
                return
            if dep.state is not TaskState.MEMORY:
                task.waiting_on[dep_key] = None
        if not task.waiting_on:
            self.make_ready(task)

    def want(self, client: ClientRecord | None, task: TaskRecord) -> None:
        """The client wants the task's outcome (``None``: detached, keep it until it ends)."""
        if client is None:
            if task.state not in FINISHED:
                task.wanted_by[DETACHED] = None
            return
        task.wanted_by[client.id] = None
        client.wants.add(task.key)
        if task.state in FINISHED:
            self.notify(client.id, task, inline_limit=self._config.inline_result_bytes)

    def _new_task(self, msg: Message) -> TaskRecord:
        fields = msg.fields
        key = fields["key"]
        name = fields.get("name", key)
        function, args = msg.payloads[0], msg.payloads[1]
        deps = tuple(fields["deps"])
        priority = fields["priority"]
        seq = next(self._seq)
        queue = fields["queue"]
        retries_left = max(0, fields["retries"])
        # Positional, in field order: matching keywords would cost a third of the call.
        task = TaskRecord(key, name, function, args, deps, priority, seq, queue, retries_left)
        if "eta" in fields:
            task.not_before = fields["eta"]
        # Walks the (few) fields given, not every option: most submits set none.
        if not _OPTIONS.isdisjoint(fields):
            for option in _OPTIONS.intersection(fields):
                setattr(task, option, fields[option])
        if task.expires is not None:
            self.timers.add(task.expires, task.key, "expire")
        self.add(task)
        self.counters["submitted"] += 1
        return task

    def _enqueue_periodic_run(self, submit: Message) -> bool:
        """Enqueue one run of a periodic job; False if that tick is already enqueued."""
        if submit.fields["key"] in self.tasks:
            return False
        self.submit(submit, None, durable=True)
        return True

    # -- moves -------------------------------------------------------------------------

    def transition(self, task: TaskRecord, new: TaskState) -> None:
        """Move ``task`` to ``new``; an illegal move raises ``InvalidTransition``."""
        old = task.state
        if new not in TRANSITIONS[old]:  # checked here first: this runs on every move
            check_transition(task.key, old, new)
        by_state = self.by_state
        by_state[old] -= 1
        by_state[new] += 1
        task.state = new
        if old is _QUEUED:
            self.ready.left(task)

    def make_ready(self, task: TaskRecord) -> None:
        """Queue the task now, or at its ``not_before`` time."""
        if task.expires is not None and task.expires <= self.now:
            self.expire(task)
        elif task.not_before > self.now:
            self.defer(task, task.not_before)
        else:
            self.transition(task, TaskState.QUEUED)
            task.queued_at = self.now
            self.ready.push(task)
            self.needs_assigning = True

    def defer(self, task: TaskRecord, until: float) -> None:
        """Hold a ready task back until ``until`` (eta, back-off, rate limit)."""
        task.not_before = until
        self.transition(task, TaskState.SCHEDULED)
        self.timers.add(until, task.key, "ready")

    def unassign(self, task: TaskRecord) -> None:
        """Take the task back from its worker's load (the worker itself is told nothing)."""
        worker = self._workers.get(task.worker) if task.worker else None
        if worker is not None:
            worker.assigned.pop(task.key, None)
            worker.queued_work = max(0.0, worker.queued_work - task.estimate)
            self.needs_assigning = True
        task.worker = None

    def retry(self, task: TaskRecord, countdown: float | None) -> bool:
        """Schedule another attempt if retries are left; False if they are not."""
        if task.retries_left <= 0:
            return False
        task.retries_left -= 1
        task.attempts += 1
        if countdown is None and task.retry_backoff:
            countdown = backoff_delay(
                task.attempts,
                base=float(task.retry_backoff),  # a 0.1.0 journal holds True: 1 s
                cap=task.backoff_max,
                jitter=task.retry_jitter,
                rng=self._rng,
            )
        log.info("task %s retries (attempt %d) in %.3g s", task.key, task.attempts, countdown or 0)
        task.started = False
        task.not_before = self.now + (countdown or 0.0)
        self.make_ready(task)
        self._journal.task(task)
        return True

    # -- endings -----------------------------------------------------------------------

    def succeed(
        self, task: TaskRecord, result: Payload, kept_by: WorkerRecord | None = None, size: int = 0
    ) -> None:
        """Keep the result (or, ``kept_by`` a worker, where it is and its ``size``),
        tell who wants it, and queue dependents waiting only on it."""
        self.transition(task, TaskState.MEMORY)
        if kept_by is None:
            task.result = _NONE if task.ignore_result else result
            task.function = task.args = ()  # no longer needed; free the memory now
        else:
            # The function and arguments stay: a result lost with its worker is
            # computed again from them.
            task.holder, task.nbytes = kept_by.id, size
            kept_by.holds[task.key] = None
        self.counters["done"] += 1
        self._notify_wanters(task, inline_limit=self._config.inline_result_bytes)
        if task.dependents:
            self._ready_dependents(task)
        self._after_finish(task)

    def _ready_dependents(self, task: TaskRecord) -> None:
        """Queue the dependents that waited only on this (now finished) task."""
        # A copy: a dependent that expires as it becomes ready leaves ``dependents``.
        for dependent_key in list(task.dependents):
            dependent = self.tasks.get(dependent_key)
            if dependent is not None and dependent.state is TaskState.WAITING:
                dependent.waiting_on.pop(task.key, None)
                if not dependent.waiting_on:
                    self.make_ready(dependent)

    def fail(self, task: TaskRecord, kind: str, text: str, payload: Payload = ()) -> None:
        """Fail for good: ``kind`` of failure, its ``text``, the pickled exception ``payload``.

        Dependents fail with the same error; the failure is kept for inspection.
        """
        self.transition(task, TaskState.ERRED)
        failure = {"key": task.key, "name": task.name, "kind": kind, "text": text}
        self.recent_failures.append({**failure, "time": self.now})
        task.error = (kind, text, payload)
        task.function = task.args = ()
        self.counters["erred"] += 1
        self._finish_unsuccessfully(task)

    def cancel(self, task: TaskRecord, terminate: bool = False) -> None:
        """Cancel (revoke); a worker holding it is told to drop it (kill it: ``terminate``)."""
        if task.state is TaskState.PROCESSING and task.worker is not None:
            self._outbox.send(task.worker, "drop", key=task.key, terminate=terminate)
            self.unassign(task)
        self.transition(task, TaskState.CANCELLED)
        task.function = task.args = ()
        self._finish_unsuccessfully(task)

    def expire(self, task: TaskRecord) -> None:
        """Its expiry time passed before it started: it never runs."""
        log.info("task %s (%s) expired before it ran", task.key, task.name)
        self.transition(task, TaskState.EXPIRED)
        task.function = task.args = ()
        self._finish_unsuccessfully(task)

    def _inherit_failure(self, task: TaskRecord, dep: TaskRecord) -> None:
        if dep.state is TaskState.ERRED:
            assert dep.error is not None
            self.fail(task, *dep.error)
        else:  # cancelled or expired: this one will not run either
            self.cancel(task)

    def _finish_unsuccessfully(self, task: TaskRecord) -> None:
        self._notify_wanters(task, inline_limit=None)
        for dependent_key in list(task.dependents):
            dependent = self.tasks.get(dependent_key)
            if dependent is not None and dependent.state not in FINISHED:
                self._inherit_failure(dependent, task)
        self._after_finish(task)

    def _after_finish(self, task: TaskRecord) -> None:
        task.wanted_by.pop(DETACHED, None)
        self.periodic.run_finished(task)
        if task.result_ttl is not None and not task.ignore_result:
            task.keep_until = self.now + task.result_ttl
            self.timers.add(task.keep_until, task.key, "forget")
        self._journal.task(task)
        if task.deps:
            self._release_dependencies(task)
        self.forget_if_unneeded(task)

    # -- forgetting --------------------------------------------------------------------

    def forget_if_unneeded(self, task: TaskRecord) -> None:
        """Forget a task no client wants and no dependent needs (cancel it if unfinished)."""
        if task.wanted_by or task.dependents or self.tasks.get(task.key) is not task:
            return
        if task.state not in FINISHED:
            self.cancel(task)  # nobody wants it any more: do not waste a worker on it
            return
        if task.keep_until > self.now:
            return  # kept for readers by id until its TTL runs out
        del self.tasks[task.key]
        self.by_state[task.state] -= 1
        if task.holder is not None:
            self._free(task)
        if task.durable:
            self._journal.record("task", task.key, None)
        if task.deps:
            self._release_dependencies(task)

    def _release_dependencies(self, task: TaskRecord) -> None:
        """A finished task no longer needs its dependencies' results."""
        for dep_key in task.deps:
            dep = self.tasks.get(dep_key)
            if dep is not None:
                dep.dependents.pop(task.key, None)
                self.forget_if_unneeded(dep)

    # -- results kept on workers -------------------------------------------------------

    def _free(self, task: TaskRecord) -> None:
        """Tell the worker keeping the result of a task we forget that it may drop it."""
        worker = self._workers.get(task.holder) if task.holder else None
        task.holder = None
        if worker is not None:
            worker.holds.pop(task.key, None)
            self._outbox.free(worker.id, task.key)

    def scattered(self, key: str, worker: WorkerRecord, size: int, client: ClientRecord) -> None:
        """Data a client put on ``worker`` directly: a finished task it keeps, with no
        function to compute it again from (lost with the worker, it fails)."""
        task = TaskRecord(key, "scatter", (), (), (), 0, next(self._seq), "default", 0)
        task.state = TaskState.MEMORY
        task.holder, task.nbytes = worker.id, size
        self.add(task)
        worker.holds[key] = None
        self.want(client, task)

    def results_lost(self, worker: WorkerRecord) -> None:
        """The worker is gone, and the results it kept with it: compute again those
        still wanted (dependents that were ready with them wait again), fail those
        that cannot be (an input of theirs is gone too)."""
        lost = [
            task
            for key in worker.holds
            if (task := self.tasks.get(key)) is not None and task.holder == worker.id
        ]
        worker.holds.clear()
        for task in lost:
            task.holder = None
        for task in lost:
            if task.state is TaskState.MEMORY and (why := _cannot_compute_again(task, self.tasks)):
                text = f"the result of {task.key!r} was lost with worker {worker.name}: {why}"
                log.warning("%s", text)
                self.fail(task, "lost", text)
        again = [task for task in lost if task.state is TaskState.MEMORY]
        for task in again:  # all first: one may be another's input
            log.info(
                "task %s: result lost with worker %s; computing it again", task.key, worker.name
            )
            self.transition(task, TaskState.WAITING)
            task.started = False
        for task in again:
            for dependent_key in task.dependents:
                dependent = self.tasks.get(dependent_key)
                if dependent is None:
                    continue
                if dependent.state is TaskState.WAITING:
                    dependent.waiting_on[task.key] = None
                elif dependent.state in _READY_WITH_INPUTS:
                    self.wait_again(dependent, (task.key,))
        for task in again:
            if task.state is TaskState.WAITING:
                self.link_dependencies(task)

    def wait_again(self, task: TaskRecord, inputs: tuple[str, ...] | list[str]) -> None:
        """A task that was ready waits again: ``inputs`` were lost, and come again."""
        if task.state is TaskState.PROCESSING:
            if task.worker is not None:  # its worker would fetch them in vain
                self._outbox.send(task.worker, "drop", key=task.key)
            self.unassign(task)
        self.transition(task, TaskState.WAITING)
        for key in inputs:
            dep = self.tasks.get(key)
            if dep is not None and not dep.state.finished:
                task.waiting_on[key] = None
        if not task.waiting_on:
            self.make_ready(task)

    # -- telling clients ---------------------------------------------------------------

    def notify(self, to: bytes, task: TaskRecord, inline_limit: int | None) -> None:
        """Tell a client how a finished task ended; results over ``inline_limit`` wait for
        fetch, and one a worker keeps is fetched from there."""
        if task.state is TaskState.MEMORY:
            if task.holder is not None:
                fields = {"key": task.key, "inline": False, "size": task.nbytes}
                holder = self._workers.get(task.holder)
                if holder is not None and holder.peer is not None:
                    fields["at"] = holder.peer
                self._outbox.put(to, Message("result", fields))
                return
            assert task.result is not None
            if inline_limit is None or _size(task.result) <= inline_limit:
                self._outbox.send(to, "result", [task.result], key=task.key, inline=True)
            else:
                self._outbox.send(to, "result", key=task.key, inline=False)
        elif task.state is TaskState.ERRED:
            assert task.error is not None
            kind, text, payload = task.error
            payloads = [payload] if payload else []
            self._outbox.send(to, "erred", payloads, key=task.key, kind=kind, text=text)
        else:
            self._outbox.send(to, "cancelled", key=task.key, reason=task.state.value)

    def watch(self, client_id: bytes, task: TaskRecord) -> None:
        """Push the outcome of a detached task to the client holding its result.

        Unlike ``want``, this keeps nothing: the task's result TTL and
        ``forget`` apply as if nobody held it.
        """
        if task.state in FINISHED:
            self.notify(client_id, task, inline_limit=self._config.inline_result_bytes)
        else:
            task.watcher = client_id

    def _notify_wanters(self, task: TaskRecord, inline_limit: int | None) -> None:
        for client_id in task.wanted_by:
            if client_id != DETACHED:
                self.notify(client_id, task, inline_limit)
        watcher, task.watcher = task.watcher, None
        if watcher is not None and watcher not in task.wanted_by:
            self.notify(watcher, task, inline_limit=self._config.inline_result_bytes)

    # -- timers ------------------------------------------------------------------------

    def fire_timers(self, now: float) -> None:
        """Act on every timer due by ``now``: readiness, expiry, forgetting, periodic ticks."""
        for timer in self.timers.due(now):
            self._fire(timer.kind, timer.key, now)

    def _fire(self, kind: str, key: str, now: float) -> None:
        if kind == "periodic":
            self.periodic.fire(key, now)
            return
        task = self.tasks.get(key)
        if task is None:
            return
        if kind == "ready" and task.state is TaskState.SCHEDULED and task.not_before <= now:
            self.make_ready(task)
        elif kind == "expire" and _expired_before_running(task, now):
            self.expire(task)
        elif kind == "forget" and task.state.finished:
            self.forget_if_unneeded(task)


def _cannot_compute_again(task: TaskRecord, tasks: dict[str, TaskRecord]) -> str | None:
    """Why a lost result cannot be computed again, if it cannot."""
    if not task.function:
        return "it was scattered data, which exists nowhere else"
    gone = next((key for key in task.deps if key not in tasks), None)
    if gone is not None:
        return f"it cannot be computed again: its input {gone!r} is gone too"
    return None


def _size(payload: Payload) -> int:
    """Bytes in a payload's frames; a plain loop, since it runs for every result."""
    size = 0
    for frame in payload:
        size += len(frame) if type(frame) is bytes else nbytes(frame)
    return size


def _expired_before_running(task: TaskRecord, now: float) -> bool:
    waiting = task.state in (TaskState.WAITING, TaskState.SCHEDULED, TaskState.QUEUED)
    return waiting and task.expires is not None and task.expires <= now
