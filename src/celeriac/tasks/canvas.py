"""Chains, groups and chords, built on the engine's dependency graph.

Every step is submitted at once, with references (``TaskRef``) to the
results it needs: the scheduler starts each one when its inputs exist.
Nothing polls, and no worker waits for another task.  Each canvas is one
call to ``Engine.enqueue`` with a :class:`~celeriac.client.engine.Submission`
per step.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from celeriac.tasks.result import AsyncResult, GroupResult
from celeriac.wire.refs import TaskRef

if TYPE_CHECKING:
    from celeriac.client.engine import Submission
    from celeriac.tasks.app import App, Task

R = TypeVar("R")


class Signature(Generic[R]):
    """A task with (partial) arguments: ``add.s(2)``.

    Parameters:
        task: the task.
        args, kwargs: the arguments given so far.
        immutable: a chain does not prepend the previous result (``add.si(2)``).
    """

    def __init__(
        self,
        task: Task[Any, R],
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        immutable: bool = False,
    ) -> None:
        self.task = task
        self.args = args
        self.kwargs = kwargs or {}
        self.immutable = immutable

    @property
    def app(self) -> App:
        """The task's app."""
        return self.task.app

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult[R]:
        """Send the task with these arguments added; see :meth:`Task.delay`.

        Parameters:
            args, kwargs: more arguments (positional ones go first, as in Celery).
        """
        return self.apply_async(args, kwargs)

    def apply_async(
        self, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None, **options: Any
    ) -> AsyncResult[R]:
        """Send the task with these arguments added; see :meth:`Task.apply_async`.

        Parameters:
            args, kwargs: more arguments (positional ones go first, as in Celery).
            options: ``apply_async`` options (``task_id``, ``countdown``, ...).
        """
        return self.task.apply_async(
            (*args, *self.args), {**self.kwargs, **(kwargs or {})}, **options
        )

    def submission(self, previous: Any = None, *, task_id: str | None = None) -> Submission:
        """What this step sends; ``previous`` (a ref, or list of refs) goes first, as in Celery.

        Parameters:
            previous: the result(s) of the step before, as ``TaskRef``s.
            task_id: the id (default: a fresh one).
        """
        args = self.args if previous is None or self.immutable else (previous, *self.args)
        return self.task.submission(args, self.kwargs, task_id=task_id)

    def __or__(self, other: Signature[Any]) -> Chain:
        return Chain(self, other)

    def __repr__(self) -> str:
        return f"{self.task.name}.s{self.args!r}"


class Chain:
    """``chain(a.s(1), b.s(), c.s())``: each result is the first argument of the next.

    Parameters:
        steps: the signatures, in order.
    """

    def __init__(self, *steps: Signature[Any]) -> None:
        if not steps:
            raise ValueError("a chain needs at least one signature")
        for step in steps:
            if not isinstance(step, Signature):
                raise TypeError(
                    f"a chain takes signatures, not {type(step).__name__}: "
                    "for a group followed by a task use chord(group, task)"
                )
        self.steps = steps

    def apply_async(self) -> AsyncResult[Any]:
        """Send every step at once; the result of the last."""
        submissions: list[Submission] = []
        previous = None
        for step in self.steps:
            submission = step.submission(previous)
            submissions.append(submission)
            previous = TaskRef(submission.key)
        app = self.steps[0].app
        app.engine.enqueue(submissions, timeout=app.timeout)
        return AsyncResult(submissions[-1].key, app=app)

    delay = apply_async

    def __or__(self, other: Signature[Any]) -> Chain:
        return Chain(*self.steps, other)


class Group:
    """``group(add.s(i, i) for i in range(10))``: run in parallel.

    Parameters:
        signatures: the signatures, as arguments or as one iterable.
    """

    def __init__(self, *signatures: Signature[Any] | Iterable[Signature[Any]]) -> None:
        if len(signatures) == 1 and not isinstance(signatures[0], Signature):
            signatures = tuple(signatures[0])
        self.signatures: tuple[Signature[Any], ...] = signatures  # type: ignore[assignment]

    def submissions(self) -> list[Submission]:
        """What the group sends: one submission per signature."""
        return [s.submission() for s in self.signatures]

    def apply_async(self) -> GroupResult:
        """Send every signature at once; their results, in order."""
        if not self.signatures:
            return GroupResult([])
        app = self.signatures[0].app
        submissions = self.submissions()
        app.engine.enqueue(submissions, timeout=app.timeout)
        return GroupResult([AsyncResult(s.key, app=app) for s in submissions])

    delay = apply_async


class Chord:
    """``chord(header_group, callback)``: the callback gets the list of header results.

    Parameters:
        header: a group, or signatures, that run in parallel.
        body: the callback; the list of header results goes first in its arguments.
    """

    def __init__(self, header: Group | Iterable[Signature[Any]], body: Signature[Any]) -> None:
        self.header = header if isinstance(header, Group) else Group(header)
        self.body = body

    def apply_async(self) -> AsyncResult[Any]:
        """Send the header and the body at once; the body's result."""
        submissions = self.header.submissions()
        refs = [TaskRef(s.key) for s in submissions]
        submissions.append(self.body.submission(refs))
        app = self.body.app
        app.engine.enqueue(submissions, timeout=app.timeout)
        return AsyncResult(submissions[-1].key, app=app)

    delay = apply_async


def chain(*steps: Signature[Any]) -> Chain:
    """A :class:`Chain` of ``steps``."""
    return Chain(*steps)


def group(*signatures: Signature[Any] | Iterable[Signature[Any]]) -> Group:
    """A :class:`Group` of ``signatures`` (as arguments or one iterable)."""
    return Group(*signatures)


def chord(header: Group | Iterable[Signature[Any]], body: Signature[Any]) -> Chord:
    """A :class:`Chord`: ``body`` gets the list of the ``header``'s results."""
    return Chord(header, body)
