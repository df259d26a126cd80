"""The futures API: ``Client.submit``, ``map``, ``gather`` and friends."""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from celeriac.client.connection import Connection
from celeriac.client.futures import (
    CANCELLED,
    ERROR,
    FINISHED,
    LOST,
    PENDING,
    Future,
    FutureState,
)
from celeriac.errors import SchedulerUnavailable
from celeriac.schedules import Schedule
from celeriac.wire import refs
from celeriac.wire.addresses import normalize
from celeriac.wire.protocol import Message, Payload, nbytes
from celeriac.wire.security import keys_from_env
from celeriac.wire.serialize import FunctionCache, dumps, dumps_plain

log = logging.getLogger("celeriac.client")
P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_TIMEOUT = 10.0


class Client:
    """Connect to a scheduler, or start one on this machine when no address is given.

    ``Client()`` starts an embedded scheduler and ``n_workers`` worker processes
    (default: one per CPU; 0: none, workers may join later) and stops them on
    :meth:`close`.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        n_workers: int | None = None,
        threads_per_worker: int = 1,
        timeout: float = DEFAULT_TIMEOUT,
        keys: str | Path | None = None,
    ) -> None:
        from celeriac.client.cluster import LocalCluster  # only the embedded case needs it

        self._cluster: LocalCluster | None = None
        if address is None:
            address = os.environ.get("CELERIAC_ADDRESS")
        if address is None:
            self._cluster = LocalCluster(
                n_workers=n_workers, threads_per_worker=threads_per_worker, timeout=timeout
            )
            address = self._cluster.address
        self.address = normalize(address)
        self.timeout = timeout
        self.keys = keys_from_env(keys)
        self._functions = FunctionCache()
        self._closed = False
        try:
            self._connect()
        except BaseException:
            if self._cluster is not None:
                self._cluster.close()
            raise

    def _connect(self) -> None:
        # Keys: unique across clients and forked children (a random prefix
        # made per process), cheap per task (a counter).
        self._key_prefix = uuid.uuid4().hex[:16]
        self._key_counter = itertools.count()
        self._lock = threading.Lock()
        self._states: dict[str, FutureState] = {}
        self._refcounts: dict[str, int] = {}
        #: Replies by request id; an id is here from the request until its answer
        #: is taken (or the wait for it ends), so a late reply finds no place.
        self._replies: dict[int, Message | None] = {}
        self._ack_waiters: dict[str, list[_AckWaiter]] = {}
        self._unacked: dict[str, Message] = {}  # sent, not yet accepted: resent after a restart
        self._rids = itertools.count()
        self._releases: deque[str] = deque()
        self._conn = Connection(
            self.address, self._on_message, self._pending_releases, keys=self.keys
        )
        self._conn.start(self.timeout)
        self._pid = _process.pid  # last: other threads use the connection once this says so

    def _check_fork(self) -> None:
        """A process forked after the client was made gets its own connection."""
        if _process.pid == self._pid:
            return
        with _FORK_LOCK:  # several threads of the child may arrive at once
            if _process.pid != self._pid:
                log.info("client used in a forked process; opening a fresh connection")
                self._cluster = None  # the parent owns it
                self._connect()

    def _send(self, msg: Message) -> None:
        self._check_fork()
        self._conn.send(msg)

    # -- submitting ----------------------------------------------------------

    def submit(
        self,
        fn: Callable[P, R],
        *args: Any,
        key: str | None = None,
        priority: int = 0,
        retries: int = 0,
        queue: str = "default",
        **kwargs: Any,
    ) -> Future[R]:
        """Run ``fn(*args, **kwargs)`` on a worker; futures in the arguments are dependencies."""
        self._check_fork()
        future, msg = self._prepare(fn, args, kwargs, key, priority, retries, queue)
        self._conn.send(msg)
        return future

    def map(
        self,
        fn: Callable[..., R],
        *iterables: Iterable[Any],
        key: list[str] | None = None,
        priority: int = 0,
        retries: int = 0,
        queue: str = "default",
        **kwargs: Any,
    ) -> list[Future[R]]:
        """``submit`` once per element of the zipped iterables, in one batch."""
        self._check_fork()
        arg_tuples = list(zip(*iterables, strict=False))
        keys = key if key is not None else [None] * len(arg_tuples)
        if len(keys) != len(arg_tuples):
            raise ValueError(f"map got {len(keys)} keys for {len(arg_tuples)} tasks")
        futures, messages = [], []
        for task_key, args in zip(keys, arg_tuples, strict=True):
            future, msg = self._prepare(fn, args, kwargs, task_key, priority, retries, queue)
            futures.append(future)
            messages.append(msg)
        self._conn.send_many(messages)
        return futures

    def _prepare(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        key: str | None,
        priority: int,
        retries: int,
        queue: str,
    ) -> tuple[Future[Any], Message]:
        if not callable(fn):
            raise TypeError(f"submit() needs a callable, not {type(fn).__name__}")
        name = getattr(fn, "__name__", type(fn).__name__)
        key = key or self._new_key(name)
        fields = {"priority": priority, "retries": retries, "queue": queue}
        return self._new_future(key), self._task_message(fn, args, kwargs, key, name, fields)

    def _new_key(self, name: str) -> str:
        # Callers run _check_fork() first: a forked child must not reuse its
        # parent's key sequence.
        return f"{name}-{self._key_prefix}{next(self._key_counter):x}"

    def _task_message(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        key: str,
        name: str,
        fields: dict[str, Any],
    ) -> Message:
        """A ``submit`` message; futures and TaskRefs in the arguments become deps."""
        deps: dict[str, None] = {}
        if refs.is_plain((args, kwargs)):  # the common case: no futures, nothing to walk
            arguments = dumps_plain((args, kwargs))
        else:
            args, kwargs = refs.replace((args, kwargs), lambda obj: self._to_ref(obj, deps))
            arguments = dumps((args, kwargs))
        payloads: list[Payload] = [[self._functions.dumps(fn)], arguments]
        size = sum(nbytes(frame) for payload in payloads for frame in payload)
        if size > self._conn.max_message_bytes:
            raise ValueError(
                f"task {name!r} and its arguments take {size} bytes, over the scheduler's "
                f"message limit of {self._conn.max_message_bytes} (--max-message-size)"
            )
        return Message("submit", {"key": key, "name": name, "deps": list(deps), **fields}, payloads)

    def _submit_detached(
        self, messages: list[Message], timeout: float, *, hold: bool = False
    ) -> list[Future[Any]]:
        """Send submissions nobody needs to hold; return once all are accepted.

        "Accepted" means the scheduler has recorded them: from then on they run
        even if this process exits.  With ``hold``, each task also gets a
        future here, made before sending, and the scheduler pushes its outcome
        as soon as there is one (``AsyncResult.get`` then asks for nothing);
        dropping the future releases only that push, never the task.
        """
        self._check_fork()
        held = []
        if hold:
            for m in messages:
                held.append(self._new_future(m.fields["key"]))
                m.fields["held"] = True
        # a task is acknowledged by its key, a periodic job by its name
        by_key = {m.fields.get("key") or m.fields["name"]: m for m in messages}
        waiter = _AckWaiter(set(by_key))
        with self._lock:
            for key in waiter.pending:
                self._ack_waiters.setdefault(key, []).append(waiter)
            self._unacked.update(by_key)
        self._conn.send_now(messages)
        if not self._conn.wait_until(waiter.done, timeout):
            with self._lock:
                for key in waiter.pending:
                    self._ack_waiters.pop(key, None)
                    self._unacked.pop(key, None)
            raise SchedulerUnavailable(
                f"the scheduler at {self.address} did not accept {len(waiter.pending)} "
                f"task(s) within {timeout:g} s"
            )
        return held

    # -- periodic jobs ------------------------------------------------------------

    def add_periodic_task(
        self,
        schedule: Schedule,
        fn: Callable[..., Any],
        *args: Any,
        name: str | None = None,
        misfire: str = "skip",
        grace: float = 1.0,
        allow_overlap: bool = False,
        queue: str = "default",
        priority: int = 0,
        retries: int = 0,
        **kwargs: Any,
    ) -> str:
        """Run ``fn(*args, **kwargs)`` on ``schedule`` (``every``, ``crontab``, ``at``).

        The scheduler runs it: no beat process.  The same ``name`` again
        updates the job.  Returns the job's name.
        """
        name = name or str(getattr(fn, "__name__", "job"))
        fields = {"priority": priority, "retries": retries, "queue": queue}
        submit = self._task_message(fn, args, kwargs, name, name, fields)
        self._set_periodic(submit, schedule, misfire, grace, allow_overlap)
        return name

    def periodic(self, action: str = "list", name: str | None = None) -> list[dict[str, Any]]:
        """Periodic jobs: ``list``, or ``pause``/``resume``/``remove``/``run-now`` one by name."""
        fields: dict[str, Any] = {"action": action}
        if name is not None:
            fields["name"] = name
        reply = self._request("periodic", fields, None)
        if "error" in reply.fields:
            raise LookupError(reply["error"])
        jobs: list[dict[str, Any]] = reply["jobs"]
        return jobs

    def _set_periodic(
        self, submit: Message, schedule: Schedule, misfire: str, grace: float, overlap: bool
    ) -> None:
        """Turn a submit message into a periodic job; wait until the scheduler has it."""
        reserved = ("key", "name", "deps", "detached", "ack")
        options = {k: v for k, v in submit.fields.items() if k not in reserved}
        fields = {
            "name": submit.fields["key"],
            "schedule": schedule.to_dict(),
            "options": options,
            "misfire": misfire,
            "grace": float(grace),
            "allow_overlap": overlap,
            "ack": True,
        }
        self._submit_detached([Message("periodic-set", fields, submit.payloads)], self.timeout)

    def _to_ref(self, obj: Any, deps: dict[str, None]) -> Any:
        if isinstance(obj, refs.TaskRef):  # placed by the canvas: already a reference
            deps[obj.key] = None
            return refs.KEEP
        if not isinstance(obj, Future):
            return refs.KEEP
        if obj.client is not self:
            raise ValueError(f"{obj!r} belongs to another client")
        deps[obj.key] = None
        return refs.TaskRef(obj.key)

    # -- collecting ------------------------------------------------------------------

    def gather(self, futures: Any, errors: str = "raise", timeout: float | None = None) -> Any:
        """Results of futures (a future, or a list/tuple/dict of them), in the same shape.

        ``errors="skip"`` leaves failed tasks out instead of raising the first error.
        """
        if errors not in ("raise", "skip"):
            raise ValueError(f"errors must be 'raise' or 'skip', not {errors!r}")
        if isinstance(futures, Future):
            return futures.result(timeout)
        if isinstance(futures, dict):
            pairs = ((k, self._collect(f, errors, timeout)) for k, f in futures.items())
            return {k: v for k, v in pairs if v is not _SKIPPED}
        values = [self._collect(f, errors, timeout) for f in futures]
        values = [v for v in values if v is not _SKIPPED]
        return tuple(values) if isinstance(futures, tuple) else values

    @staticmethod
    def _collect(future: Future[Any], errors: str, timeout: float | None) -> Any:
        if errors == "skip" and future.exception(timeout) is not None:
            return _SKIPPED
        return future.result(timeout)

    def cancel(self, futures: Future[Any] | Iterable[Future[Any]]) -> None:
        self._check_fork()
        items = [futures] if isinstance(futures, Future) else list(futures)
        self._conn.send_many(Message("cancel", {"key": f.key}) for f in items)

    def scheduler_info(self, timeout: float | None = None) -> dict[str, Any]:
        """Counts of tasks by state, workers and queues, as the scheduler sees them."""
        info: dict[str, Any] = self._request("info", {}, timeout)["info"]
        return info

    def status(self, keys: list[str], timeout: float | None = None) -> dict[str, str]:
        """Celery-style status of each key (``PENDING`` ... ``UNKNOWN``)."""
        states: dict[str, str] = self._request("status", {"keys": keys}, timeout)["states"]
        return states

    def _request(self, op: str, fields: dict[str, Any], timeout: float | None) -> Message:
        """Send a message that carries a request id; wait for the reply with that id."""
        self._check_fork()
        rid = next(self._rids)
        with self._lock:
            self._replies[rid] = None
        self._conn.send_now([Message(op, {"rid": rid, **fields})])
        answered = self._conn.wait_until(
            lambda: self._replies[rid] is not None, timeout or self.timeout
        )
        with self._lock:
            reply = self._replies.pop(rid)
        if not answered or reply is None:
            raise SchedulerUnavailable(f"the scheduler did not answer {op!r} in time")
        return reply

    def wait_for_workers(self, n: int = 1, timeout: float | None = None) -> None:
        """Block until at least ``n`` worker processes have registered."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while len(self.scheduler_info()["workers"]) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"fewer than {n} workers registered within the timeout")
            time.sleep(0.02)  # polling the scheduler's own count, with a deadline

    # -- lifetime ----------------------------------------------------------------------

    def close(self) -> None:
        """Disconnect; stop the embedded scheduler and workers if this client started them."""
        if self._closed:
            return
        self._closed = True
        if _process.pid == self._pid:
            self._conn.close()
        if self._cluster is not None:
            self._cluster.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def dashboard_link(self) -> str | None:
        """The embedded scheduler's dashboard page (``None`` for a remote scheduler)."""
        return self._cluster.dashboard_address if self._cluster is not None else None

    def __repr__(self) -> str:
        kind = "embedded" if self._cluster is not None else "remote"
        return f"<Client {kind} scheduler={self.address!r}>"

    # -- bookkeeping for futures (any thread) ------------------------------------------

    def _new_future(self, key: str) -> Future[Any]:
        with self._lock:
            state = self._states.get(key)
            if state is None:
                state = self._states[key] = FutureState(key)
            self._refcounts[key] = self._refcounts.get(key, 0) + 1
        return Future(key, self, state)

    def _drop_future(self, key: str) -> None:
        if self._closed or _process.pid != self._pid:
            return
        with self._lock:
            count = self._refcounts.get(key, 0) - 1
            if count > 0:
                self._refcounts[key] = count
                return
            self._refcounts.pop(key, None)
            self._states.pop(key, None)
        self._releases.append(key)
        self._conn.wake()

    def _pending_releases(self) -> list[Message]:
        """Called by the I/O thread before it sends: all releases in one message."""
        keys = []
        while self._releases:
            keys.append(self._releases.popleft())
        return [Message("release", {"keys": keys})] if keys else []

    def _want(self, key: str) -> Future[Any]:
        """A future for a key someone else submitted (looked up by id)."""
        self._check_fork()
        future = self._new_future(key)
        self._conn.send(Message("want", {"key": key}))
        return future

    def _wait_until(self, ready: Callable[[], bool], timeout: float | None) -> bool:
        """Block until ``ready()``, reading the scheduler's messages on this thread."""
        self._check_fork()
        return self._conn.wait_until(ready, timeout)

    def _fetch(self, key: str) -> None:
        state = self._states.get(key)
        if state is not None:
            state.reset()
        self._conn.send(Message("fetch", {"key": key}))

    def _fire_and_forget(self, key: str) -> None:
        self._conn.send(Message("fire-and-forget", {"key": key}))

    # -- messages from the scheduler (I/O thread) --------------------------------------

    def _on_message(self, msg: Message) -> None:
        if msg.op in _KEYED:
            state = self._states.get(msg["key"])
            if state is not None:
                _KEYED[msg.op](state, msg)
        elif msg.op in ("info-reply", "status-reply", "periodic-reply"):
            with self._lock:
                if msg["rid"] in self._replies:  # else: its caller stopped waiting
                    self._replies[msg["rid"]] = msg
        elif msg.op == "accepted":
            self._on_accepted(msg["keys"])
        elif msg.op == "reregister":
            self._after_scheduler_restart()
        elif msg.op == "error":
            log.error("scheduler error: %s", msg["text"])

    def _on_accepted(self, keys: list[str]) -> None:
        accepted: list[tuple[_AckWaiter, str]] = []
        with self._lock:
            for key in keys:
                accepted.extend((waiter, key) for waiter in self._ack_waiters.pop(key, ()))
                self._unacked.pop(key, None)
        for waiter, key in accepted:
            waiter.accepted(key)

    def _after_scheduler_restart(self) -> None:
        """The scheduler forgot us: resend what it may not have, ask again for the rest.

        Unacknowledged detached submissions are sent again (idempotent by
        key).  Every pending future asks for its key again: a journaled task
        answers when it finishes; anything else fails at once with
        ``FutureLostError`` instead of hanging.
        """
        with self._lock:
            unacked = list(self._unacked.values())
            pending = [key for key, s in self._states.items() if s.status == PENDING]
        log.warning(
            "scheduler restarted: resending %d submissions, re-asking for %d results",
            len(unacked),
            len(pending),
        )
        self._conn.send_many(unacked)
        self._conn.send_many(Message("want", {"key": key}) for key in pending)


