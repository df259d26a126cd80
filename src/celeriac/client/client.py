"""The futures API (``submit``, ``map``, ``gather``, ...) and the engine behind both front doors.

:class:`Client` implements :class:`~celeriac.client.engine.Engine` for the
Celery-style side and composes, per connection, a
:class:`~celeriac.client.future_table.FutureTable`, an
:class:`~celeriac.client.acks.AckTracker` and a
:class:`~celeriac.client.replies.ReplyRouter`; what is left here is turning
calls into messages and routing the scheduler's messages to those three.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from celeriac.client import dask_default, scatter
from celeriac.client.acks import AckTracker
from celeriac.client.connection import Connection
from celeriac.client.dask_keys import repack
from celeriac.client.engine import RunOptions, Submission
from celeriac.client.forks import process as _process
from celeriac.client.forks import random_ids as _random_ids
from celeriac.client.future_table import OUTCOMES, FutureTable
from celeriac.client.futures import Future
from celeriac.client.replies import REPLY_OPS, ReplyRouter
from celeriac.errors import ArgumentTooLarge, JournalUnavailable, SchedulerUnavailable
from celeriac.schedules import Schedule
from celeriac.wire import refs
from celeriac.wire.addresses import normalize
from celeriac.wire.peers import PeerClient
from celeriac.wire.protocol import MAX_KEYS_PER_MESSAGE, Message, Payload, nbytes
from celeriac.wire.security import keys_from_env
from celeriac.wire.serialize import FunctionCache, dumps, dumps_plain

if TYPE_CHECKING:
    from celeriac.client.dask_graph import GraphPlan
    from celeriac.client.executor import ClientExecutor

log = logging.getLogger("celeriac.client")
P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_TIMEOUT = 10.0


class Client:
    """Connect to a scheduler, or start one on this machine when no address is given.

    ``Client()`` starts an embedded scheduler and ``n_workers`` worker processes
    (default: one per CPU; 0: none, workers may join later) and stops them on
    :meth:`close`.  Besides the futures API it is the engine the Celery-style
    front door sends through (:class:`~celeriac.client.engine.Engine`:
    :meth:`new_key`, :meth:`enqueue`, :meth:`future_for`, :meth:`status`,
    :meth:`revoke`, :meth:`forget`, :meth:`set_periodic`).

    Parameters:
        address: the scheduler's ``tcp://host:port`` or ``ipc://PATH``
            (default: ``$CELERIAC_ADDRESS``; unset: start an embedded cluster).
        n_workers, threads_per_worker: the embedded cluster's worker processes
            and the slots of each.
        timeout: seconds to wait for the scheduler to answer, here and in
            every request that does not name its own.
        keys: a CURVE key directory for a scheduler that uses ``--keys``
            (default: ``$CELERIAC_KEYS``).
        set_as_default: when dask is installed, be Dask's default scheduler
            (``x.compute()`` runs here) until :meth:`close`, like
            ``distributed.Client``; this imports dask (about 0.13 s, once).
    """

    #: Dask's ``get_scheduler`` reads this of anything passed as ``scheduler=``
    #: whose type is named ``...Client`` and has ``get``: this client is blocking.
    asynchronous = False

    def __init__(
        self,
        address: str | None = None,
        *,
        n_workers: int | None = None,
        threads_per_worker: int = 1,
        timeout: float = DEFAULT_TIMEOUT,
        keys: str | Path | None = None,
        set_as_default: bool = True,
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
        self._dask_default = set_as_default and dask_default.become_default(self)

    def _connect(self) -> None:
        # Made anew per connection (and so per forked child): a lock held by
        # another thread of the parent at the fork would never be released here.
        self._conn = Connection(self.address, self._on_message, self._releases, keys=self.keys)
        conn = self._conn
        self._futures = FutureTable(
            wait_until=self._wait_until,
            send=self._send,
            wake=conn.wake,
            peers=PeerClient(keys=self.keys, role="client"),
            fetch_timeout=self.timeout,
        )
        self._acks = AckTracker()
        self._replies = ReplyRouter(send_now=conn.send_now, wait_until=conn.wait_until)
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

    def _wait_until(self, ready: Callable[[], bool], timeout: float | None) -> bool:
        """Block until ``ready()``, reading the scheduler's messages on this thread."""
        self._check_fork()
        return self._conn.wait_until(ready, timeout)

    def _releases(self) -> list[Message]:
        """Called by the I/O thread before it sends: every release due, in one message."""
        return self._futures.releases()

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
        """Run ``fn(*args, **kwargs)`` on a worker; futures in the arguments are dependencies.

        Parameters:
            fn: the function (sent by value, or by name if it pickles so).
            args, kwargs: its arguments; futures anywhere in them (also in
                lists, tuples, sets and dicts) are replaced by their results.
            key: the task's key (default: the function's name and a unique
                suffix); the same key again is the same task.
            priority: lower runs first among ready tasks of one queue.
            retries: how many times a failed or lost run is tried again.
            queue: the queue it waits in; workers consume named queues.

        Returns a :class:`Future`; dropping the last one for a key releases it.
        """
        self._check_fork()
        if kwargs:
            _refuse_dask_options("submit", kwargs)
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
        """``submit`` once per element of the zipped iterables, in one batch.

        Parameters:
            fn: the function.
            iterables: its positional arguments, zipped (stops at the shortest).
            key: one key per task (default: drawn as in :meth:`submit`).
            priority, retries, queue: as in :meth:`submit`, for every task.
            kwargs: keyword arguments, the same for every task.
        """
        self._check_fork()
        if kwargs:
            _refuse_dask_options("map", kwargs)
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

    def new_key(self, name: str) -> str:
        """A fresh task key: ``name``, a dash and 32 hex digits (128 random bits).

        The key is an id whoever knows may fetch the result by, so nothing in
        it follows from other keys (:class:`~celeriac.client.forks.RandomIds`);
        the ``name-`` prefix groups tasks on the dashboard, as Dask's keys do.

        Parameters:
            name: what the key starts with (a task's name).
        """
        if _process.pid != self._pid:  # a forked child gets its own connection
            self._check_fork()
        return f"{name}-{_random_ids.draw()}"

    def _new_key(self, name: str) -> str:
        # new_key without the fork check: callers ran it (the ids themselves
        # are fork-safe: a forked child discards the batch it inherited).
        return f"{name}-{_random_ids.draw()}"

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
            raise ArgumentTooLarge(
                f"task {name!r} and its arguments take {size} bytes, over the scheduler's "
                f"message limit of {self._conn.max_message_bytes} (--max-message-size)"
            )
        return Message("submit", {"key": key, "name": name, "deps": list(deps), **fields}, payloads)

    def enqueue(
        self,
        submissions: Sequence[Submission],
        *,
        timeout: float | None = None,
        hold: bool = False,
    ) -> list[Future[Any]]:
        """Send detached tasks nobody needs to hold; return once all are accepted.

        "Accepted" means the scheduler has recorded them: from then on they run
        even if this process exits, and keep their outcome for ``result_ttl``
        (``AsyncResult`` looks it up by key).  This is what ``.delay()`` and the
        canvas send through (:class:`~celeriac.client.engine.Engine`).

        Parameters:
            submissions: the tasks, sent together; they may depend on each
                other through :class:`~celeriac.wire.refs.TaskRef` arguments.
            timeout: seconds to wait for the acceptance (``None``: the
                client's ``timeout``); past it, ``SchedulerUnavailable``.
                A scheduler that cannot write its journal refuses at once:
                ``JournalUnavailable`` (``disk full at PATH``).
            hold: also make a future per task, before sending, to which the
                scheduler pushes the outcome as soon as there is one
                (``AsyncResult.get`` then asks for nothing); dropping it
                releases only that push, never the task.  Without ``hold``
                the returned list is empty.
        """
        self._check_fork()
        messages = [
            self._task_message(s.fn, s.args, s.kwargs, s.key, s.name, _options(s, detached=True))
            for s in submissions
        ]
        held = []
        if hold:
            for m in messages:
                held.append(self._new_future(m.fields["key"]))
                m.fields["held"] = True
        self._send_acknowledged(messages, self.timeout if timeout is None else timeout)
        return held

    def _send_acknowledged(self, messages: list[Message], timeout: float) -> None:
        """Send messages that ask for an ``accepted``; wait for every one.

        A ``refused`` answer raises at once: ``JournalUnavailable`` when the
        scheduler cannot write its journal (the others of the batch may have
        been accepted: they run).
        """
        acceptance = self._acks.track(messages)
        self._conn.send_now(messages)
        if not self._conn.wait_until(acceptance.done, timeout):
            self._acks.abandon(acceptance)
            raise SchedulerUnavailable(
                f"the scheduler at {self.address} did not accept {len(acceptance.pending)} "
                f"task(s) within {timeout:g} s"
            )
        if acceptance.refusal is not None:
            reason, text = acceptance.refusal
            if reason == "journal":
                raise JournalUnavailable(text)
            raise SchedulerUnavailable(f"the scheduler at {self.address} refused: {text}")

    def future_for(self, key: str) -> Future[Any]:
        """A future for a task submitted elsewhere (another process, or detached), by key.

        The scheduler pushes the outcome once there is one; a key it holds no
        task for fails with ``FutureLostError``.

        Parameters:
            key: the task's key (a Celery-style task id).
        """
        self._check_fork()
        future = self._new_future(key)
        self._conn.send(Message("want", {"key": key}))
        return future

    def revoke(self, key: str, *, terminate: bool = False) -> None:
        """Cancel a task cluster-wide, by key; an id not submitted yet will not run either.

        Parameters:
            key: the task's key.
            terminate: also kill the worker process if the task is running.
        """
        self._send(Message("revoke", {"key": key, "terminate": terminate}))

    def forget(self, key: str) -> None:
        """Drop a detached task's stored outcome now instead of at the end of its TTL.

        Parameters:
            key: the task's key.
        """
        self._send(Message("forget", {"key": key}))

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

        Parameters:
            schedule: when it runs.
            fn, args, kwargs: the task each run submits.
            name: the job's name (default: the function's name).
            misfire, grace, allow_overlap: as in :meth:`set_periodic`.
            queue, priority, retries: as in :meth:`submit`, for each run.
        """
        name = name or str(getattr(fn, "__name__", "job"))
        options = RunOptions(queue=queue, priority=priority, retries=retries)
        submission = Submission(
            fn=fn, args=args, kwargs=kwargs, key=name, name=name, options=options
        )
        self.set_periodic(
            submission, schedule, misfire=misfire, grace=grace, allow_overlap=allow_overlap
        )
        return name

    def periodic(self, action: str = "list", name: str | None = None) -> list[dict[str, Any]]:
        """Periodic jobs: ``list``, or ``pause``/``resume``/``remove``/``run-now`` one by name.

        Parameters:
            action: ``list``, ``pause``, ``resume``, ``remove`` or ``run-now``.
            name: the job an action other than ``list`` applies to.

        Returns the jobs (for ``list``; else the one acted on), as dicts.
        """
        fields: dict[str, Any] = {"action": action}
        if name is not None:
            fields["name"] = name
        reply = self._request("periodic", fields, None)
        if "error" in reply.fields:
            raise LookupError(reply["error"])
        jobs: list[dict[str, Any]] = reply["jobs"]
        return jobs

    def set_periodic(
        self,
        submission: Submission,
        schedule: Schedule,
        *,
        misfire: str = "skip",
        grace: float = 1.0,
        allow_overlap: bool = False,
    ) -> None:
        """Create or update the periodic job named ``submission.key``; wait until it is stored.

        Parameters:
            submission: the task each run submits; its key is the job's name.
            schedule: when it runs (``every``, ``crontab``, ``at``).
            misfire: runs missed while the scheduler was down: ``skip``,
                ``run_once`` or ``catch_up``.
            grace: seconds late a run may start and still count as on time.
            allow_overlap: start a run while the previous one still runs.
        """
        self._check_fork()
        s = submission
        # Only the submission's options travel: a job's runs get keys of their own.
        submit = self._task_message(s.fn, s.args, s.kwargs, s.key, s.name, {})
        fields = {
            "name": s.key,
            "schedule": schedule.to_dict(),
            "options": _options(s, detached=False),
            "misfire": misfire,
            "grace": float(grace),
            "allow_overlap": allow_overlap,
            "ack": True,
        }
        message = Message("periodic-set", fields, submit.payloads)
        self._send_acknowledged([message], self.timeout)

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

    # -- Dask graphs and collections (dask_graph.py, dask_collections.py) -----------

    def get(
        self,
        dsk: Any,
        keys: Any,
        *,
        sync: bool = True,
        priority: int = 0,
        retries: int = 0,
        queue: str = "default",
        **kwargs: Any,
    ) -> Any:
        """Run a Dask graph; the values of ``keys``, nested as ``keys`` is (Dask's ``get``).

        The whole graph goes to the scheduler in one batch; each node runs on a
        worker as a task.  What ``dask.compute(..., scheduler=client)`` calls.

        Parameters:
            dsk: a dict of tasks (legacy tuples or task-spec nodes), a
                ``HighLevelGraph``, or anything with ``__dask_graph__``;
                Celeriac futures may sit in it (their results are used, not recomputed).
            keys: a key, or lists of keys nested to any depth.
            sync: wait and return values; ``False``: return futures, nested the same.
            priority, retries, queue: as in :meth:`submit`, for every task.
            kwargs: none is accepted (``distributed``'s ``workers=``,
                ``resources=``, ... raise ``TypeError``).
        """
        from celeriac.client.dask_graph import plan_graph

        _refuse("get", kwargs)
        table = self._futures
        plan = plan_graph(dsk, keys, held=table.__contains__, look_for_futures=len(table) > 0)
        fields = {"priority": priority, "retries": retries, "queue": queue}
        futures = self._submit_graph(plan, fields)
        if not sync:
            return repack(keys, lambda k: futures[plan.outputs[k]])
        values = {ckey: future.result() for ckey, future in futures.items()}
        return repack(keys, lambda k: values[plan.outputs[k]])

    def _submit_graph(self, plan: GraphPlan, fields: dict[str, Any]) -> dict[str, Future[Any]]:
        """Send a graph's tasks in one batch; a future for each output's Celeriac key.

        Only the outputs stay wanted by this client: every other task is
        released in the same batch, so the scheduler keeps it only while a
        dependent needs it and never pushes its result here.
        """
        from celeriac.client.dask_graph import run_node

        self._check_fork()
        outputs = {ckey: self._new_future(ckey) for ckey in plan.outputs.values()}
        # Releases due go first: a key whose future was dropped a moment ago (the
        # last compute's) and is submitted again here must not be released after.
        messages = self._futures.releases()
        header = 0
        for task in plan.tasks:
            args = (task.node, task.deps)
            messages.append(self._task_message(run_node, args, {}, task.key, task.name, fields))
            deps = sum(len(ref.key) for ref in task.deps.values())
            header += 64 + len(task.key) + len(task.name) + deps
            if header > _GRAPH_HEADER_BUDGET:
                # A message with a key list ends the connection's batch: the
                # batch's header stays under the scheduler's 1 MiB limit however
                # many dependencies the tasks list.  Releasing nothing is a no-op.
                messages.append(Message("release", {"keys": []}))
                header = 0
        released = [task.key for task in plan.tasks if task.key not in outputs]
        step = MAX_KEYS_PER_MESSAGE
        messages.extend(
            Message("release", {"keys": released[i : i + step]})
            for i in range(0, len(released), step)
        )
        self._conn.send_many(messages)
        return outputs

    def compute(
        self,
        collections: Any,
        *,
        sync: bool = False,
        optimize_graph: bool = True,
        traverse: bool = True,
        priority: int = 0,
        retries: int = 0,
        queue: str = "default",
        **kwargs: Any,
    ) -> Any:
        """Start computing Dask collections; a future for each (a list for a list).

        Parameters:
            collections: a collection, or a list/tuple of them; other objects
                pass through unchanged.
            sync: return results instead of futures.
            optimize_graph: let Dask optimise the graph first.
            traverse: look inside lists, sets, tuples and dicts for collections.
            priority, retries, queue: as in :meth:`submit`, for every task.
            kwargs: none is accepted (``TypeError``).
        """
        from celeriac.client.dask_collections import compute

        _refuse("compute", kwargs)
        options = {"priority": priority, "retries": retries, "queue": queue}
        return compute(self, collections, sync, optimize_graph, traverse, options)

    def persist(
        self,
        collections: Any,
        *,
        optimize_graph: bool = True,
        priority: int = 0,
        retries: int = 0,
        queue: str = "default",
        **kwargs: Any,
    ) -> Any:
        """Start computing Dask collections; the same collections, backed by futures.

        Returns at once.  ``dask.persist(..., scheduler=client)`` calls this.

        Parameters:
            collections: a collection, or a list/tuple of them (then a list back).
            optimize_graph: let Dask optimise the graph first.
            priority, retries, queue: as in :meth:`submit`, for every task.
            kwargs: none is accepted (``TypeError``).
        """
        from celeriac.client.dask_collections import persist

        _refuse("persist", kwargs)
        options = {"priority": priority, "retries": retries, "queue": queue}
        return persist(self, collections, optimize_graph, options)

    def get_executor(self, **submit_options: Any) -> ClientExecutor:
        """A ``concurrent.futures.Executor`` whose tasks run here, with these options.

        Parameters:
            submit_options: :meth:`submit`'s options (``priority``, ``retries``,
                ``queue``) for every task it sends.
        """
        from celeriac.client.executor import ClientExecutor

        return ClientExecutor(self, **submit_options)

    # -- collecting ------------------------------------------------------------------

    def gather(self, futures: Any, errors: str = "raise", timeout: float | None = None) -> Any:
        """Results of futures (a future, or a list/tuple/dict of them), in the same shape.

        ``errors="skip"`` leaves failed tasks out instead of raising the first error.

        Parameters:
            futures: a future, or a list, tuple or dict of futures.
            errors: ``raise`` (the first failure's exception) or ``skip``.
            timeout: seconds per future (``None``: no limit).
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

    def scatter(self, data: Any, broadcast: bool = False, hash: bool = True) -> Any:
        """Put data on the workers; futures for it, in its shape (like Dask's).

        A list in, a list out (a tuple, a tuple; a set, a list); a dict in, a
        dict of futures keyed as it was (the keys are the futures' keys); one
        value, one future.  Between hosts each value goes straight to a worker
        (the one keeping the fewest bytes first, round robin), never through the
        scheduler; on one host, through shared memory.  Scattered data exists on
        one worker only: if it dies, what needs it fails (``FutureLostError``).

        Parameters:
            data: a value, or a list, tuple, set or dict of values.
            broadcast: copy to every worker: not supported (refused, ``NotImplementedError``).
            hash: key each value by its content (equal values, one future); else a fresh key.
        """
        if broadcast:
            raise NotImplementedError(
                "scatter(broadcast=True) is not supported: data lives "
                "on one worker, and moves to where it is needed"
            )
        self._check_fork()
        return scatter.scatter(self, data, hash)

    def who_has(self, futures: Any = None, timeout: float | None = None) -> dict[str, list[str]]:
        """Where each future's result is: the data server addresses of the workers
        keeping it (``[]``: the scheduler has it, or it is not finished).

        Parameters:
            futures: a future, or an iterable of them.
            timeout: seconds to wait for the answer (``None``: the client's).
        """
        items = [futures] if isinstance(futures, Future) else list(futures or ())
        where: dict[str, list[str]] = {}
        for start in range(0, len(items), MAX_KEYS_PER_MESSAGE):
            keys = [f.key for f in items[start : start + MAX_KEYS_PER_MESSAGE]]
            where.update(self._request("who-has", {"keys": keys}, timeout)["where"])
        return where

    def cancel(self, futures: Future[Any] | Iterable[Future[Any]]) -> None:
        """Cancel tasks and everything that depends on them.

        Parameters:
            futures: a future, or an iterable of them.
        """
        self._check_fork()
        items = [futures] if isinstance(futures, Future) else list(futures)
        self._conn.send_many(Message("cancel", {"key": f.key}) for f in items)

    def scheduler_info(self, timeout: float | None = None) -> dict[str, Any]:
        """Counts of tasks by state, workers and queues, as the scheduler sees them.

        Parameters:
            timeout: seconds to wait for the answer (``None``: the client's).
        """
        info: dict[str, Any] = self._request("info", {}, timeout)["info"]
        return info

    def status(self, keys: list[str], timeout: float | None = None) -> dict[str, str]:
        """Celery-style status of each key (``PENDING`` ... ``UNKNOWN``).

        Parameters:
            keys: task keys.
            timeout: seconds to wait for the answer (``None``: the client's).
        """
        states: dict[str, str] = {}
        step = MAX_KEYS_PER_MESSAGE  # a request's header must stay under the scheduler's limit
        for start in range(0, max(len(keys), 1), step):
            chunk = keys[start : start + step]
            states.update(self._request("status", {"keys": chunk}, timeout)["states"])
        return states

    def _request(self, op: str, fields: dict[str, Any], timeout: float | None) -> Message:
        """Send a message that carries a request id; wait for the reply with that id."""
        self._check_fork()
        return self._replies.request(op, fields, timeout or self.timeout)

    def wait_for_workers(self, n: int = 1, timeout: float | None = None) -> None:
        """Block until at least ``n`` worker processes have registered.

        Parameters:
            n: how many.
            timeout: seconds (``None``: the client's); past it, ``TimeoutError``.
        """
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
        if self._dask_default:
            dask_default.stop_being_default(self)
        self._futures.close()
        self._futures.close_peers()
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

    # -- messages from the scheduler (I/O thread) --------------------------------------

    def _new_future(self, key: str) -> Future[Any]:
        futures = self._futures
        return Future(key, self, futures.add(key), futures)

    def _on_message(self, msg: Message) -> None:
        if msg.op in OUTCOMES:
            self._futures.settle(msg)
        elif msg.op in REPLY_OPS:
            self._replies.deliver(msg)
        elif msg.op == "accepted":
            self._acks.accepted(msg["keys"])
        elif msg.op == "refused":
            self._acks.refused(msg["keys"], msg["reason"], msg["text"])
        elif msg.op == "reregister":
            self._after_scheduler_restart()
        elif msg.op == "error":
            log.error("scheduler error: %s", msg["text"])

    def _after_scheduler_restart(self) -> None:
        """The scheduler forgot us: resend what it may not have, ask again for the rest.

        Unacknowledged detached submissions are sent again (idempotent by
        key).  Every pending future asks for its key again: a journaled task
        answers when it finishes; anything else fails at once with
        ``FutureLostError`` instead of hanging.
        """
        unacked = self._acks.unacknowledged()
        pending = self._futures.pending()
        log.warning(
            "scheduler restarted: resending %d submissions, re-asking for %d results",
            len(unacked),
            len(pending),
        )
        self._conn.send_many(unacked)
        self._conn.send_many(Message("want", {"key": key}) for key in pending)


_SKIPPED = object()
_FORK_LOCK = threading.Lock()
#: Estimated header bytes of graph tasks per batch (the scheduler takes 1 MiB).
_GRAPH_HEADER_BUDGET = 256 << 10


def _refuse(method: str, kwargs: dict[str, Any]) -> None:
    """A ``TypeError`` at the call for options Celeriac does not have (``workers=``, ...)."""
    if kwargs:
        names = ", ".join(sorted(kwargs))
        raise TypeError(
            f"Client.{method}() got unsupported keyword argument(s): {names} "
            "(Celeriac takes key, priority, retries and queue; see docs/guide.md)"
        )


#: ``distributed.Client.submit``'s own options that Celeriac does not have: taken
#: for the call's options, as Dask takes them, and refused rather than handed to
#: the user's function as keyword arguments (``pure=False`` is what Celeriac does).
_DASK_SUBMIT_OPTIONS = frozenset(
    {"workers", "resources", "allow_other_workers", "fifo_timeout", "actor", "actors", "pure"}
)


def _refuse_dask_options(method: str, kwargs: dict[str, Any]) -> None:
    """A ``TypeError`` at the call for Dask's submit options Celeriac does not honour."""
    if _DASK_SUBMIT_OPTIONS.isdisjoint(kwargs):
        return
    if kwargs.get("pure", False) is False:
        kwargs.pop("pure", None)  # a fresh key per call: what Celeriac always does
    _refuse(method, {k: v for k, v in kwargs.items() if k in _DASK_SUBMIT_OPTIONS})


def _options(submission: Submission, *, detached: bool) -> dict[str, Any]:
    """A submission's per-run fields, as the ``submit`` message names them.

    Optional ones travel only when set, so the scheduler's defaults apply.
    """
    o = submission.options
    fields: dict[str, Any] = {"priority": o.priority, "retries": o.retries, "queue": o.queue}
    if detached:
        fields["detached"] = True
        fields["ack"] = True
    if o.retry_on_error is not None:
        fields["retry_on_error"] = o.retry_on_error
    if o.retry_jitter is not None:
        fields["retry_jitter"] = o.retry_jitter
    if o.backoff_max is not None:
        fields["backoff_max"] = float(o.backoff_max)
    if o.result_ttl is not None:
        fields["result_ttl"] = float(o.result_ttl)
    if o.retry_backoff:
        fields["retry_backoff"] = float(o.retry_backoff)
    _moments(submission, fields)
    if o.rate_limit is not None:
        fields["rate_limit"] = o.rate_limit
    if o.ignore_result:
        fields["ignore_result"] = True
    return fields


def _moments(submission: Submission, fields: dict[str, Any]) -> None:
    """The times and limits, as floats, in the order the fields always had."""
    o = submission.options
    if submission.eta is not None:
        fields["eta"] = float(submission.eta)
    if submission.expires is not None:
        fields["expires"] = float(submission.expires)
    if o.time_limit is not None:
        fields["time_limit"] = float(o.time_limit)
    if o.soft_time_limit is not None:
        fields["soft_time_limit"] = float(o.soft_time_limit)
