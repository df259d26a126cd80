"""Futures: handles on remote results, and the helpers that wait on many."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, Protocol, TypeVar

from celeriac.client.future_table import (
    CANCELLED,
    ERROR,
    FINISHED,
    LOST,
    PENDING,
    FutureState,
    FutureTable,
    run_callback,
)
from celeriac.errors import TimeoutError
from celeriac.states import FutureStatus

if TYPE_CHECKING:
    from celeriac.client.client import Client

R = TypeVar("R")

_DONE_STATUSES = frozenset({FINISHED, ERROR, CANCELLED, LOST})


class Future(Generic[R]):
    """A remote result.  Dropping the last Future for a key releases it on the cluster.

    Made by the client (``submit``, ``map``, ``future_for``), never directly.

    Parameters:
        key: the task's key.
        client: the client that made it.
        state: what is known of the key, shared by every Future for it.
        table: the client's future table, which counts this Future and
            carries out what it asks for (waiting, fetching, releasing).
    """

    __slots__ = ("__weakref__", "_client", "_state", "_table", "key")

    #: Dask finds futures in its graphs by this flag and ``key``: they become
    #: dependencies of the graph's tasks, not values to recompute.
    __dask_future__ = True

    def __init__(self, key: str, client: Client, state: FutureState, table: FutureTable) -> None:
        self.key = key
        self._client = client
        self._state = state
        self._table = table

    @property
    def client(self) -> Client:
        """The client that made this future."""
        return self._client

    @property
    def status(self) -> FutureStatus:
        """``pending``, ``finished``, ``error``, ``cancelled`` or ``lost``, as in Dask."""
        return self._state.status

    def done(self) -> bool:
        """The task has an outcome (finished, failed, cancelled or lost)."""
        return self._state.status in _DONE_STATUSES

    def cancelled(self) -> bool:
        """The task was cancelled (or expired, or revoked)."""
        return self._state.status == CANCELLED

    def result(self, timeout: float | None = None) -> R:
        """Wait for the task's result; raise its exception if it failed.

        Parameters:
            timeout: seconds (``None``: no limit); past it, ``TimeoutError``.
        """
        state = self._wait(timeout)
        if state.status != FINISHED:
            raise state.exception()
        value: R = state.value()
        return value

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """Wait for the outcome; the task's exception, or ``None`` if it succeeded.

        Parameters:
            timeout: seconds (``None``: no limit); past it, ``TimeoutError``.
        """
        state = self._wait(timeout)
        return None if state.status == FINISHED else state.exception()

    def traceback(self, timeout: float | None = None) -> Any:
        """Wait for the outcome; the traceback of the task's exception, or ``None``.

        Parameters:
            timeout: seconds (``None``: no limit); past it, ``TimeoutError``.
        """
        exc = self.exception(timeout)
        return exc.__traceback__ if exc is not None else None

    def cancel(self) -> None:
        """Cancel the task (see :meth:`Client.cancel`)."""
        self._client.cancel([self])

    def add_done_callback(self, fn: Callable[[Future[R]], Any]) -> None:
        """Call ``fn(future)`` when done (at once if it is), on the thread that reads the result.

        Parameters:
            fn: called with this future; an exception it raises is logged.
        """
        state = self._state
        with state.lock:
            if state.status == PENDING:
                state.callbacks.append(lambda: fn(self))
                return
        run_callback(lambda: fn(self))

    def has_local_result(self) -> bool:
        """The task finished and its result is here already (not too big to have been pushed)."""
        state = self._state
        return state.status == FINISHED and (state.payload is not None or state.has_value())

    def __dask_tokenize__(self) -> tuple[str, str]:
        """What Dask hashes a future as: its key (never its result, nor a pickle of it)."""
        return ("celeriac.Future", self.key)

    def _wait(self, timeout: float | None) -> FutureState:
        state = self._state
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self._table.wait_until(state.settled, remaining):
                raise TimeoutError(f"task {self.key!r} not done after {timeout} s")
            if state.status != FINISHED or state.payload is not None or state.has_value():
                return state
            self._table.fetch(self.key)  # result was too big to push; ask for it

    def __del__(self) -> None:
        try:
            self._table.drop(self.key)
        except Exception:  # interpreter shutdown: nothing left to release
            pass

    def __reduce__(self) -> Any:
        raise TypeError(
            "a Future can be passed to submit() as an argument (also inside lists, tuples, "
            "sets and dicts), but cannot be pickled inside other objects"
        )

    def __repr__(self) -> str:
        return f"<Future {self.status} key={self.key!r}>"


class SupportsFuture(Protocol[R]):
    """Anything that can hand out a future for its result, e.g. a Celery-style ``AsyncResult``."""

    def as_future(self) -> Future[R]:
        """A future for the same result in this process."""
        ...


class DoneAndNotDone(NamedTuple):
    """What :func:`wait` returns: the futures done, and the rest."""

    done: set[Future[Any]]
    not_done: set[Future[Any]]


def wait(
    futures: Iterable[Future[Any]],
    timeout: float | None = None,
    return_when: str = "ALL_COMPLETED",
) -> DoneAndNotDone:
    """Wait for all (or the first) of ``futures``; like ``concurrent.futures.wait``.

    Parameters:
        futures: futures of one client.
        timeout: seconds (``None``: no limit); past it, what is done by then
            (as ``concurrent.futures.wait`` does: no exception).
        return_when: ``ALL_COMPLETED``, ``FIRST_COMPLETED`` or ``FIRST_EXCEPTION``.
    """
    futures = set(futures)
    if return_when not in ("ALL_COMPLETED", "FIRST_COMPLETED", "FIRST_EXCEPTION"):
        raise ValueError(f"unknown return_when {return_when!r}")
    done_queue: queue.SimpleQueue[Future[Any]] = queue.SimpleQueue()
    for future in futures:
        future.add_done_callback(done_queue.put)
    deadline = None if timeout is None else time.monotonic() + timeout
    done: set[Future[Any]] = set()
    while len(done) < len(futures):
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            break
        try:
            future = _next_done(done_queue, futures, remaining)
        except queue.Empty:
            continue
        done.add(future)
        if return_when == "FIRST_COMPLETED" or (
            return_when == "FIRST_EXCEPTION" and future.status != FINISHED
        ):
            break
    return DoneAndNotDone(done, futures - done)


def as_completed(
    futures: Iterable[Future[Any]], timeout: float | None = None, with_results: bool = False
) -> Iterator[Any]:
    """Yield futures (or ``(future, result)``) in the order they finish.

    Parameters:
        futures: futures of one client (each yielded once).
        timeout: seconds for all of them (``None``: no limit); past it, ``TimeoutError``.
        with_results: yield ``(future, result)`` pairs.
    """
    futures = list(dict.fromkeys(futures))
    done_queue: queue.SimpleQueue[Future[Any]] = queue.SimpleQueue()
    for future in futures:
        future.add_done_callback(done_queue.put)
    deadline = None if timeout is None else time.monotonic() + timeout
    for _ in range(len(futures)):
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            future = _next_done(done_queue, futures, remaining)
        except queue.Empty:
            raise TimeoutError(f"futures not done after {timeout} s") from None
        yield (future, future.result()) if with_results else future


def _next_done(
    done_queue: queue.SimpleQueue[Future[Any]],
    futures: Iterable[Future[Any]],
    timeout: float | None,
) -> Future[Any]:
    """The next future to finish; this thread reads the client's socket meanwhile."""
    table = next(iter(futures))._table
    table.wait_until(lambda: not done_queue.empty(), timeout)
    return done_queue.get_nowait()


def fire_and_forget(futures: Future[Any] | Iterable[Future[Any]]) -> None:
    """Run these tasks to completion even after every Future for them is dropped.

    Parameters:
        futures: a future, or an iterable of them.
    """
    items = [futures] if isinstance(futures, Future) else list(futures)
    for future in items:
        future._table.fire_and_forget(future.key)
