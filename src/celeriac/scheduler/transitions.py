"""The only legal moves between task states (:class:`celeriac.states.TaskState`).

Every state change in the scheduler goes through :func:`check_transition`; an
illegal move is a bug and raises, it is never silently ignored.
"""

from __future__ import annotations

from celeriac.states import TaskState

_S = TaskState

TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    _S.WAITING: frozenset({_S.SCHEDULED, _S.QUEUED, _S.ERRED, _S.CANCELLED, _S.EXPIRED}),
    # WAITING again, from SCHEDULED, QUEUED or PROCESSING: an input it was
    # ready with was lost with the worker that kept it, and is computed again
    _S.SCHEDULED: frozenset({_S.QUEUED, _S.WAITING, _S.ERRED, _S.CANCELLED, _S.EXPIRED}),
    # SCHEDULED from QUEUED: deferred by its rate limit when its turn came
    _S.QUEUED: frozenset(
        {_S.PROCESSING, _S.SCHEDULED, _S.WAITING, _S.ERRED, _S.CANCELLED, _S.EXPIRED}
    ),
    # QUEUED again: its worker was lost, or it failed and retries at once;
    # SCHEDULED: it retries after a back-off; EXPIRED: it would retry, too late
    _S.PROCESSING: frozenset(
        {_S.MEMORY, _S.ERRED, _S.QUEUED, _S.SCHEDULED, _S.WAITING, _S.CANCELLED, _S.EXPIRED}
    ),
    # WAITING: its result, kept on a worker, was lost with it and is computed
    # again; ERRED: it cannot be (an input is gone)
    _S.MEMORY: frozenset({_S.WAITING, _S.ERRED}),
    _S.ERRED: frozenset(),
    _S.CANCELLED: frozenset(),
    _S.EXPIRED: frozenset(),
}


class InvalidTransition(RuntimeError):
    """The scheduler tried a state change the table does not allow."""


def check_transition(key: str, old: TaskState, new: TaskState) -> None:
    """Raise :class:`InvalidTransition` unless ``old -> new`` is in the table."""
    if new not in TRANSITIONS[old]:
        raise InvalidTransition(f"task {key!r}: {old.value} -> {new.value} is not allowed")
