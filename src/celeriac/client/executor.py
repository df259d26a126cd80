"""A ``concurrent.futures.Executor`` over a client: :class:`ClientExecutor`.

Its futures are real ``concurrent.futures.Future`` objects, so
``concurrent.futures.wait`` and ``as_completed`` (which read their private
conditions) work on them; each is settled from the Celeriac future behind it
by a done-callback.  That callback runs on whichever thread read the outcome,
often the client's I/O thread, so it never waits: a result too large to have
been pushed is fetched on a thread of its own.
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import inspect
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from celeriac.client.futures import Future

if TYPE_CHECKING:
    from celeriac.client.client import Client


class ExecutorFuture(cf.Future[Any]):
    """A ``concurrent.futures.Future`` whose ``cancel`` also cancels the task on the cluster.

    Parameters:
        remote: the Celeriac future it follows.
    """

    def __init__(self, remote: Future[Any]) -> None:
        super().__init__()
        self.remote = remote

    def cancel(self) -> bool:
        """Cancel the task unless it has finished; True if this future is now cancelled."""
        if not self._cancel_here():
            return False
        self.remote.cancel()
        return True

    def _cancel_here(self) -> bool:
        if not super().cancel():
            return False
        # CANCELLED -> CANCELLED_AND_NOTIFIED, what ``wait`` and ``as_completed``
        # count as done (an executor's worker makes this move before it would run).
        self.set_running_or_notify_cancel()
        return True


class ClientExecutor(cf.Executor):
    """Run calls on a Celeriac cluster through the ``concurrent.futures`` interface.

    Made by :meth:`Client.get_executor`.  ``submit`` and ``map`` send tasks
    with the options given here; ``shutdown`` refuses new work and, with
    ``wait``, waits for what this executor sent.  Closing it never closes the client.

    Parameters:
        client: the client the tasks go through.
        submit_options: keyword options of :meth:`Client.submit` (``priority``,
            ``retries``, ``queue``) for every task; ``key`` is not one (each
            task draws its own).
    """

    def __init__(self, client: Client, **submit_options: Any) -> None:
        allowed = _submit_options(client)
        unknown = sorted(set(submit_options) - allowed)
        if unknown:
            raise TypeError(
                f"get_executor() got unexpected option(s) {', '.join(unknown)}; "
                f"it takes {', '.join(sorted(allowed))}"
            )
        self._client = client
        self._options = submit_options
        self._reserved = allowed | {"key"}
        self._pending: set[ExecutorFuture] = set()
        self._lock = threading.Lock()
        self._shutdown = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future[Any]:
        """Run ``fn(*args, **kwargs)`` on a worker; a ``concurrent.futures.Future`` for it.

        Parameters:
            fn: the function.
            args, kwargs: its arguments (a keyword that :meth:`Client.submit`
                would take for itself still reaches ``fn``).
        """
        if self._reserved.intersection(kwargs):
            fn, kwargs = functools.partial(fn, **kwargs), {}
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot submit after shutdown")
            remote = self._client.submit(fn, *args, **self._options, **kwargs)
            return self._follow(remote)

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
    ) -> Iterator[Any]:
        """``fn`` over the zipped iterables, sent at once in one batch; results in order.

        Parameters:
            fn: the function.
            iterables: its positional arguments, zipped (stops at the shortest).
            timeout: seconds from this call for all results; past it, the
                iterator raises ``TimeoutError`` (and cancels what is left).
            chunksize: calls per task: many tiny calls cost fewer round trips.
        """
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1")
        deadline = None if timeout is None else time.monotonic() + timeout
        calls = list(zip(*iterables, strict=False))
        chunks = [calls[i : i + chunksize] for i in range(0, len(calls), chunksize)]
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot map after shutdown")
            remotes = self._client.map(_Chunk(fn), chunks, **self._options)
            followed = [self._follow(remote) for remote in remotes]
        return _results_in_order(followed, deadline)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Refuse new work; cancel what has not finished, and/or wait for it.

        Parameters:
            wait: block until every task this executor sent is done.
            cancel_futures: cancel the tasks that have not finished.
        """
        with self._lock:
            self._shutdown = True
            pending = list(self._pending)
        if cancel_futures:
            for future in pending:
                future.cancel()
        if wait:
            cf.wait(pending)

    def _follow(self, remote: Future[Any]) -> ExecutorFuture:
        """A ``concurrent.futures.Future`` settled when ``remote`` is; held until then."""
        future = ExecutorFuture(remote)
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)
        remote.add_done_callback(lambda _: _settle(future))
        return future


class _Chunk:
    """Calls ``fn`` once per argument tuple of a chunk; named after ``fn`` on the dashboard."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.__name__ = getattr(fn, "__name__", type(fn).__name__)

    def __call__(self, calls: list[tuple[Any, ...]]) -> list[Any]:
        return [self.fn(*args) for args in calls]


def _results_in_order(futures: list[ExecutorFuture], deadline: float | None) -> Iterator[Any]:
    """Yield each chunk's results in order; on timeout or early close, cancel the rest."""
    try:
        for future in futures:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            yield from future.result(remaining)
    finally:
        for future in futures:
            future.cancel()


def _settle(future: ExecutorFuture) -> None:
    """Pass the Celeriac outcome on, never blocking the thread that read it."""
    if future.done():  # cancelled here first
        return
    remote = future.remote
    if remote.cancelled():  # cancelled on the cluster (client.cancel, a revoke)
        future._cancel_here()
    elif remote.status == "finished" and not remote.has_local_result():
        threading.Thread(target=_copy_outcome, args=(future,), daemon=True).start()
    else:
        _copy_outcome(future)


def _copy_outcome(future: ExecutorFuture) -> None:
    try:
        value = future.remote.result()
    except BaseException as exc:
        outcome: Callable[[], None] = functools.partial(future.set_exception, exc)
    else:
        outcome = functools.partial(future.set_result, value)
    try:
        outcome()
    except cf.InvalidStateError:  # cancelled while the outcome was on its way
        pass


def _submit_options(client: Client) -> set[str]:
    """The keyword-only options :meth:`Client.submit` takes, but ``key``."""
    parameters = inspect.signature(client.submit).parameters.values()
    return {p.name for p in parameters if p.kind is p.KEYWORD_ONLY} - {"key"}
