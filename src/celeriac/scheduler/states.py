"""Task states and the only legal moves between them.

Every state change in the scheduler goes through :func:`check_transition`; an
illegal move is a bug and raises, it is never silently ignored.
"""

from __future__ import annotations

from enum import StrEnum


class TaskState(StrEnum):
    WAITING = "waiting"  # some dependency has not finished yet
    QUEUED = "queued"  # ready, in its queue, not given to a worker
    PROCESSING = "processing"  # given to a worker (prefetched or running)
    MEMORY = "memory"  # finished; the scheduler holds the result
    ERRED = "erred"  # failed for good (after retries)
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in FINISHED


FINISHED = frozenset({TaskState.MEMORY, TaskState.ERRED, TaskState.CANCELLED})

TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    TaskState.WAITING: frozenset({TaskState.QUEUED, TaskState.ERRED, TaskState.CANCELLED}),
    TaskState.QUEUED: frozenset({TaskState.PROCESSING, TaskState.ERRED, TaskState.CANCELLED}),
    TaskState.PROCESSING: frozenset(
        # QUEUED again: its worker was lost, or it failed and has retries left
        {TaskState.MEMORY, TaskState.ERRED, TaskState.QUEUED, TaskState.CANCELLED}
    ),
    TaskState.MEMORY: frozenset(),
    TaskState.ERRED: frozenset(),
    TaskState.CANCELLED: frozenset(),
}


class InvalidTransition(RuntimeError):
    """The scheduler tried a state change the table does not allow."""


def check_transition(key: str, old: TaskState, new: TaskState) -> None:
    if new not in TRANSITIONS[old]:
        raise InvalidTransition(f"task {key!r}: {old.value} -> {new.value} is not allowed")
