"""What the scheduler remembers: configuration and its records of tasks, workers, clients."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from celeriac.states import CeleryState, TaskState, celery_state
from celeriac.wire.protocol import Message, Payload, buffer_of

#: Who "wants" a detached task (fire-and-forget, Celery-style): nobody in
#: particular, but keep it until it finishes.
DETACHED = b""


class Send(NamedTuple):
    """A command out of the state: send ``msg`` to the peer with routing id ``to``."""

    to: bytes
    msg: Message


@dataclass
class SchedulerConfig:
    """What the state machine is told at start: timeouts, prefetch, limits (seconds, bytes)."""

    worker_timeout: float = 5.0
    heartbeat_interval: float = 0.5
    client_timeout: float = 60.0
    #: Tasks a worker may always hold beyond its slots, so a slot never idles
    #: while a round trip is in flight.
    prefetch: int = 2
    #: Beyond that, more short tasks may be queued on a worker while their
    #: estimated run time stays under this many seconds per slot, up to
    #: ``max_prefetch``: deep pipelines for tiny tasks, shallow for long ones.
    prefetch_seconds: float = 0.005
    max_prefetch: int = 256
    #: Duration assumed for a task whose function has not been timed yet.
    unknown_duration: float = 0.5
    #: Bytes per second assumed between workers, to weigh moving a task's inputs
    #: against waiting where they are (Dask's ``distributed.scheduler.bandwidth``).
    bandwidth: float = 100e6
    #: A started task running this long, and twice its expected duration, holds
    #: its slot "overdue": a worker whose every slot is overdue gives its
    #: prefetched tasks back while another worker has an idle slot.
    steal_after: float = 1.0
    #: WorkerRecord deaths a task may cause before it fails with KilledWorker.
    allowed_failures: int = 3
    #: Results up to this size are pushed to clients with the completion notice.
    inline_result_bytes: int = 1 << 20
    #: Largest message the server accepts; told to clients so they refuse early.
    max_message_bytes: int = 1 << 30
    #: How long a revocation of a not-yet-known id is remembered.
    revoke_ttl: float = 86400.0
    max_revoked: int = 100_000
    #: Seed for retry jitter; ``None`` draws from the OS.
    seed: int | None = None
    #: Emit journal operations for durable work (the server writes them).
    journal: bool = False


@dataclass(slots=True, eq=False)
class TaskRecord:
    """The scheduler's record of one task: what to run, where it is, who waits for it."""

    key: str
    name: str
    function: Payload
    args: Payload
    deps: tuple[str, ...]
    priority: int
    seq: int
    queue: str
    retries_left: int
    state: TaskState = TaskState.WAITING
    # Sets as dicts with ``None`` values: a dict of strings is never tracked by
    # the garbage collector, a set always is, and there are three per task.
    waiting_on: dict[str, None] = field(default_factory=dict)
    dependents: dict[str, None] = field(default_factory=dict)
    wanted_by: dict[bytes, None] = field(default_factory=dict)  # client ids
    worker: bytes | None = None
    started: bool = False
    started_at: float = 0.0  # when its worker said it started (a heartbeat late at most)
    kills: int = 0
    attempts: int = 0  # retries so far
    estimate: float = 0.0  # expected run time, counted in its worker's queued work
    queued_at: float = 0.0  # when it last entered its ready queue
    result: Payload | None = None
    error: tuple[str, str, Payload] | None = None  # kind, text, exception payload
    # Options (Celery-style tasks); the defaults are the futures API's behaviour.
    not_before: float = 0.0  # eta, retry back-off or rate-limit deferral
    expires: float | None = None
    retry_on_error: bool = True  # any exception retries (else only an explicit Retry)
    retry_backoff: float = 0.0  # the first delay of exponential back-off, s (0: none)
    backoff_max: float = 600.0
    retry_jitter: bool = True
    result_ttl: float | None = None  # keep the outcome this long after it finished
    keep_until: float = 0.0
    ignore_result: bool = False
    rate_limit: str | None = None
    time_limit: float | None = None
    soft_time_limit: float | None = None
    durable: bool = False  # detached work: journaled, survives a scheduler restart
    watcher: bytes | None = None  # a client holding a detached task's result: told, not kept
    #: The worker that keeps the result (its bytes never came here), and their size.
    holder: bytes | None = None
    nbytes: int = 0