_SKIPPED = object()
_FORK_LOCK = threading.Lock()


class _Process:
    """This process's id, kept up to date across forks: ``os.getpid()`` is a
    system call (1.6 µs here), and every submit checks for a fork."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        os.register_at_fork(after_in_child=self._forked)

    def _forked(self) -> None:
        self.pid = os.getpid()


_process = _Process()


def _on_result(state: FutureState, msg: Message) -> None:
    if msg["inline"]:
        state.finish(FINISHED, msg.payloads[0])
    elif state.status == PENDING:
        state.finish(FINISHED)  # too big to push: result() will fetch it


def _on_erred(state: FutureState, msg: Message) -> None:
    payload = msg.payloads[0] if msg.payloads else ()
    status = LOST if msg["kind"].startswith("lost") else ERROR
    state.finish(status, error=(msg["kind"], msg["text"], payload))


def _on_cancelled(state: FutureState, msg: Message) -> None:
    state.finish(CANCELLED, error=("cancelled", msg.get("reason", "cancelled"), ()))


#: Messages about one key, and what they do to its future.
_KEYED = {"result": _on_result, "erred": _on_erred, "cancelled": _on_cancelled}


class _AckWaiter:
    """One caller waiting until the scheduler has accepted a set of keys."""

    def __init__(self, keys: set[str]) -> None:
        self.pending = keys
        self._lock = threading.Lock()

    def accepted(self, key: str) -> None:
        with self._lock:
            self.pending.discard(key)

    def done(self) -> bool:
        return not self.pending
