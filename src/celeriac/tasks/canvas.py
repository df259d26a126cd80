"""Signatures, chains, groups and chords, built on the engine's dependency graph.

Every task of a canvas is submitted at once, with references (``TaskRef``) to
the results it needs: the scheduler starts each one when its inputs exist.
Nothing polls, and no worker waits for another task.  Each canvas is one
call to ``Engine.enqueue`` (see :mod:`celeriac.tasks.plan`).

Each kind here is a :class:`~celeriac.tasks.canvas_base.Canvas` (arguments,
options, callbacks, sending); this module holds what differs between them
(how each builds itself) and how ``|`` composes them, by Celery's rules.
The guide is ``docs/canvas.md``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from celeriac.tasks.callables import Errback, OnFailure
from celeriac.tasks.canvas_base import Canvas, Result, require_canvas
from celeriac.tasks.current import current_app
from celeriac.tasks.plan import Inherited, Plan, moment
from celeriac.tasks.result import AsyncResult, GroupResult
from celeriac.wire.refs import TaskRef

if TYPE_CHECKING:
    from celeriac.client.engine import Submission
    from celeriac.tasks.app import App, Task

R = TypeVar("R")


class Signature(Canvas, Generic[R]):
    """A task with (partial) arguments and options: ``add.s(2)``, ``signature(add, (2,))``.

    Calling it runs the task here, as Celery does; ``delay``/``apply_async``
    send it.  ``sig.task`` is the :class:`~celeriac.tasks.app.Task` itself
    (Celery's ``sig.type``); ``sig.name`` its name.

    Parameters:
        task: the task.
        args, kwargs: the arguments given so far.
        immutable: a chain does not prepend the previous result (``add.si(2)``).
        options: ``apply_async`` options.
    """

    def __init__(
        self,
        task: Task[Any, R],
        args: Iterable[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        immutable: bool = False,
        options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(args, kwargs, immutable=immutable, options=options)
        self.task = task

    callable_on_failure: ClassVar[bool] = True

    def __or__(self, other: Canvas) -> Canvas:
        """``sig | x``: a chain."""
        return _pipe(self, other)

    @property
    def app(self) -> App:
        """The task's app."""
        return self.task.app

    @property
    def name(self) -> str:
        """The task's name."""
        return self.task.name

    @property
    def type(self) -> Task[Any, R]:
        """The task (Celery's name for it)."""
        return self.task

    def __call__(self, *args: Any, **kwargs: Any) -> R:
        """Run the task here and now with these arguments added (Celery: ``sig()``)."""
        args, kwargs = self._merged(args, kwargs)
        return self.task(*args, **kwargs)

    def apply_async(
        self,
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> AsyncResult[R]:
        """Send the task with these arguments added; see :meth:`Task.apply_async`.

        Parameters:
            args, kwargs: more arguments (positional ones go first, as in Celery).
            options: ``apply_async`` options (``task_id``, ``countdown``, ``link``...).
        """
        result: AsyncResult[R] = super().apply_async(args, kwargs, **options)
        return result

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult[R]:
        """Send the task with these arguments added; see :meth:`Task.delay`.

        Parameters:
            args, kwargs: more arguments (positional ones go first, as in Celery).
        """
        return self.apply_async(args, kwargs)

    def __invert__(self) -> R:
        """``~sig``: ``sig.delay().get()``."""
        return self.apply_async().get()

    def submission(self, previous: Any = None, *, task_id: str | None = None) -> Submission:
        """What this task sends alone; ``previous`` goes first in its arguments, unless immutable.

        Its ``queue``, ``priority`` and ``retries`` options apply; its moments
        (``countdown``, ``eta``, ``expires``) and callbacks do not (a periodic
        job's runs are built from this).

        Parameters:
            previous: the result(s) of the step before, as ``TaskRef``s.
            task_id: the id (default: a fresh one).
        """
        args = self.args if previous is None or self.immutable else (previous, *self.args)
        o = self.options
        return self.task.submission(
            args,
            self.kwargs,
            task_id=task_id,
            queue=o.get("queue"),
            priority=o.get("priority"),
            retries=o.get("retries"),
        )

    def build(
        self,
        plan: Plan,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        inherited: Inherited,
        parent: Result | None,
        task_id: str | None = None,
    ) -> tuple[AsyncResult[R], TaskRef]:
        """One task: its submission, its errbacks, then its ``link`` callbacks.

        Parameters:
            plan, args, kwargs, inherited, parent, task_id: as :meth:`Canvas.build`.
        """
        passed = inherited.under(self.options)
        submission = self._submission(
            *self._merged(args, kwargs), passed.options, task_id or self.options.get("task_id")
        )
        if passed.errbacks:
            submission.fn = OnFailure(
                submission.fn,
                [_errback(e) for e in passed.errbacks],
                submission.options.retries,
                retry_any=submission.options.retry_on_error is not False,
            )
        result: AsyncResult[R] = AsyncResult(submission.key, app=self.app, parent=parent)
        plan.add(self.app, submission, result)
        if isinstance(parent, AsyncResult):
            parent.children.append(result)
        ref = TaskRef(submission.key)
        self._link_callbacks(plan, ref, result)
        return result, ref

    def _submission(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: Mapping[str, Any],
        task_id: str | None,
    ) -> Submission:
        return self.task.submission(
            args,
            kwargs,
            task_id=task_id,
            not_before=moment(options.get("eta"), options.get("countdown")),
            expires=moment(options.get("expires"), None, relative=True),
            queue=options.get("queue"),
            priority=options.get("priority"),
            retries=options.get("retries"),
        )

    def __repr__(self) -> str:
        parts = [*map(repr, self.args), *(f"{k}={v!r}" for k, v in self.kwargs.items())]
        return f"{self.task.name}{'.si' if self.immutable else '.s'}({', '.join(parts)})"


class Chain(Canvas):
    """``chain(a.s(1), b.s(), c.s())`` or ``a.s(1) | b.s() | c.s()``: each result feeds the next.

    A step may be any canvas: a group's output is the list of its results;
    a group followed by a task becomes a chord, as in Celery; a chain inside
    a chain is flattened.  Calling it sends it: ``chain(add.s(4), mul.s(2))(16)``
    prepends 16 to the first step's arguments.

    Parameters:
        steps: the canvases, in order (or one iterable of them).
    """

    def __init__(self, *steps: Canvas | Iterable[Canvas]) -> None:
        super().__init__()
        if len(steps) == 1 and not isinstance(steps[0], Canvas):
            steps = tuple(steps[0])
        folded: list[Canvas] = []
        for step in steps:
            _append(folded, require_canvas(step, "chain"))
        if not folded:
            raise ValueError("a chain needs at least one signature")
        self.steps: tuple[Canvas, ...] = tuple(folded)

    @property
    def tasks(self) -> tuple[Canvas, ...]:
        """The steps (Celery's name for them)."""
        return self.steps

    def __or__(self, other: Canvas) -> Canvas:
        """``chain | x``: a longer chain (by the rules of :func:`_append`)."""
        return _pipe(self, other)

    @property
    def app(self) -> App | None:
        """The app of its first task."""
        return self.steps[0].app

    def _copy_members(self) -> None:
        self.steps = tuple(s.clone() for s in self.steps)

    def build(
        self,
        plan: Plan,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        inherited: Inherited,
        parent: Result | None,
        task_id: str | None = None,
    ) -> tuple[Result, Any]:
        """Each step fed the output of the one before; the last step's result.

        Parameters:
            plan, args, kwargs, inherited, parent, task_id: as :meth:`Canvas.build`.
        """
        passed = inherited.under(self.options)
        task_id = task_id or self.options.get("task_id")
        args, kwargs = self._merged(args, kwargs)
        result: Result | None = parent
        output: Any = None
        last = len(self.steps) - 1
        for i, step in enumerate(self.steps):
            step_id = task_id if i == last else None
            result, output = step.build(plan, args, kwargs, passed, result, step_id)
            args, kwargs, passed = (output,), {}, passed.after_start()
        assert result is not None  # a chain has at least one step
        self._link_callbacks(plan, output, result)
        return result, output

    def __repr__(self) -> str:
        return " | ".join(map(repr, self.steps))


class Group(Canvas):
    """``group(add.s(i, i) for i in range(10))``: run in parallel; a ``GroupResult``.

    Arguments given when it is called go to every member; a group inside a
    group is flattened.

    Parameters:
        tasks: the canvases, as arguments or as one iterable.
    """

    def __init__(self, *tasks: Canvas | Iterable[Canvas]) -> None:
        super().__init__()
        if len(tasks) == 1 and not isinstance(tasks[0], Canvas):
            tasks = tuple(tasks[0])
        self.tasks: tuple[Canvas, ...] = tuple(require_canvas(t, "group") for t in tasks)

    @property
    def signatures(self) -> tuple[Canvas, ...]:
        """The members (as earlier Celeriac versions named them)."""
        return self.tasks

    @property
    def app(self) -> App | None:
        """The app of its first task (``None`` when empty)."""
        return self.tasks[0].app if self.tasks else None

    def _copy_members(self) -> None:
        self.tasks = tuple(t.clone() for t in self.tasks)

    def __call__(self, *args: Any, **options: Any) -> GroupResult:
        """Send it, with ``args`` added to every member's: ``group(...)(10)``.

        Parameters:
            args: added to every member's arguments.
            options: ``apply_async`` options (as Celery's ``group.__call__`` takes them).
        """
        return self.apply_async(args, **options)

    def link(self, callback: Canvas) -> Canvas:
        """Refused, as in Celery: a callback after a group is a chord (``group | callback``)."""
        raise TypeError("a link after a group: use a chord (group | callback)")

    def __or__(self, other: Canvas) -> Canvas:
        """``group | x`` is ``chord(group, x)``, as in Celery; ``group | group()`` is the group."""
        if not isinstance(other, Canvas):
            return NotImplemented
        if isinstance(other, Group) and not other.tasks:
            return self
        return Chord(self, other)

    def apply_async(
        self,
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> GroupResult:
        """Send every member at once; their results, in order.

        Parameters:
            args, kwargs: added to every member's arguments.
            options: passed to every member (its own win); ``task_id`` is the group's id.
        """
        result: GroupResult = super().apply_async(args, kwargs, **options)
        return result

    def build(
        self,
        plan: Plan,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        inherited: Inherited,
        parent: Result | None,
        task_id: str | None = None,
    ) -> tuple[GroupResult, list[Any]]:
        """Every member given the same arguments; the list of their outputs.

        Parameters:
            plan, args, kwargs, inherited, parent, task_id: as :meth:`Canvas.build`.
        """
        if self.options.get("link"):
            raise TypeError("a link after a group: use a chord (group | callback)")
        passed = inherited.under(self.options)
        args, kwargs = self._merged(args, kwargs)
        results: list[Result] = []
        outputs: list[Any] = []
        for member in self.tasks:
            result, output = member.build(plan, args, kwargs, passed, parent)
            if isinstance(member, Group):  # flattened, as Celery does
                results.extend(result.results)
                outputs.extend(output)
            else:
                results.append(result)
                outputs.append(output)
        group_id = task_id or self.options.get("task_id")
        return GroupResult(results, id=group_id, parent=parent), outputs

    def __repr__(self) -> str:
        return f"group([{', '.join(map(repr, self.tasks))}])"


class Chord(Canvas):
    """``chord(header, body)``: the body gets the list of the header's results, first.

    ``chord(header)(body)`` sends it too, as in Celery.  A ``link`` goes on the
    body; a ``link_error`` on every header task and on the body (a failed
    header task fails the body without running it).

    Parameters:
        header: a group, or canvases, that run in parallel.
        body: the callback (any canvas), given when it is called if not here.
    """

    def __init__(self, header: Group | Iterable[Canvas], body: Canvas | None = None) -> None:
        super().__init__()
        self.header = header if isinstance(header, Group) else Group(header)
        self.body = None if body is None else require_canvas(body, "chord")

    @property
    def tasks(self) -> tuple[Canvas, ...]:
        """The header's members (Celery's name for them)."""
        return self.header.tasks

    @property
    def app(self) -> App | None:
        """The app of its first task."""
        return self.header.app or (self.body.app if self.body is not None else None)

    def _copy_members(self) -> None:
        self.header = self.header.clone()
        self.body = self.body.clone() if self.body is not None else None

    def __call__(self, body: Canvas | None = None, **options: Any) -> Any:
        """Send it, with ``body`` if given: ``chord(header)(body)``.

        Parameters:
            body: the callback, if the chord has none yet (or to replace it).
            options: ``apply_async`` options.
        """
        chord = self
        if body is not None:
            chord = self.clone()
            chord.body = require_canvas(body, "chord")
        return chord.apply_async(**options)

    def __or__(self, other: Canvas) -> Canvas:
        if self.body is not None and self._plain() and _joins_body(other):
            chord = self.clone()
            chord.body = self.body | _unrolled(other)
            return chord
        return _pipe(self, other)

    def build(
        self,
        plan: Plan,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        inherited: Inherited,
        parent: Result | None,
        task_id: str | None = None,
    ) -> tuple[Result, Any]:
        """The header given the arguments, then the body given its outputs.

        Parameters:
            plan, args, kwargs, inherited, parent, task_id: as :meth:`Canvas.build`.
        """
        if self.body is None:
            raise TypeError("a chord needs a body: chord(header, body) or chord(header)(body)")
        passed = inherited.under(self.options)
        header, outputs = self.header.build(plan, *self._merged(args, kwargs), passed, parent)
        task_id = task_id or self.options.get("task_id")
        body_passed = passed.after_start()
        result, output = self.body.build(plan, (outputs,), {}, body_passed, header, task_id)
        self._link_callbacks(plan, output, result)
        return result, output

    def __repr__(self) -> str:
        return f"chord({self.header!r}, {self.body!r})"


# -- composing, as Celery does -----------------------------------------------------------


def _pipe(left: Canvas, right: Canvas) -> Canvas:
    if not isinstance(right, Canvas):
        return NotImplemented
    return Chain(left, right)


def _append(steps: list[Canvas], step: Canvas) -> None:
    """Add ``step`` to a chain's ``steps`` by Celery's rules, without losing anything.

    A plain chain is flattened; an empty group vanishes and a plain group of
    one is its member; a task after a group makes them a chord; a task after
    a plain chord joins the chord's body.
    """
    if isinstance(step, Chain) and step._plain():
        for inner in step.steps:
            _append(steps, inner)
        return
    if isinstance(step, Group) and step._plain() and len(step.tasks) <= 1:
        if step.tasks:
            _append(steps, step.tasks[0])
        return
    last = steps[-1] if steps else None
    if isinstance(last, Group) and not isinstance(step, (Group, Chain)):
        steps[-1] = Chord(last, step)
    elif isinstance(last, Chord) and last.body is not None and last._plain() and _joins_body(step):
        steps[-1] = last | step
    else:
        steps.append(step)


def _joins_body(step: Canvas) -> bool:
    """After a chord, this goes into the chord's body (a task, or a group of one)."""
    if isinstance(step, Group):
        return len(step.tasks) == 1 and step._plain()
    return isinstance(step, Signature)


def _unrolled(step: Canvas) -> Canvas:
    return step.tasks[0] if isinstance(step, Group) else step


def _errback(errback: Signature[Any]) -> Errback:
    return Errback.of(errback.task, errback.args, errback.kwargs, errback.immutable)


# -- the functions Celery users call ------------------------------------------------------

chain = Chain
group = Group
chord = Chord


def signature(
    task: Task[Any, R] | Signature[R] | str,
    args: Iterable[Any] | None = None,
    kwargs: dict[str, Any] | None = None,
    *,
    app: App | None = None,
    immutable: bool = False,
    **options: Any,
) -> Signature[R]:
    """A signature of ``task`` (a task, or a registered task's name with ``app=``).

    Given a signature, a copy of it (with ``args``, ``kwargs`` and options added).

    Parameters:
        task: the task, its name (looked up in ``app.tasks``), or a signature.
        args, kwargs: its arguments.
        app: the app whose tasks a name is looked up in (default: the current
            app, :func:`~celeriac.tasks.current.current_app`).
        immutable: a chain does not prepend the previous result.
        options: ``apply_async`` options.
    """
    if isinstance(task, Signature):
        return task.clone(args, kwargs, **options)
    if isinstance(task, str):
        if app is None:
            app = current_app()  # raises when there is none: Celeriac makes no default app
        if task not in app.tasks:
            raise LookupError(f"no task named {task!r} is registered with {app!r}")
        task = app.tasks[task]
    return Signature(task, args or (), kwargs, immutable=immutable, options=options)


__all__ = [
    "Canvas",
    "Chain",
    "Chord",
    "Group",
    "Signature",
    "chain",
    "chord",
    "group",
    "signature",
]