#: Submit fields that set the task option of the same name.
SUBMIT_OPTIONS = (
    "expires",
    "retry_on_error",
    "retry_backoff",
    "backoff_max",
    "retry_jitter",
    "result_ttl",
    "ignore_result",
    "rate_limit",
    "time_limit",
    "soft_time_limit",
)

#: TaskRecord options that a journal record carries, besides the fixed fields.
OPTION_FIELDS = ("not_before", "keep_until", *SUBMIT_OPTIONS)


def journal_entry(task: TaskRecord) -> dict[str, Any]:
    """A durable task as plain data (msgpack-friendly), for the journal."""
    finished = task.state.finished
    return {
        "key": task.key,
        "name": task.name,
        "function": [bytes(buffer_of(f)) for f in task.function],
        "args": [bytes(buffer_of(f)) for f in task.args],
        "deps": list(task.deps),
        "priority": task.priority,
        "queue": task.queue,
        "retries_left": task.retries_left,
        "attempts": task.attempts,
        # A result kept on a worker is not here to write: after a restart the task runs again.
        "state": task.state.value if finished and task.holder is None else "pending",
        "result": [bytes(buffer_of(f)) for f in task.result] if task.result else None,
        "error": [task.error[0], task.error[1], [bytes(buffer_of(f)) for f in task.error[2]]]
        if task.error
        else None,
        "options": {name: getattr(task, name) for name in OPTION_FIELDS},
    }


def task_from_journal(record: dict[str, Any], seq: int) -> TaskRecord:
    """A durable task read back from its journal entry; ``seq`` orders it among the rest."""
    task = TaskRecord(
        key=record["key"],
        name=record["name"],
        function=record["function"],
        args=record["args"],
        deps=tuple(record["deps"]),
        priority=record["priority"],
        seq=seq,
        queue=record["queue"],
        retries_left=record["retries_left"],
        attempts=record["attempts"],
        durable=True,
    )
    for name, value in record["options"].items():
        if name in OPTION_FIELDS:
            setattr(task, name, value)
    if record["state"] != "pending":
        task.state = TaskState(record["state"])  # restored as it was, not transitioned
        task.result = record["result"]
        if record["error"] is not None:
            kind, text, payload = record["error"]
            task.error = (kind, text, payload)
    return task


@dataclass(eq=False)
class WorkerRecord:
    """One connected worker process: its slots and queues, what it was given, how busy."""

    id: bytes
    name: str
    slots: int
    queues: tuple[str, ...]
    pid: int
    last_seen: float
    memory: int = 0
    running: int = 0  # as the worker last said in a heartbeat
    queued_work: float = 0.0  # sum of the estimates of the assigned tasks
    closing: bool = False  # finishing what it runs; gets nothing new
    stealing: bool = False  # asked to hand back prefetched tasks; no answer yet
    #: Keys in the order they were sent; the worker runs them in that order.
    assigned: dict[str, None] = field(default_factory=dict)
    shm: str | None = None  # the /dev/shm namespace its hello named
    #: Where other processes fetch the results it keeps (its hello's ``peer``), if
    #: it keeps any: it does not share our ``/dev/shm`` (another host).
    peer: str | None = None
    #: The keys of the results it keeps; of their bytes, how many in memory and on disk.
    holds: dict[str, None] = field(default_factory=dict)
    managed: int = 0
    spilled: int = 0
    paused: bool = False  # near its memory limit: it gets nothing new


@dataclass(eq=False)
class ClientRecord:
    """One connected client: the keys it holds futures for."""

    id: bytes
    last_seen: float
    wants: set[str] = field(default_factory=set)
    shm: str | None = None  # the /dev/shm namespace its hello named


def public_status(task: TaskRecord | None) -> CeleryState:
    """The Celery-style status of a task; ``UNKNOWN`` when we hold no record of it."""
    if task is None:
        return CeleryState.UNKNOWN
    return celery_state(task.state, started=task.started, retried=task.attempts > 0)
