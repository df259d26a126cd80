"""The scheduler's decisions, as a pure state machine.

Events go in (a message from a peer, or the passage of time via ``tick``),
messages to send come out.  There are no sockets and no clock here: the
caller passes ``now`` (wall-clock seconds) with every event, so tests drive
it with a fake clock and assert on the list of :class:`Send` it returns.

Payloads (functions, arguments, results) are opaque frames: stored and
forwarded, never unpickled.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import pickle
import random
from collections import Counter, deque
from collections.abc import Iterable
from typing import Any

from celeriac.protocol import VERSION, Message, Payload, ProtocolError, nbytes
from celeriac.scheduler.periodic import PeriodicJob, PeriodicJobs
from celeriac.scheduler.policies import RateLimits, backoff_delay, parse_rate
from celeriac.scheduler.queues import ReadyQueues
from celeriac.scheduler.records import (
    DETACHED,
    SUBMIT_OPTIONS,
    Client,
    SchedulerConfig,
    Send,
    Task,
    Worker,
    public_status,
    task_from_record,
    task_record,
)
from celeriac.scheduler.states import TaskState, check_transition
from celeriac.scheduler.timers import TimerQueue

__all__ = ["DETACHED", "SchedulerConfig", "SchedulerState", "Send"]

log = logging.getLogger("celeriac.scheduler")

#: The payload of ``None``, for tasks whose result is ignored.  Making a
#: constant pickle is not unpickling anything: the rule holds.
_NONE = (pickle.dumps(None, protocol=5),)


class SchedulerState:
    def __init__(self, config: SchedulerConfig | None = None) -> None:
        self.config = config or SchedulerConfig()
        self.tasks: dict[str, Task] = {}
        self.workers: dict[bytes, Worker] = {}
        self.clients: dict[bytes, Client] = {}
        self.revoked: dict[str, float] = {}  # ids revoked before we knew them -> until
        self._ready = ReadyQueues(self._is_queued)
        self._timers = TimerQueue()
        self.periodic = PeriodicJobs(
            self._timers,
            self._enqueue_periodic_run,
            lambda key: self.tasks.get(key),
            self._journal_job,
        )
        self._rates = RateLimits()
        self._rng = random.Random(self.config.seed)
        self._seq = itertools.count()
        self._out: list[Send] = []
        self._dirty = False  # something may now be assignable
        self._now = 0.0
        self._durations: dict[str, float] = {}  # task name -> moving average run time
        self.counters = {"done": 0, "erred": 0, "submitted": 0}
        #: Tasks by state, kept as they change: inspection must not walk every task.
        self._by_state: Counter[TaskState] = Counter()
        #: Facts about the process around us (pid, address), set by the server.
        self.about: dict[str, Any] = {}
        #: The last failures, with their tracebacks, for inspection and the dashboard.
        self.recent_failures: deque[dict[str, Any]] = deque(maxlen=50)
        #: (table, key, record or None to delete), written by the server before it sends.
        self.journal_ops: list[tuple[str, str, Any]] = []

    # -- entry points ----------------------------------------------------

    def handle(self, sender: bytes, messages: Iterable[Message], now: float) -> list[Send]:
        """Apply a batch of messages from one peer; return what to send."""
        self._now = now
        for msg in messages:
            self._dispatch(sender, msg, now)
        return self._flush()

    def tick(self, now: float) -> list[Send]:
        """Time has passed: fire due timers, find silent workers and clients."""
        self._now = now
        for timer in self._timers.due(now):
            self._fire(timer.kind, timer.key, now)
        self._expire_revocations(now)
        limit = now - self.config.worker_timeout
        for worker in [w for w in self.workers.values() if w.last_seen < limit]:
            log.warning("worker %s (pid %d) missed its heartbeats", worker.name, worker.pid)
            self._remove_worker(worker, lost=True)
        limit = now - self.config.client_timeout
        for client in [c for c in self.clients.values() if c.last_seen < limit]:
            log.warning("client %s went silent; releasing what it held", client.id.hex())
            self._remove_client(client)
        return self._flush()

    def load_periodic(self, messages: Iterable[Message], now: float) -> None:
        """Install periodic jobs from configuration (``periodic-set`` messages)."""
        self._now = now
        for msg in messages:
            self.periodic.set(msg, now)

    def next_deadline(self) -> float | None:
        """When the earliest timer is due: the server need not tick before then."""
        return self._timers.next_deadline()

    def info(self) -> dict[str, Any]:
        depths, oldest = self._ready.summary(lambda key: self.tasks[key].queued_at)
        return {
            "scheduler": self.about,
            "tasks": len(self.tasks),
            "by_state": {state.value: n for state, n in self._by_state.items() if n},
            "queues": depths,
            "queue_oldest": oldest,
            "workers": [
                {
                    "name": w.name,
                    "pid": w.pid,
                    "slots": w.slots,
                    "queues": list(w.queues),
                    "assigned": len(w.assigned),
                    "running": w.running,
                    "memory": w.memory,
                    "last_seen": w.last_seen,
                }
                for w in self.workers.values()
            ],
            "clients": len(self.clients),
            "timers": len(self._timers),
            "periodic": self.periodic.describe(),
            "counters": dict(self.counters),
            "failures": [
                {**failure, "text": failure["text"][-2000:]}
                for failure in list(self.recent_failures)[-20:]
            ],
        }

    # -- dispatch ----------------------------------------------------------

    def _dispatch(self, sender: bytes, msg: Message, now: float) -> None:
        if msg.op == "hello-client":
            self._client_hello(sender, msg, now)
        elif msg.op == "hello-worker":
            self._worker_hello(sender, msg, now)
        elif sender in self.workers:
            self.workers[sender].last_seen = now
            self._worker_message(self.workers[sender], msg)
        elif sender in self.clients:
            self.clients[sender].last_seen = now
            self._client_message(self.clients[sender], msg)
        else:
            # A peer we do not know: we restarted, or it was declared lost.
            self._send(sender, "reregister")

    def _client_message(self, client: Client, msg: Message) -> None:
        handler = _CLIENT_HANDLERS.get(msg.op)
        if handler is None:
            self._reject(client.id, msg, "not a client message")
        else:
            handler(self, client, msg)

    def _worker_message(self, worker: Worker, msg: Message) -> None:
        handler = _WORKER_HANDLERS.get(msg.op)
        if handler is None:
            self._reject(worker.id, msg, "not a worker message")
        else:
            handler(self, worker, msg)

    def _reject(self, to: bytes, msg: Message, why: str) -> None:
        log.error("rejected %r from %s: %s", msg.op, to.hex(), why)
        self._send(to, "error", text=f"{msg.op!r}: {why}", about=msg.op)

    # -- clients -------------------------------------------------------------

    def _client_hello(self, sender: bytes, msg: Message, now: float) -> None:
        if msg["version"] != VERSION:
            self._send(sender, "error", text=_version_error(msg["version"]), about="hello-client")
            return
        self.clients.setdefault(sender, Client(sender, now)).last_seen = now
        self._send(
            sender, "welcome", version=VERSION, max_message_bytes=self.config.max_message_bytes
        )

    def _submit(self, client: Client, msg: Message) -> None:
        key = msg["key"]
        detached = msg.get("detached", False)
        task = self.tasks.get(key)
        if task is None and not _valid_rate(msg.get("rate_limit")):
            self._reject(client.id, msg, f"bad rate limit {msg.get('rate_limit')!r}")
            return
        if task is not None:  # idempotent: the same key is one task
            self._want(None if detached else client, task)
        else:
            task = self._new_task(msg)
            task.durable = detached
            self._want(None if detached else client, task)
            self._journal_task(task)
            if key in self.revoked:
                self._cancel(task)
            else:
                self._link_dependencies(task)
        if msg.get("ack", False):
            self._send(client.id, "accepted", key=key)

    def _new_task(self, msg: Message) -> Task:
        task = Task(
            key=msg["key"],
            name=msg.get("name", msg["key"]),
            function=msg.payloads[0],
            args=msg.payloads[1],
            deps=tuple(msg["deps"]),
            priority=msg["priority"],
            seq=next(self._seq),
            queue=msg["queue"],
            retries_left=max(0, msg["retries"]),
            not_before=msg.get("eta", 0.0),
        )
        for option in SUBMIT_OPTIONS:
            if option in msg.fields:
                setattr(task, option, msg.fields[option])
        if task.expires is not None:
            self._timers.add(task.expires, task.key, "expire")
        self._add_task(task)
        self.counters["submitted"] += 1
        return task

    def _link_dependencies(self, task: Task) -> None:
        for dep_key in task.deps:
            dep = self.tasks.get(dep_key)
            if dep is None:
                self._fail(task, "lost-dependency", f"dependency {dep_key!r} is not known")
                return
            dep.dependents.add(task.key)
            if dep.state.finished and dep.state is not TaskState.MEMORY:
                self._inherit_failure(task, dep)
                return
            if dep.state is not TaskState.MEMORY:
                task.waiting_on.add(dep_key)
        if not task.waiting_on:
            self._make_ready(task)

    def _want(self, client: Client | None, task: Task) -> None:
        if client is None:
            if not task.state.finished:
                task.wanted_by.add(DETACHED)
            return
        task.wanted_by.add(client.id)
        client.wants.add(task.key)
        if task.state.finished:
            self._notify(client.id, task, inline_limit=self.config.inline_result_bytes)

    def _on_want(self, client: Client, msg: Message) -> None:
        task = self.tasks.get(msg["key"])
        if task is None:
            self._send(client.id, "erred", key=msg["key"], kind="lost", text="key is not known")
        else:
            self._want(client, task)

    def _on_release(self, client: Client, msg: Message) -> None:
        for key in msg["keys"]:
            client.wants.discard(key)
            task = self.tasks.get(key)
            if task is not None:
                task.wanted_by.discard(client.id)
                self._maybe_forget(task)

    def _on_fire_and_forget(self, client: Client, msg: Message) -> None:
        task = self.tasks.get(msg["key"])
        if task is not None and not task.state.finished:
            self._want(None, task)
            task.durable = True
            self._journal_task(task)

    def _on_fetch(self, client: Client, msg: Message) -> None:
        task = self.tasks.get(msg["key"])
        if task is None:
            self._send(client.id, "erred", key=msg["key"], kind="lost", text="key is not known")
        elif task.state.finished:
            self._notify(client.id, task, inline_limit=None)

    def _on_cancel(self, client: Client, msg: Message) -> None:
        task = self.tasks.get(msg["key"])
        if task is not None and not task.state.finished:
            self._cancel(task)

    def _on_revoke(self, client: Client, msg: Message) -> None:
        """Cancel cluster-wide; an id not seen yet stays revoked for ``revoke_ttl``."""
        key = msg["key"]
        task = self.tasks.get(key)
        if task is None:
            self._remember_revoked(key)
        elif not task.state.finished:
            terminate = msg.get("terminate", False) and task.state is TaskState.PROCESSING
            self._cancel(task, terminate=terminate)

    def _remember_revoked(self, key: str) -> None:
        if len(self.revoked) >= self.config.max_revoked:
            oldest = next(iter(self.revoked))
            del self.revoked[oldest]
            self._journal("revoked", oldest, None)
        self.revoked.pop(key, None)  # re-insert at the end: the dict stays in expiry order
        until = self._now + self.config.revoke_ttl
        self.revoked[key] = until
        self._journal("revoked", key, until)

    def _expire_revocations(self, now: float) -> None:
        """Drop revocations past their TTL: the oldest come first, so this stops early."""
        while self.revoked:
            key, until = next(iter(self.revoked.items()))
            if until > now:
                return
            del self.revoked[key]
            self._journal("revoked", key, None)

    def _on_forget(self, client: Client, msg: Message) -> None:
        task = self.tasks.get(msg["key"])
        if task is not None and task.state.finished:
            task.keep_until = 0.0
            self._maybe_forget(task)

    def _on_status(self, client: Client, msg: Message) -> None:
        states = {key: public_status(self.tasks.get(key)) for key in msg["keys"]}
        self._send(client.id, "status-reply", rid=msg["rid"], states=states)

    def _on_periodic_set(self, client: Client, msg: Message) -> None:
        try:
            self.periodic.set(msg, self._now)
        except (ValueError, ProtocolError) as exc:
            self._reject(client.id, msg, str(exc))
            return
        if msg.get("ack", False):
            self._send(client.id, "accepted", key=msg["name"])

    def _on_periodic(self, client: Client, msg: Message) -> None:
        try:
            jobs = self.periodic.act(msg["action"], msg.get("name"), self._now)
        except LookupError as exc:
            self._send(client.id, "periodic-reply", rid=msg["rid"], error=str(exc.args[0]))
            return
        self._send(client.id, "periodic-reply", rid=msg["rid"], jobs=jobs)

    def _enqueue_periodic_run(self, submit: Message) -> bool:
        """Enqueue one run of a periodic job; False if that tick is already enqueued."""
        if submit.fields["key"] in self.tasks:
            return False
        task = self._new_task(submit)
        task.durable = True
        self._want(None, task)
        self._journal_task(task)
        self._link_dependencies(task)
        return True

    def _on_info(self, client: Client, msg: Message) -> None:
        self._send(client.id, "info-reply", rid=msg["rid"], info=self.info())

    def _on_goodbye(self, client: Client, msg: Message) -> None:
        self._remove_client(client)

    def _on_client_heartbeat(self, client: Client, msg: Message) -> None:
        pass  # last_seen was updated by the dispatcher

    def _on_worker_died(self, client: Client, msg: Message) -> None:
        """A supervisor saw its worker process die: no need to wait for heartbeats.

        With a ``key``, the supervisor killed it for that task (hard time
        limit, or revoke with terminate): the other tasks there are innocent.
        """
        try:
            worker = self.workers.get(bytes.fromhex(msg["worker"]))
        except ValueError:
            self._reject(client.id, msg, "worker must be a hex routing id")
            return
        if worker is None:
            return
        log.warning("worker %s (pid %d) died: %s", worker.name, worker.pid, msg["reason"])
        culprit = self._assigned_task(worker, msg["key"]) if "key" in msg.fields else None
        if culprit is not None:
            self._unassign(culprit)
            text = f"task {culprit.key!r} ({culprit.name}) exceeded its time limit"
            if not self._retry(culprit, None):
                self._fail(culprit, "time-limit", f"{text} of {culprit.time_limit} s")
        self._remove_worker(worker, lost="key" not in msg.fields)

    def _on_workers_alive(self, client: Client, msg: Message) -> None:
        """A supervisor vouches that these processes are alive.

        A task stuck in C code holding the GIL silences its worker's own
        heartbeats; the process is still working, not lost.
        """
        for hex_id in msg["workers"]:
            try:
                worker = self.workers.get(bytes.fromhex(hex_id))
            except ValueError:
                continue
            if worker is not None:
                worker.last_seen = max(worker.last_seen, self._now)

    def _remove_client(self, client: Client) -> None:
        del self.clients[client.id]
        for key in client.wants:
            task = self.tasks.get(key)
            if task is not None:
                task.wanted_by.discard(client.id)
                self._maybe_forget(task)

    # -- workers ---------------------------------------------------------------

    def _worker_hello(self, sender: bytes, msg: Message, now: float) -> None:
        if msg["version"] != VERSION:
            self._send(sender, "error", text=_version_error(msg["version"]), about="hello-worker")
            return
        known = self.workers.get(sender)
        if known is not None:
            # A repeated hello (the worker thought we forgot it): it still runs
            # what it has, so keep its assignments; just welcome it again.
            known.last_seen = now
            self._welcome_worker(known)
            return
        worker = Worker(
            id=sender,
            name=msg["name"],
            slots=max(1, msg["slots"]),
            queues=tuple(msg["queues"]) or ("default",),
            pid=msg["pid"],
            last_seen=now,
            memory=msg.get("memory", 0),
        )
        self.workers[sender] = worker
        log.info("worker %s joined (pid %d, %d slots)", worker.name, worker.pid, worker.slots)
        self._welcome_worker(worker)
        self._dirty = True

    def _welcome_worker(self, worker: Worker) -> None:
        self._send(
            worker.id,
            "welcome",
            version=VERSION,
            heartbeat_interval=self.config.heartbeat_interval,
            worker_timeout=self.config.worker_timeout,
        )

    def _on_heartbeat(self, worker: Worker, msg: Message) -> None:
        worker.memory = msg.get("memory", worker.memory)
        worker.running = msg.get("running", worker.running)
        self._send(worker.id, "heartbeat-ack")

    def _on_started(self, worker: Worker, msg: Message) -> None:
        task = self._assigned_task(worker, msg["key"])
        if task is not None:
            task.started = True

    def _on_task_done(self, worker: Worker, msg: Message) -> None:
        task = self._assigned_task(worker, msg["key"])
        if task is None:
            return
        self._unassign(task)
        self._learn_duration(task.name, msg.get("duration"))
        self._transition(task, TaskState.MEMORY)
        task.result = _NONE if task.ignore_result else msg.payloads[0]
        task.function = task.args = ()  # no longer needed; free the memory now
        self.counters["done"] += 1
        for client_id in task.wanted_by:
            if client_id != DETACHED:
                self._notify(client_id, task, inline_limit=self.config.inline_result_bytes)
        for dependent_key in list(task.dependents):
            dependent = self.tasks.get(dependent_key)
            if dependent is not None and dependent.state is TaskState.WAITING:
                dependent.waiting_on.discard(task.key)
                if not dependent.waiting_on:
                    self._make_ready(dependent)
        self._finished(task)

    def _on_task_failed(self, worker: Worker, msg: Message) -> None:
        task = self._assigned_task(worker, msg["key"])
        if task is None:
            return
        self._unassign(task)
        kind = msg["kind"]
        retryable = kind == "retry" or (kind == "remote" and task.retry_on_error)
        if retryable and self._retry(task, msg.get("countdown")):
            return
        self._fail(task, "remote" if kind == "retry" else kind, msg["text"], msg.payloads[0])

    def _retry(self, task: Task, countdown: float | None) -> bool:
        """Schedule another attempt if retries are left; False if they are not."""
        if task.retries_left <= 0:
            return False
        task.retries_left -= 1
        task.attempts += 1
        if countdown is None and task.retry_backoff:
            countdown = backoff_delay(
                task.attempts, cap=task.backoff_max, jitter=task.retry_jitter, rng=self._rng
            )
        log.info("task %s retries (attempt %d) in %.3g s", task.key, task.attempts, countdown or 0)
        task.started = False
        task.not_before = self._now + (countdown or 0.0)
        self._make_ready(task)
        self._journal_task(task)
        return True

    def _on_worker_leaving(self, worker: Worker, msg: Message) -> None:
        """The worker hands back what it has not started and finishes the rest."""
        log.info("worker %s is closing; %d tasks handed back", worker.name, len(msg["keys"]))
        worker.closing = True
        for key in msg["keys"]:
            task = self._assigned_task(worker, key)
            if task is not None and not task.started:
                self._unassign(task)
                self._make_ready(task)

    def _on_worker_goodbye(self, worker: Worker, msg: Message) -> None:
        log.info("worker %s left", worker.name)
        self._remove_worker(worker, lost=False)

    def _learn_duration(self, name: str, duration: float | None) -> None:
        if duration is None or duration < 0:
            return
        old = self._durations.get(name)
        self._durations[name] = duration if old is None else 0.8 * old + 0.2 * duration

    def _assigned_task(self, worker: Worker, key: str) -> Task | None:
        task = self.tasks.get(key)
        if task is None or task.worker != worker.id or task.state is not TaskState.PROCESSING:
            return None  # cancelled, released or reassigned meanwhile: stale news
        return task

    def _remove_worker(self, worker: Worker, *, lost: bool) -> None:
        del self.workers[worker.id]
        suspects = self._running_on(worker) if lost else set()
        for key in list(worker.assigned):
            task = self.tasks.get(key)
            if task is None or task.state is not TaskState.PROCESSING:
                continue  # failed, cancelled or forgotten earlier in this loop
            task.worker = None
            task.estimate = 0.0
            if key in suspects:
                task.kills += 1
                if task.kills >= self.config.allowed_failures:
                    text = (
                        f"task {task.key!r} was running on {task.kills} workers that died "
                        f"(last: {worker.name}, pid {worker.pid}); giving up"
                    )
                    self._fail(task, "killed-worker", text)
                    continue
            task.started = False
            self._make_ready(task)
        worker.assigned.clear()
        self._dirty = True

    def _running_on(self, worker: Worker) -> set[str]:
        """Tasks that were (probably) executing when the worker died.

        Those reported started, topped up with the oldest assigned ones: a
        worker runs tasks in the order it got them, and a task that kills its
        process at once may die before its "started" notice leaves.
        """
        running = {k for k in worker.assigned if k in self.tasks and self.tasks[k].started}
        for key in worker.assigned:
            if len(running) >= worker.slots:
                break
            running.add(key)
        return running

    # -- timers -------------------------------------------------------------------

    def _fire(self, kind: str, key: str, now: float) -> None:
        if kind == "periodic":
            self.periodic.fire(key, now)
            return
        task = self.tasks.get(key)
        if task is None:
            return
        if kind == "ready" and task.state is TaskState.SCHEDULED and task.not_before <= now:
            self._make_ready(task)
        elif kind == "expire" and self._expired(task, now):
            self._expire(task)
        elif kind == "forget" and task.state.finished:
            self._maybe_forget(task)

    @staticmethod
    def _expired(task: Task, now: float) -> bool:
        waiting = task.state in (TaskState.WAITING, TaskState.SCHEDULED, TaskState.QUEUED)
        return waiting and task.expires is not None and task.expires <= now

    def _expire(self, task: Task) -> None:
        log.info("task %s (%s) expired before it ran", task.key, task.name)
        self._transition(task, TaskState.EXPIRED)
        task.function = task.args = ()
        self._finish_unsuccessfully(task)

    # -- task lifecycle -----------------------------------------------------------

    def _add_task(self, task: Task) -> None:
        self.tasks[task.key] = task
        self._by_state[task.state] += 1

    def _transition(self, task: Task, new: TaskState) -> None:
        check_transition(task.key, task.state, new)
        self._by_state[task.state] -= 1
        self._by_state[new] += 1
        task.state = new

    def _make_ready(self, task: Task) -> None:
        """Queue the task now, or at its ``not_before`` time."""
        if task.expires is not None and task.expires <= self._now:
            self._expire(task)
        elif task.not_before > self._now:
            self._defer(task, task.not_before)
        else:
            self._transition(task, TaskState.QUEUED)
            task.queued_at = self._now
            self._ready.push(task.queue, task.priority, task.seq, task.key)
            self._dirty = True

    def _defer(self, task: Task, until: float) -> None:
        task.not_before = until
        self._transition(task, TaskState.SCHEDULED)
        self._timers.add(until, task.key, "ready")

    def _is_queued(self, key: str) -> bool:
        task = self.tasks.get(key)
        return task is not None and task.state is TaskState.QUEUED

    def _unassign(self, task: Task) -> None:
        worker = self.workers.get(task.worker) if task.worker else None
        if worker is not None:
            worker.assigned.pop(task.key, None)
            worker.queued_work = max(0.0, worker.queued_work - task.estimate)
            self._dirty = True
        task.worker = None

    def _fail(self, task: Task, kind: str, text: str, payload: Payload = ()) -> None:
        self._transition(task, TaskState.ERRED)
        failure = {"key": task.key, "name": task.name, "kind": kind, "text": text}
        self.recent_failures.append({**failure, "time": self._now})
        task.error = (kind, text, payload)
        task.function = task.args = ()
        self.counters["erred"] += 1
        self._finish_unsuccessfully(task)

    def _cancel(self, task: Task, terminate: bool = False) -> None:
        if task.state is TaskState.PROCESSING and task.worker is not None:
            self._send(task.worker, "drop", key=task.key, terminate=terminate)
            self._unassign(task)
        self._transition(task, TaskState.CANCELLED)
        task.function = task.args = ()
        self._finish_unsuccessfully(task)

    def _inherit_failure(self, task: Task, dep: Task) -> None:
        if dep.state is TaskState.ERRED:
            assert dep.error is not None
            self._fail(task, *dep.error)
        else:  # cancelled or expired: this one will not run either
            self._cancel(task)

    def _finish_unsuccessfully(self, task: Task) -> None:
        for client_id in task.wanted_by:
            if client_id != DETACHED:
                self._notify(client_id, task, inline_limit=None)
        for dependent_key in list(task.dependents):
            dependent = self.tasks.get(dependent_key)
            if dependent is not None and not dependent.state.finished:
                self._inherit_failure(dependent, task)
        self._finished(task)

    def _finished(self, task: Task) -> None:
        task.wanted_by.discard(DETACHED)
        self.periodic.run_finished(task)
        if task.result_ttl is not None and not task.ignore_result:
            task.keep_until = self._now + task.result_ttl
            self._timers.add(task.keep_until, task.key, "forget")
        self._journal_task(task)
        self._release_dependencies(task)
        self._maybe_forget(task)

    def _release_dependencies(self, task: Task) -> None:
        """A finished task no longer needs its dependencies' results."""
        for dep_key in task.deps:
            dep = self.tasks.get(dep_key)
            if dep is not None:
                dep.dependents.discard(task.key)
                self._maybe_forget(dep)

    def _maybe_forget(self, task: Task) -> None:
        if task.wanted_by or task.dependents or self.tasks.get(task.key) is not task:
            return
        if not task.state.finished:
            self._cancel(task)  # nobody wants it any more: do not waste a worker on it
            return
        if task.keep_until > self._now:
            return  # kept for readers by id until its TTL runs out
        del self.tasks[task.key]
        self._by_state[task.state] -= 1
        if task.durable:
            self._journal("task", task.key, None)
        self._release_dependencies(task)

    def _notify(self, to: bytes, task: Task, inline_limit: int | None) -> None:
        if task.state is TaskState.MEMORY:
            assert task.result is not None
            size = sum(nbytes(f) for f in task.result)
            if inline_limit is None or size <= inline_limit:
                self._send(to, "result", [task.result], key=task.key, inline=True)
            else:
                self._send(to, "result", key=task.key, inline=False)
        elif task.state is TaskState.ERRED:
            assert task.error is not None
            kind, text, payload = task.error
            payloads = [payload] if payload else []
            self._send(to, "erred", payloads, key=task.key, kind=kind, text=text)
        else:
            self._send(to, "cancelled", key=task.key, reason=task.state.value)

    # -- assignment ----------------------------------------------------------------

    def _assign(self) -> None:
        """Give each ready task to the least-loaded worker with room that serves its queue.

        Least-loaded first, so a task never waits in one worker's prefetch
        while another worker's slot is idle.
        """
        self._dirty = False
        candidates = [
            (len(w.assigned) / w.slots, i, w)
            for i, w in enumerate(self.workers.values())
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

    def _has_room(self, worker: Worker) -> bool:
        if worker.closing:
            return False
        held = len(worker.assigned)
        if held < worker.slots + self.config.prefetch:
            return True
        return (
            held < worker.slots + self.config.max_prefetch
            and worker.queued_work < self.config.prefetch_seconds * worker.slots
        )

    def _next_for(self, worker: Worker) -> Task | None:
        """The next queued task for this worker, past expiry and rate-limit checks."""
        while (key := self._ready.pop(worker.queues)) is not None:
            task = self.tasks[key]
            if task.expires is not None and task.expires <= self._now:
                self._expire(task)
                continue
            if task.rate_limit is not None:
                wait = self._rates.wait_time(task.name, task.rate_limit, self._now)
                if wait > 0:
                    # Deferred explicitly: on a wall clock, a wait shorter than the
                    # float spacing of ``now`` would leave ``now + wait == now``.
                    self._defer(task, self._now + wait)
                    continue
            return task
        return None

    def _give(self, worker: Worker, task: Task) -> None:
        self._transition(task, TaskState.PROCESSING)
        task.worker = worker.id
        task.estimate = self._durations.get(task.name, self.config.unknown_duration)
        worker.assigned[task.key] = None
        worker.queued_work += task.estimate
        payloads = [task.function, task.args]
        for dep_key in task.deps:
            dep = self.tasks[dep_key]
            assert dep.result is not None
            payloads.append(dep.result)
        limits = {
            name: value
            for name in ("time_limit", "soft_time_limit")
            if (value := getattr(task, name)) is not None
        }
        self._send(
            worker.id,
            "run",
            payloads,
            key=task.key,
            name=task.name,
            deps=list(task.deps),
            attempt=task.attempts,
            **limits,
        )

    # -- journal --------------------------------------------------------------------

    def _journal(self, table: str, key: str, record: Any) -> None:
        if self.config.journal:
            self.journal_ops.append((table, key, record))

    def _journal_task(self, task: Task) -> None:
        if task.durable and self.config.journal:
            self.journal_ops.append(("task", task.key, task_record(task)))

    def _journal_job(self, name: str, job: PeriodicJob | None) -> None:
        self._journal("periodic", name, job.to_dict() if job is not None else None)

    def take_journal(self) -> list[tuple[str, str, Any]]:
        ops, self.journal_ops = self.journal_ops, []
        return ops

    def restore(
        self,
        tasks: list[dict[str, Any]],
        revoked: dict[str, float],
        jobs: list[dict[str, Any]],
        now: float,
    ) -> None:
        """Rebuild durable work from the journal after a restart.

        Unfinished tasks run again (at least once); finished ones stay readable
        until their TTL; revocations and periodic jobs (with their last runs)
        hold as before.  Missed periodic ticks follow each job's misfire policy.
        """
        self._now = now
        for key, until in sorted(revoked.items(), key=lambda item: item[1]):
            if until > now:
                self.revoked[key] = until
        restored = [task_from_record(record, next(self._seq)) for record in tasks]
        for task in restored:
            self._add_task(task)
            if task.state.finished:
                self._timers.add(task.keep_until, task.key, "forget")
        for task in restored:
            if not task.state.finished:
                task.wanted_by.add(DETACHED)
                if task.expires is not None:
                    self._timers.add(task.expires, task.key, "expire")
                self._link_dependencies(task)
        for record in jobs:
            self.periodic.restore(PeriodicJob.from_dict(record))
        log.info(
            "restored %d tasks (%d unfinished), %d revocations, %d periodic jobs",
            len(restored),
            sum(1 for t in restored if not t.state.finished),
            len(self.revoked),
            len(jobs),
        )

    # -- output ----------------------------------------------------------------------

    def _send(
        self, to: bytes, op: str, payloads: list[Payload] | None = None, /, **fields: Any
    ) -> None:
        self._out.append(Send(to, Message(op, fields, payloads or [])))

    def _flush(self) -> list[Send]:
        if self._dirty:
            self._assign()
        out, self._out = self._out, []
        return out


def _valid_rate(limit: str | None) -> bool:
    try:
        return limit is None or parse_rate(limit) is not None
    except ValueError:
        return False


def _version_error(theirs: Any) -> str:
    return f"protocol version {theirs} is not supported; this scheduler speaks version {VERSION}"


_CLIENT_HANDLERS = {
    "submit": SchedulerState._submit,
    "want": SchedulerState._on_want,
    "release": SchedulerState._on_release,
    "fire-and-forget": SchedulerState._on_fire_and_forget,
    "fetch": SchedulerState._on_fetch,
    "cancel": SchedulerState._on_cancel,
    "revoke": SchedulerState._on_revoke,
    "forget": SchedulerState._on_forget,
    "status": SchedulerState._on_status,
    "info": SchedulerState._on_info,
    "periodic-set": SchedulerState._on_periodic_set,
    "periodic": SchedulerState._on_periodic,
    "goodbye": SchedulerState._on_goodbye,
    "heartbeat": SchedulerState._on_client_heartbeat,
    "worker-died": SchedulerState._on_worker_died,
    "workers-alive": SchedulerState._on_workers_alive,
}

_WORKER_HANDLERS = {
    "heartbeat": SchedulerState._on_heartbeat,
    "started": SchedulerState._on_started,
    "task-done": SchedulerState._on_task_done,
    "task-failed": SchedulerState._on_task_failed,
    "worker-leaving": SchedulerState._on_worker_leaving,
    "goodbye": SchedulerState._on_worker_goodbye,
}
