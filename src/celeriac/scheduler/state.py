"""The scheduler's decisions, as a pure state machine.

Events go in (a message from a peer, or the passage of time via ``tick``),
messages to send come out.  There are no sockets and no clock here: the
caller passes ``now`` (wall-clock seconds) with every event, so tests drive
it with a fake clock and assert on the list of :class:`Send` it returns.

Payloads (functions, arguments, results) are opaque frames: stored and
forwarded, never unpickled.

:class:`SchedulerState` holds the entry points and the peers: who is
connected, what each message asks for, and what becomes of a worker's tasks
when it goes.  The rest is composed in, each part given what it needs:

* ``lifecycle.TaskLifecycle``: the tasks and every move they make;
* ``assignment.Assigner``: which worker gets each ready task;
* ``revocations.Revocations``: ids revoked before they were submitted;
* ``outbox``: the messages and journal operations waiting for the server;
* ``recovery`` and ``inspection``: the journal read back, the summary given out.

When the server cannot write the journal it says so (:meth:`SchedulerState.journal_failed`):
durable submissions are then refused with a ``refused`` reply naming their
keys, until it says writes succeed again (:meth:`SchedulerState.journal_restored`);
everything else goes on as before.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable
from typing import Any

from celeriac.scheduler import inspection, recovery
from celeriac.scheduler.assignment import Assigner
from celeriac.scheduler.lifecycle import TaskLifecycle
from celeriac.scheduler.outbox import JournalOp, JournalOps, Outbox
from celeriac.scheduler.periodic import PeriodicJobs
from celeriac.scheduler.records import (
    DETACHED,
    ClientRecord,
    SchedulerConfig,
    Send,
    TaskRecord,
    WorkerRecord,
    public_status,
)
from celeriac.scheduler.revocations import Revocations
from celeriac.states import TaskState
from celeriac.wire.protocol import VERSION, Message, ProtocolError, parse_rate

__all__ = ["DETACHED", "SchedulerConfig", "SchedulerState", "Send"]

log = logging.getLogger("celeriac.scheduler")


class SchedulerState:
    """Everything the scheduler knows and decides, with no sockets and no clock.

    ``config`` (:class:`SchedulerConfig`): timeouts, prefetch, limits, and
    whether to emit journal operations; the defaults are the CLI's defaults.

    Drive it with :meth:`handle` (a batch of messages from one peer, with the
    time it arrived) and :meth:`tick` (the time now); both return the
    :class:`Send` commands to carry out, in order.  Durable changes pile up in
    :attr:`journal_ops` for the server to commit before it sends.  After a
    restart, :meth:`restore` rebuilds durable work from the journal.  While
    the server reports the journal unwritable (:meth:`journal_failed`),
    durable submissions are refused.
    """

    def __init__(self, config: SchedulerConfig | None = None) -> None:
        self.config = config or SchedulerConfig()
        self.workers: dict[bytes, WorkerRecord] = {}
        self.clients: dict[bytes, ClientRecord] = {}
        #: Facts about the process around us (pid, address), set by the server.
        self.about: dict[str, Any] = {}
        #: What the server adds to every welcome (how large frames may travel).
        self.welcome_fields: dict[str, Any] = {}
        self._outbox = Outbox()
        self._journal = JournalOps(self.config.journal)
        self._revocations = Revocations(
            self.config.revoke_ttl, self.config.max_revoked, self._journal
        )
        self._lifecycle = TaskLifecycle(self.config, self.workers, self._outbox, self._journal)
        self._assigner = Assigner(self.config, self.workers, self._lifecycle, self._outbox)
        #: The lifecycle's tasks by key (the same dict, read on every message).
        self.tasks: dict[str, TaskRecord] = self._lifecycle.tasks
        #: Kept results asked of their workers for clients that cannot reach them:
        #: key -> the clients waiting for its bytes.
        self._uploads: dict[str, dict[bytes, None]] = {}
        #: Why durable work is refused (the journal cannot be written), or None.
        self._journal_down: str | None = None
        #: Tasks created and periodic jobs set, with an "accepted" promised, since
        #: the journal operations were last taken; then, those of the last batch taken.
        self._new: tuple[list[str], list[str]] = ([], [])
        self._last_new: tuple[list[str], list[str]] = ([], [])

    # -- what the server, the dashboard and tests read ---------------------------------

    def shm_namespace(self, peer: bytes) -> str | None:
        """The ``/dev/shm`` namespace a connected peer named in its hello."""
        known = self.workers.get(peer) or self.clients.get(peer)
        return known.shm if known is not None else None

    def knows(self, peer: bytes) -> bool:
        """Whether ``peer`` (a ZeroMQ routing id) is a registered worker or client."""
        return peer in self.workers or peer in self.clients

    @property
    def periodic(self) -> PeriodicJobs:
        """The periodic jobs (the lifecycle owns them: their runs are tasks)."""
        return self._lifecycle.periodic

    @property
    def counters(self) -> dict[str, int]:
        """Totals since start (submitted, finished, failed, ...), for monitoring."""
        return self._lifecycle.counters

    @property
    def recent_failures(self) -> deque[dict[str, Any]]:
        """The last failures, with their tracebacks, for inspection and the dashboard."""
        return self._lifecycle.recent_failures

    @property
    def revoked(self) -> dict[str, float]:
        """Ids revoked before we knew them -> until when."""
        return self._revocations.until

    @property
    def journal_ops(self) -> list[JournalOp]:
        """(table, key, record or None to delete), written by the server before it sends."""
        return self._journal.pending

    # -- entry points ------------------------------------------------------------------

    def handle(self, sender: bytes, messages: Iterable[Message], now: float) -> list[Send]:
        """Apply a batch of messages from one peer; return what to send.

        ``sender`` is the peer's routing id, ``messages`` are already validated
        against the wire schema, ``now`` is wall-clock seconds.  A peer that has
        not said hello is told to ``reregister``.
        """
        self._lifecycle.now = now
        # The dispatch, inline: this loop runs for every message of every batch.
        for msg in messages:
            op = msg.op
            if op == "hello-client":
                self._client_hello(sender, msg, now)
            elif op == "hello-worker":
                self._worker_hello(sender, msg, now)
            elif (worker := self.workers.get(sender)) is not None:
                worker.last_seen = now
                if (on_worker := _WORKER_HANDLERS.get(op)) is None:
                    self._reject(sender, msg, "not a worker message")
                else:
                    on_worker(self, worker, msg)
            elif (client := self.clients.get(sender)) is not None:
                client.last_seen = now
                if (on_client := _CLIENT_HANDLERS.get(op)) is None:
                    self._reject(sender, msg, "not a client message")
                else:
                    on_client(self, client, msg)
            else:
                # A peer we do not know: we restarted, or it was declared lost.
                self._outbox.send(sender, "reregister")
        return self._flush()

    def tick(self, now: float) -> list[Send]:
        """Time has passed: fire due timers, find silent workers and clients."""
        self._lifecycle.now = now
        self._lifecycle.fire_timers(now)
        self._revocations.expire(now)
        limit = now - self.config.worker_timeout
        for worker in [w for w in self.workers.values() if w.last_seen < limit]:
            log.warning("worker %s (pid %d) missed its heartbeats", worker.name, worker.pid)
            self._remove_worker(worker, lost=True)
        limit = now - self.config.client_timeout
        for client in [c for c in self.clients.values() if c.last_seen < limit]:
            log.warning("client %s went silent; releasing what it held", client.id.hex())
            self._remove_client(client)
        self._assigner.steal(now)
        return self._flush()

    def load_periodic(self, messages: Iterable[Message], now: float) -> None:
        """Install periodic jobs from configuration (``periodic-set`` messages)."""
        self._lifecycle.now = now
        for msg in messages:
            self.periodic.set(msg, now)

    def next_deadline(self) -> float | None:
        """When the earliest timer is due: the server need not tick before then."""
        return self._lifecycle.timers.next_deadline()

    def info(self) -> dict[str, Any]:
        """The summary ``celeriac inspect`` and the dashboard show (see ``inspection``)."""
        return inspection.summary(
            self.about, self._lifecycle, self.workers.values(), len(self.clients)
        )

    def restore(
        self,
        tasks: list[dict[str, Any]],
        revoked: dict[str, float],
        jobs: list[dict[str, Any]],
        now: float,
    ) -> None:
        """Rebuild durable work from the journal after a restart (see ``recovery``)."""
        self._lifecycle.now = now
        recovery.restore(self._lifecycle, self._revocations, tasks, revoked, jobs)

    def take_journal(self) -> list[JournalOp]:
        """The journal operations piled up since the last call (the server commits them)."""
        self._last_new, self._new = self._new, ([], [])
        return self._journal.take()

    # -- the journal, as the server finds it ---------------------------------------------

    @property
    def journal_unavailable(self) -> str | None:
        """Why durable work is refused (the journal cannot be written), or None."""
        return self._journal_down

    def journal_failed(self, text: str) -> tuple[list[str], list[Send]]:
        """The commit of the operations last taken (:meth:`take_journal`) failed.

        From now on durable submissions (detached tasks, ``periodic-set``) get a
        ``refused`` reply (reason ``journal``, ``text``) until
        :meth:`journal_restored`.  Returns the keys whose ``accepted`` the
        server must turn into ``refused`` (the tasks and periodic jobs that
        batch created or set on the promise of an acknowledgement) and what to
        send besides: those tasks are cancelled and forgotten, since their
        callers are told they were refused.  (A periodic job set in that batch
        stays set in memory: the previous definition is gone.  The server keeps
        the batch's operations and writes them with the next commit that succeeds.)
        """
        self._journal_down = text
        tasks, jobs = self._last_new
        self._last_new = ([], [])
        dropped = [t for t in map(self.tasks.get, tasks) if t is not None and not t.state.finished]
        for task in dropped:
            if not task.state.finished:  # a dependent is cancelled with its dependency
                self._lifecycle.cancel(task)
        for task in dropped:  # after all are cancelled: a dependency waits for its dependents
            task.keep_until = 0.0
            self._lifecycle.forget_if_unneeded(task)
        return [*tasks, *jobs], self._flush()

    def journal_restored(self) -> None:
        """The journal can be written again: durable submissions are accepted again."""
        self._journal_down = None

    def _transition(self, task: TaskRecord, new: TaskState) -> None:
        # The tests make an illegal move through here; the moves are the lifecycle's.
        self._lifecycle.transition(task, new)

    def _flush(self) -> list[Send]:
        if self._lifecycle.needs_assigning:
            self._lifecycle.needs_assigning = False
            self._assigner.assign()
        return self._outbox.take()

    # -- dispatch ----------------------------------------------------------------------

    def _reject(self, to: bytes, msg: Message, why: str) -> None:
        log.error("rejected %r from %s: %s", msg.op, to.hex(), why)
        self._outbox.send(to, "error", text=f"{msg.op!r}: {why}", about=msg.op)

    def _speaks_our_version(self, sender: bytes, hello: Message) -> bool:
        if hello["version"] == VERSION:
            return True
        self._outbox.send(sender, "error", text=_version_error(hello["version"]), about=hello.op)
        return False

    # -- clients -----------------------------------------------------------------------

    def _client_hello(self, sender: bytes, msg: Message, now: float) -> None:
        if not self._speaks_our_version(sender, msg):
            return
        client = self.clients.setdefault(sender, ClientRecord(sender, now))
        client.last_seen, client.shm = now, msg.get("shm")
        self._outbox.send(
            sender,
            "welcome",
            version=VERSION,
            max_message_bytes=self.config.max_message_bytes,
            **self.welcome_fields,
        )

    def _submit(self, client: ClientRecord, msg: Message) -> None:
        # ``msg.fields`` read directly, here and on the other per-task paths:
        # ``Message.get`` is a Python call, and these run for every task.
        fields = msg.fields
        key = fields["key"]
        detached = fields.get("detached", False)
        if detached and self._journal_down is not None:
            self._outbox.refused(client.id, key, "journal", self._journal_down)
            return
        wanted_by = None if detached else client
        task = self.tasks.get(key)
        ack = fields.get("ack", False)
        if task is not None:  # idempotent: the same key is one task
            self._lifecycle.want(wanted_by, task)
        else:
            rate_limit = fields.get("rate_limit")
            if rate_limit is not None and not _valid_rate(rate_limit):
                self._reject(client.id, msg, f"bad rate limit {rate_limit!r}")
                return
            revoked = key in self._revocations.until
            task = self._lifecycle.submit(msg, wanted_by, durable=detached, revoked=revoked)
            if detached and ack and self._journal.enabled:  # accepted once this batch commits
                self._new[0].append(key)
        if ack:
            self._outbox.accepted(client.id, key)
        if fields.get("held", False):
            self._lifecycle.watch(client.id, task)

    def _on_want(self, client: ClientRecord, msg: Message) -> None:
        task = self.tasks.get(msg["key"])
        if task is None:
            self._say_unknown(client, msg["key"])
        else:
            self._lifecycle.want(client, task)

    def _on_release(self, client: ClientRecord, msg: Message) -> None:
        for key in msg.fields["keys"]:
            client.wants.discard(key)
            task = self.tasks.get(key)
            if task is not None:
                if task.watcher == client.id:
                    task.watcher = None
                task.wanted_by.pop(client.id, None)
                self._lifecycle.forget_if_unneeded(task)

    def _on_fire_and_forget(self, client: ClientRecord, msg: Message) -> None:
        task = self.tasks.get(msg["key"])
        if task is not None and not task.state.finished:
            self._lifecycle.want(None, task)
            task.durable = True
            self._journal.task(task)

    def _on_fetch(self, client: ClientRecord, msg: Message) -> None:
        task = self.tasks.get(msg["key"])
        if task is None:
            self._say_unknown(client, msg["key"])
        elif task.holder is not None and msg.get("via_scheduler", False):
            # The client could not reach the worker keeping it: we carry it, once.
            readers = self._uploads.get(task.key)
            if readers is None:
                readers = self._uploads[task.key] = {}
                self._outbox.send(task.holder, "upload", key=task.key)
            readers[client.id] = None
        elif task.state.finished:
            self._lifecycle.notify(client.id, task, inline_limit=None)

    def _say_unknown(self, client: ClientRecord, key: str) -> None:
        self._say_unknown_to(client.id, key)

    def _say_unknown_to(self, peer: bytes, key: str) -> None:
        self._outbox.send(peer, "erred", key=key, kind="lost", text="key is not known")

    def _on_cancel(self, client: ClientRecord, msg: Message) -> None:
        task = self.tasks.get(msg["key"])
        if task is not None and not task.state.finished:
            self._lifecycle.cancel(task)

    def _on_revoke(self, client: ClientRecord, msg: Message) -> None:
        """Cancel cluster-wide; an id not seen yet stays revoked for ``revoke_ttl``."""
        key = msg["key"]
        task = self.tasks.get(key)
        if task is None:
            self._revocations.remember(key, self._lifecycle.now)
        elif not task.state.finished:
            terminate = msg.get("terminate", False) and task.state is TaskState.PROCESSING
            self._lifecycle.cancel(task, terminate=terminate)

    def _on_forget(self, client: ClientRecord, msg: Message) -> None:
        task = self.tasks.get(msg["key"])
        if task is not None and task.state.finished:
            task.keep_until = 0.0
            self._lifecycle.forget_if_unneeded(task)

    def _on_status(self, client: ClientRecord, msg: Message) -> None:
        states = {key: public_status(self.tasks.get(key)) for key in msg["keys"]}
        self._outbox.send(client.id, "status-reply", rid=msg["rid"], states=states)

    def _on_periodic_set(self, client: ClientRecord, msg: Message) -> None:
        if self._journal_down is not None:
            self._outbox.refused(client.id, msg["name"], "journal", self._journal_down)
            return
        try:
            self.periodic.set(msg, self._lifecycle.now)
        except (ValueError, ProtocolError) as exc:
            self._reject(client.id, msg, str(exc))
            return
        if msg.get("ack", False):
            if self._journal.enabled:  # accepted once this batch commits
                self._new[1].append(msg["name"])
            self._outbox.accepted(client.id, msg["name"])

    def _on_periodic(self, client: ClientRecord, msg: Message) -> None:
        try:
            jobs = self.periodic.act(msg["action"], msg.get("name"), self._lifecycle.now)
        except LookupError as exc:
            error = str(exc.args[0])
            self._outbox.send(client.id, "periodic-reply", rid=msg["rid"], error=error)
            return
        self._outbox.send(client.id, "periodic-reply", rid=msg["rid"], jobs=jobs)

    def _on_who_has(self, client: ClientRecord, msg: Message) -> None:
        """Where each key's result is: the data server of the worker keeping it, or
        nowhere (``[]``: the scheduler has it, or it is not finished, or unknown)."""
        where: dict[str, list[str]] = {}
        for key in msg["keys"]:
            task = self.tasks.get(key)
            holder = self.workers.get(task.holder) if task and task.holder else None
            where[key] = [holder.peer] if holder is not None and holder.peer else []
        self._outbox.send(client.id, "who-has-reply", rid=msg["rid"], where=where)

    def _on_scattered(self, client: ClientRecord, msg: Message) -> None:
        """The client put data on a worker: a finished task whose result it keeps."""
        key = msg["key"]
        task = self.tasks.get(key)
        if task is not None:  # the same key again is the same data
            self._lifecycle.want(client, task)
            return
        worker = next((w for w in self.workers.values() if w.peer == msg["at"]), None)
        if worker is None:
            text = f"the worker at {msg['at']} it was scattered to is gone"
            self._outbox.send(client.id, "erred", key=key, kind="lost", text=text)
            return
        self._lifecycle.scattered(key, worker, msg["size"], client)

    def _on_info(self, client: ClientRecord, msg: Message) -> None:
        self._outbox.send(client.id, "info-reply", rid=msg["rid"], info=self.info())

    def _on_goodbye(self, client: ClientRecord, msg: Message) -> None:
        self._remove_client(client)

    def _on_client_heartbeat(self, client: ClientRecord, msg: Message) -> None:
        pass  # last_seen was updated by the dispatcher

    def _remove_client(self, client: ClientRecord) -> None:
        del self.clients[client.id]
        for key in client.wants:
            task = self.tasks.get(key)
            if task is not None:
                task.wanted_by.pop(client.id, None)
                self._lifecycle.forget_if_unneeded(task)

    # -- supervisors (connected as clients) ----------------------------------------------

    def _on_worker_died(self, client: ClientRecord, msg: Message) -> None:
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
            self._retry_or_fail_over_time_limit(culprit)
        self._remove_worker(worker, lost="key" not in msg.fields)

    def _retry_or_fail_over_time_limit(self, task: TaskRecord) -> None:
        self._lifecycle.unassign(task)
        if not self._lifecycle.retry(task, None):
            text = f"task {task.key!r} ({task.name}) exceeded its time limit of {task.time_limit} s"
            self._lifecycle.fail(task, "time-limit", text)

    def _on_workers_alive(self, client: ClientRecord, msg: Message) -> None:
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
                worker.last_seen = max(worker.last_seen, self._lifecycle.now)

    # -- workers -----------------------------------------------------------------------

    def _worker_hello(self, sender: bytes, msg: Message, now: float) -> None:
        if not self._speaks_our_version(sender, msg):
            return
        known = self.workers.get(sender)
        if known is not None:
            # A repeated hello (the worker thought we forgot it): it still runs
            # what it has, so keep its assignments; just welcome it again.
            known.last_seen, known.shm = now, msg.get("shm")
            self._welcome_worker(known)
            return
        worker = self.workers[sender] = _new_worker(sender, msg, now)
        if worker.shm is not None and worker.shm == self.welcome_fields.get("shm"):
            # It shares our /dev/shm: its large results come here as segment names
            # (never bytes through us), which every process on the host can map.
            worker.peer = None
        log.info("worker %s joined (pid %d, %d slots)", worker.name, worker.pid, worker.slots)
        self._welcome_worker(worker)
        self._lifecycle.needs_assigning = True

    def _welcome_worker(self, worker: WorkerRecord) -> None:
        self._outbox.send(
            worker.id,
            "welcome",
            version=VERSION,
            heartbeat_interval=self.config.heartbeat_interval,
            worker_timeout=self.config.worker_timeout,
            max_message_bytes=self.config.max_message_bytes,
            **self.welcome_fields,
        )

    def _on_heartbeat(self, worker: WorkerRecord, msg: Message) -> None:
        fields = msg.fields
        worker.memory = fields.get("memory", worker.memory)
        worker.running = fields.get("running", worker.running)
        worker.managed = fields.get("managed", 0)
        worker.spilled = fields.get("spilled", 0)
        paused = fields.get("paused", False)
        if paused != worker.paused:
            worker.paused = paused
            if not paused:  # resumed: give it work again
                self._lifecycle.needs_assigning = True
        self._outbox.send(worker.id, "heartbeat-ack")

    def _on_started(self, worker: WorkerRecord, msg: Message) -> None:
        task = self._assigned_task(worker, msg["key"])
        if task is not None:
            task.started = True
            task.started_at = self._lifecycle.now

    def _on_task_done(self, worker: WorkerRecord, msg: Message) -> None:
        fields = msg.fields
        task = self._assigned_task(worker, fields["key"])
        if task is None:
            if "kept" in fields:  # stale news: nobody will ask that worker for it
                self._outbox.free(worker.id, fields["key"])
            return
        self._lifecycle.unassign(task)
        self._assigner.learn_duration(task.name, fields.get("duration"))
        if "kept" in fields:
            self._lifecycle.succeed(task, (), kept_by=worker, size=fields["kept"])
        else:
            self._lifecycle.succeed(task, msg.payloads[0])

    def _on_task_failed(self, worker: WorkerRecord, msg: Message) -> None:
        task = self._assigned_task(worker, msg["key"])
        if task is None:
            return
        self._lifecycle.unassign(task)
        if "missing" in msg.fields:
            self._missing_inputs(task, worker, msg["missing"], msg["text"])
            return
        kind = msg["kind"]
        retryable = kind == "retry" or (kind == "remote" and task.retry_on_error)
        if retryable and self._lifecycle.retry(task, msg.get("countdown")):
            return
        kind = "remote" if kind == "retry" else kind
        self._lifecycle.fail(task, kind, msg["text"], msg.payloads[0])

    def _missing_inputs(
        self, task: TaskRecord, worker: WorkerRecord, keys: list[str], text: str
    ) -> None:
        """The worker could not fetch inputs of ``task`` from the workers keeping them.

        Inputs lost meanwhile are being computed again: the task waits for them.
        If every one is still where we think, the worker could not reach it
        (network, or a holder about to be declared lost): it counts as a kill, so
        a holder nobody can reach fails the task rather than loop forever.
        """
        unreachable = [
            k for k in keys if (dep := self.tasks.get(k)) is not None and dep.holder is not None
        ]
        log.warning("worker %s could not fetch inputs of %s: %s", worker.name, task.key, text)
        if len(unreachable) == len(keys):
            task.kills += 1
            if task.kills >= self.config.allowed_failures:
                self._lifecycle.fail(task, "lost-dependency", text)
                return
        self._lifecycle.wait_again(task, keys)

    def _on_uploaded(self, worker: WorkerRecord, msg: Message) -> None:
        """A kept result's bytes, for the clients that could not fetch it themselves."""
        key = msg["key"]
        readers = self._uploads.pop(key, {})
        task = self.tasks.get(key)
        for reader in readers:
            if msg.get("missing", False) or task is None:
                self._say_unknown_to(reader, key)
            elif reader in self.clients:
                self._outbox.send(reader, "result", [msg.payloads[0]], key=key, inline=True)

    def _on_worker_leaving(self, worker: WorkerRecord, msg: Message) -> None:
        """The worker hands back what it has not started and finishes the rest."""
        log.info("worker %s is closing; %d tasks handed back", worker.name, len(msg["keys"]))
        worker.closing = True
        for key in msg["keys"]:
            task = self._assigned_task(worker, key)
            if task is not None and not task.started:
                self._lifecycle.unassign(task)
                self._lifecycle.make_ready(task)

    def _on_handed_back(self, worker: WorkerRecord, msg: Message) -> None:
        """The answer to ``steal``: the tasks it took out of its queue, to run elsewhere."""
        worker.stealing = False
        for key in msg["keys"]:
            task = self._assigned_task(worker, key)
            if task is not None and not task.started:
                self._lifecycle.unassign(task)
                self._lifecycle.make_ready(task)

    def _on_worker_goodbye(self, worker: WorkerRecord, msg: Message) -> None:
        log.info("worker %s left", worker.name)
        self._remove_worker(worker, lost=False)

    def _assigned_task(self, worker: WorkerRecord, key: str) -> TaskRecord | None:
        task = self.tasks.get(key)
        if task is None or task.worker != worker.id or task.state is not TaskState.PROCESSING:
            return None  # cancelled, released or reassigned meanwhile: stale news
        return task

    def _remove_worker(self, worker: WorkerRecord, *, lost: bool) -> None:
        del self.workers[worker.id]
        suspects = self._running_on(worker) if lost else set()
        for key in list(worker.assigned):
            task = self.tasks.get(key)
            if task is None or task.state is not TaskState.PROCESSING:
                continue  # failed, cancelled or forgotten earlier in this loop
            self._take_back(task, worker, suspect=key in suspects)
        worker.assigned.clear()
        if worker.holds:
            uploading = [key for key in worker.holds if key in self._uploads]
            self._lifecycle.results_lost(worker)
            for key in uploading:
                self._upload_lost(key)
        self._lifecycle.needs_assigning = True

    def _upload_lost(self, key: str) -> None:
        """The worker went before it uploaded ``key``: its readers hear of it when it is
        computed again (or that it cannot be)."""
        task = self.tasks.get(key)
        for reader in self._uploads.pop(key):
            client = self.clients.get(reader)
            if client is None:
                continue
            if task is None:
                self._say_unknown(client, key)
            else:
                self._lifecycle.want(client, task)

    def _take_back(self, task: TaskRecord, worker: WorkerRecord, *, suspect: bool) -> None:
        """Queue a gone worker's task again; a suspect of its death counts a kill."""
        task.worker = None
        task.estimate = 0.0
        if suspect:
            task.kills += 1
            if task.kills >= self.config.allowed_failures:
                self._lifecycle.fail(task, "killed-worker", _killed_too_many(task, worker))
                return
        task.started = False
        self._lifecycle.make_ready(task)

    def _running_on(self, worker: WorkerRecord) -> set[str]:
        """Tasks that were (probably) executing when the worker died.

        Those reported started, topped up with the oldest assigned ones: a
        worker runs tasks in the order it got them, and a task that kills its
        process at once may die before its "started" notice leaves.
        """
        tasks = self.tasks
        running = {k for k in worker.assigned if k in tasks and tasks[k].started}
        for key in worker.assigned:
            if len(running) >= worker.slots:
                break
            running.add(key)
        return running


def _new_worker(sender: bytes, hello: Message, now: float) -> WorkerRecord:
    return WorkerRecord(
        id=sender,
        name=hello["name"],
        slots=max(1, hello["slots"]),
        queues=tuple(hello["queues"]) or ("default",),
        pid=hello["pid"],
        last_seen=now,
        memory=hello.get("memory", 0),
        shm=hello.get("shm"),
        peer=hello.get("peer"),
    )


def _killed_too_many(task: TaskRecord, worker: WorkerRecord) -> str:
    return (
        f"task {task.key!r} was running on {task.kills} workers that died "
        f"(last: {worker.name}, pid {worker.pid}); giving up"
    )


def _valid_rate(limit: str) -> bool:
    try:
        return parse_rate(limit) is not None
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
    "who-has": SchedulerState._on_who_has,
    "scattered": SchedulerState._on_scattered,
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
    "handed-back": SchedulerState._on_handed_back,
    "uploaded": SchedulerState._on_uploaded,
    "goodbye": SchedulerState._on_worker_goodbye,
}
