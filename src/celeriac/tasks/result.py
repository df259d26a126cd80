"""Looking up Celery-style tasks by id, from any process."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, TypeVar

from celeriac.client.futures import Future
from celeriac.errors import FutureLostError
from celeriac.states import READY_STATES, CeleryState
from celeriac.wire.serialize import format_traceback

if TYPE_CHECKING:
    from celeriac.tasks.app import App

R = TypeVar("R")


class AsyncResult(Generic[R]):
    """A task's outcome by id: store ``result.id``, rebuild it anywhere with the same app.

    ``status`` is one of ``PENDING``, ``STARTED``, ``RETRY``, ``SUCCESS``,
    ``FAILURE``, ``REVOKED``, ``EXPIRED`` or ``UNKNOWN``.  ``UNKNOWN`` means
    the scheduler holds no record of the id (never sent, or kept past its
    ``result_ttl``): unlike Celery, an unknown id never pretends to be pending.

    Parameters:
        id: the task's id.
        app: the app whose scheduler holds it.
    """

    def __init__(self, id: str, app: App) -> None:
        self.id = id
        self.app = app
        #: Set by ``delay``/``apply_async``: the outcome is pushed to it, unasked.
        self._held: Future[R] | None = None

    @property
    def status(self) -> str:
        """The task's status now, asked of the scheduler."""
        return self.app.engine.status([self.id])[self.id]

    state = status

    def ready(self) -> bool:
        """The task has an outcome (succeeded, failed, revoked or expired)."""
        return self.status in READY_STATES

    def successful(self) -> bool:
        """The task succeeded."""
        return self.status == CeleryState.SUCCESS

    def failed(self) -> bool:
        """The task failed."""
        return self.status == "FAILURE"

    def get(self, timeout: float | None = None, propagate: bool = True) -> R:
        """Wait for the outcome; raise the task's exception (or return it, if not ``propagate``).

        Parameters:
            timeout: seconds (``None``: no limit); past it, ``TimeoutError``.
            propagate: raise a failed task's exception (else return it).
        """
        future = self.as_future()
        exc = future.exception(timeout)
        if exc is None:
            return future.result()
        if isinstance(exc, FutureLostError):
            exc = FutureLostError(
                f"task id {self.id!r} is unknown to the scheduler "
                "(never sent, forgotten, or kept past its result_ttl)"
            )
        if propagate:
            raise exc
        return exc  # type: ignore[return-value]

    wait = get

    @property
    def result(self) -> R | BaseException | None:
        """The value (or exception) once ready; ``None`` before."""
        if not self.ready():
            return None
        return self.get(propagate=False)

    @property
    def traceback(self) -> str | None:
        """The remote traceback as text, for a failed task."""
        if self.status != "FAILURE":
            return None
        exc = self.as_future().exception()
        return format_traceback(exc) if exc is not None else None

    def revoke(self, terminate: bool = False) -> None:
        """Cancel cluster-wide; with ``terminate``, kill the worker process running it.

        Parameters:
            terminate: also kill the worker process if the task is running.
        """
        self.app.engine.revoke(self.id, terminate=terminate)

    def forget(self) -> None:
        """Drop the stored outcome now instead of at the end of its TTL."""
        self.app.engine.forget(self.id)

    def as_future(self) -> Future[R]:
        """A future for this result in this process (what ``progress`` takes)."""
        if self._held is not None:
            return self._held
        return self.app.engine.future_for(self.id)

    def __reduce__(self) -> Any:
        return AsyncResult, (self.id, self.app)  # a held future stays with its process

    def __repr__(self) -> str:
        return f"<AsyncResult {self.id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AsyncResult) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)


class GroupResult:
    """The results of a group, in order.

    Parameters:
        results: one per signature of the group.
    """

    def __init__(self, results: list[AsyncResult[Any]]) -> None:
        self.results = results

    def get(self, timeout: float | None = None, propagate: bool = True) -> list[Any]:
        """Every result, in order; see :meth:`AsyncResult.get`.

        Parameters:
            timeout: seconds per result (``None``: no limit).
            propagate: raise the first failed task's exception (else return it in place).
        """
        return [r.get(timeout, propagate) for r in self.results]

    def ready(self) -> bool:
        """Every task has an outcome."""
        return all(r.ready() for r in self.results)

    def completed_count(self) -> int:
        """How many tasks succeeded."""
        states = self.results[0].app.engine.status([r.id for r in self.results])
        return sum(1 for s in states.values() if s == CeleryState.SUCCESS)

    def __iter__(self) -> Any:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)
