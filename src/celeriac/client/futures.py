"""Futures: handles on remote results, and the helpers that wait on many."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, Protocol, TypeVar

from celeriac.errors import (
    FutureLostError,
    KilledWorker,
    TaskExpiredError,
    TaskRevokedError,
    TimeLimitExceeded,
    TimeoutError,
)
from celeriac.states import FutureStatus
from celeriac.wire.protocol import Payload
from celeriac.wire.serialize import RemoteError, loads, loads_exception

if TYPE_CHECKING:
    from celeriac.client.client import Client

log = logging.getLogger("celeriac.client")
R = TypeVar("R")

# Module constants, not enum attribute lookups: read on every submit and result.
PENDING, FINISHED, ERROR = FutureStatus.PENDING, FutureStatus.FINISHED, FutureStatus.ERROR
CANCELLED, LOST = FutureStatus.CANCELLED, FutureStatus.LOST
_DONE_STATUSES = frozenset({FINISHED, ERROR, CANCELLED, LOST})
_NO_VALUE = object()


class FutureState:
    """What the client knows of one key; shared by all Futures for that key."""

    __slots__ = (
        "_settled",
        "_value",
        "callbacks",
        "error",
        "key",
        "lock",
        "payload",
        "status",
    )

    def __init__(self, key: str) -> None:
        self.key = key
        self.status = PENDING
        self.payload: Payload | None = None
        self.error: tuple[str, str, Payload] | None = None
        self.lock = threading.Lock()
        self.callbacks: list[Callable[[], None]] = []
        self._value: Any = _NO_VALUE
        self._settled = False

    def finish(
        self, status: FutureStatus, payload: Payload | None = None, error: Any = None
    ) -> None:
        """Record the outcome (on whichever thread read it) and run callbacks."""
        with self.lock:
            self.status = status
            self.payload = payload
            self.error = error
            self._value = _NO_VALUE
            self._settled = True
            callbacks, self.callbacks = self.callbacks, []
        for callback in callbacks:
            _run_callback(callback)

    def settled(self) -> bool:
        """An outcome is here (waiters poll this while they read the socket)."""
        return self._settled

    def reset(self) -> None:
        """The result is known to exist but must be fetched; wait again."""
        with self.lock:
            self._settled = False

    def has_value(self) -> bool:
        return self._value is not _NO_VALUE

    def value(self) -> Any:
        with self.lock:
            if self._value is _NO_VALUE:
                assert self.payload is not None
                self._value = loads(self.payload)
                self.payload = None  # keep one copy, not two
            return self._value

    def exception(self) -> BaseException:
        kind, text, payload = self.error or ("lost", "no reason given", ())
        if self.status == CANCELLED:
            if text == "expired":
                return TaskExpiredError(f"task {self.key!r} expired before it ran")
            return TaskRevokedError(f"task {self.key!r} was cancelled")
        if kind == "killed-worker":
            return KilledWorker(text)
        if kind == "time-limit":
            return TimeLimitExceeded(text)
        if kind.startswith("lost"):
            return FutureLostError(f"task {self.key!r}: {text}")
        if not payload:
            return RemoteError(kind, text)
        try:
            return loads_exception(payload)
        except Exception as exc:
            return RemoteError(kind, f"{text} (and its exception could not be loaded: {exc})")


def _run_callback(callback: Callable[[], None]) -> None:
    try:
        callback()
    except Exception:
        log.exception("a future's done-callback raised")


class Future(Generic[R]):
    """A remote result.  Dropping the last Future for a key releases it on the cluster."""

    __slots__ = ("__weakref__", "_client", "_state", "key")

    def __init__(self, key: str, client: Client, state: FutureState) -> None:
        self.key = key
        self._client = client
        self._state = state

    @property
    def client(self) -> Client:
        return self._client

    @property
    def status(self) -> FutureStatus:
        """``pending``, ``finished``, ``error``, ``cancelled`` or ``lost``, as in Dask."""
        return self._state.status

    def done(self) -> bool:
        return self._state.status in _DONE_STATUSES

    def cancelled(self) -> bool:
        return self._state.status == CANCELLED

    def result(self, timeout: float | None = None) -> R:
        state = self._wait(timeout)
        if state.status != FINISHED:
            raise state.exception()
        value: R = state.value()
        return value

    def exception(self, timeout: float | None = None) -> BaseException | None:
        state = self._wait(timeout)
        return None if state.status == FINISHED else state.exception()

    def traceback(self, timeout: float | None = None) -> Any:
        exc = self.exception(timeout)
        return exc.__traceback__ if exc is not None else None

    def cancel(self) -> None:
        self._client.cancel([self])

    def add_done_callback(self, fn: Callable[[Future[R]], Any]) -> None:
        """Call ``fn(future)`` when done (at once if it is), on the thread that reads the result."""
        state = self._state
        with state.lock:
            if state.status == PENDING:
                state.callbacks.append(lambda: fn(self))
                return
        _run_callback(lambda: fn(self))

    def _wait(self, timeout: float | None) -> FutureState:
        state = self._state
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self._client._wait_until(state.settled, remaining):
                raise TimeoutError(f"task {self.key!r} not done after {timeout} s")
            if state.status != FINISHED or state.payload is not None or state.has_value():
                return state
            self._client._fetch(self.key)  # result was too big to push; ask for it

    def __del__(self) -> None:
        try:
            self._client._drop_future(self.key)
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

    def as_future(self) -> Future[R]: ...


class DoneAndNotDone(NamedTuple):
    done: set[Future[Any]]
    not_done: set[Future[Any]]


def wait(
    futures: Iterable[Future[Any]],
    timeout: float | None = None,
    return_when: str = "ALL_COMPLETED",
) -> DoneAndNotDone:
    """Wait for all (or the first) of ``futures``; like ``concurrent.futures.wait``."""
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
            raise TimeoutError(f"{len(futures) - len(done)} futures not done after {timeout} s")
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
    """Yield futures (or ``(future, result)``) in the order they finish."""
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
    client = next(iter(futures)).client
    client._wait_until(lambda: not done_queue.empty(), timeout)
    return done_queue.get_nowait()


def fire_and_forget(futures: Future[Any] | Iterable[Future[Any]]) -> None:
    """Run these tasks to completion even after every Future for them is dropped."""
    items = [futures] if isinstance(futures, Future) else list(futures)
    for future in items:
        future.client._fire_and_forget(future.key)
