"""Looking up Celery-style tasks by id, from any process; a group's results together."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from celeriac.client.futures import Future
from celeriac.errors import FutureLostError
from celeriac.states import READY_STATES, CeleryState
from celeriac.tasks.current import current_app
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

    ``parent`` and ``children`` are known to the process that sent the
    canvas: a chain step's ``parent`` is the step before (a chord body's, the
    header's ``GroupResult``); ``children`` are the results of the tasks sent
    with it that receive its result (the next step, ``link`` callbacks).  A
    result rebuilt from its id has neither.

    Parameters:
        id: the task's id.
        app: the app whose scheduler holds it (default: the current app,
            :func:`~celeriac.tasks.current.current_app`, as in Celery).
        parent: the result this task receives as its first argument, if known.
    """

    def __init__(
        self, id: str, app: App | None = None, parent: AsyncResult[Any] | GroupResult | None = None
    ) -> None:
        self.id = id
        self.app = current_app() if app is None else app
        self.parent = parent
        self.children: list[AsyncResult[Any] | GroupResult] = []
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
    """The results of a group, in order (a member may itself be a ``GroupResult``).

    The questions (``ready``, ``successful``, ``completed_count``...) ask the
    scheduler about every task in one request.

    Parameters:
        results: one per member of the group.
        id: the group's id (its ``task_id`` option; default a fresh one).
        parent: the result each member receives first, if the group is a chain step.
    """

    def __init__(
        self,
        results: Iterable[AsyncResult[Any] | GroupResult],
        id: str | None = None,
        parent: AsyncResult[Any] | GroupResult | None = None,
    ) -> None:
        self.results = list(results)
        self.id = id or uuid.uuid4().hex
        self.parent = parent

    @property
    def children(self) -> list[AsyncResult[Any] | GroupResult]:
        """The members' results (Celery's name for them)."""
        return self.results

    def join(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        callback: Callable[[str, Any], Any] | None = None,
    ) -> list[Any]:
        """Wait for every result, in order; their values.

        Parameters:
            timeout: seconds for the whole group (``None``: no limit); past
                it, ``TimeoutError``.
            propagate: raise the first failed task's exception (else return
                it in its place).
            callback: called as ``callback(task_id, value)`` for each result
                instead of collecting them (the list is then empty).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        values = []
        for result in self.results:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            value = result.get(left, propagate)
            if callback is None:
                values.append(value)
            else:
                callback(result.id, value)
        return values

    def get(self, timeout: float | None = None, propagate: bool = True) -> list[Any]:
        """Every result, in order: :meth:`join`.

        Parameters:
            timeout: seconds for the whole group (``None``: no limit).
            propagate: raise the first failed task's exception (else return it in place).
        """
        return self.join(timeout, propagate)

    def ready(self) -> bool:
        """Every task has an outcome."""
        return all(s in READY_STATES for s in self._states())

    def successful(self) -> bool:
        """Every task succeeded."""
        return all(s == CeleryState.SUCCESS for s in self._states())

    def failed(self) -> bool:
        """Some task failed."""
        return any(s == "FAILURE" for s in self._states())

    def waiting(self) -> bool:
        """Some task has no outcome yet."""
        return not self.ready()

    def completed_count(self) -> int:
        """How many tasks succeeded."""
        return sum(1 for s in self._states() if s == CeleryState.SUCCESS)

    def revoke(self, terminate: bool = False) -> None:
        """Revoke every task; see :meth:`AsyncResult.revoke`.

        Parameters:
            terminate: also kill the worker processes running them.
        """
        for result in self.leaves():
            result.revoke(terminate=terminate)

    def forget(self) -> None:
        """Drop every stored outcome now."""
        for result in self.leaves():
            result.forget()

    def leaves(self) -> list[AsyncResult[Any]]:
        """Every task's result, nested groups included, in order."""
        found: list[AsyncResult[Any]] = []
        for result in self.results:
            found.extend(result.leaves() if isinstance(result, GroupResult) else [result])
        return found

    def _states(self) -> list[str]:
        leaves = self.leaves()
        if not leaves:
            return []
        states = leaves[0].app.engine.status([r.id for r in leaves])
        return [states[r.id] for r in leaves]

    def __iter__(self) -> Iterator[AsyncResult[Any] | GroupResult]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, index: int) -> AsyncResult[Any] | GroupResult:
        return self.results[index]

    def __repr__(self) -> str:
        return f"<GroupResult {self.id} [{', '.join(r.id for r in self.results)}]>"
