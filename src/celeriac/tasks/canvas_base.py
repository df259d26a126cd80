"""What every canvas has: partial arguments, options, callbacks, and sending itself.

:class:`Canvas` is the base of signatures, chains, groups and chords
(:mod:`celeriac.tasks.canvas`).  A canvas builds itself into a
:class:`~celeriac.tasks.plan.Plan`, given what comes before it (call-time
arguments, or the previous step's output), and returns its result and its
*output*: the ``TaskRef`` (or, for a group, list of them) the next step gets.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar

from celeriac.tasks.callables import check_errback
from celeriac.tasks.plan import ROOT, Inherited, Plan, check_options
from celeriac.tasks.result import AsyncResult, GroupResult
from celeriac.wire.refs import TaskRef

if TYPE_CHECKING:
    from celeriac.tasks.app import App

#: A canvas's result: one task's, or a group's.
Result = AsyncResult[Any] | GroupResult


class Canvas:
    """What every signature, chain, group and chord has in common.

    Parameters:
        args, kwargs: partial arguments, put before (positional) or under
            (keyword) those given when it is called.
        immutable: ignore arguments given later, and the previous result in a chain.
        options: ``apply_async`` options (see :data:`~celeriac.tasks.plan.OPTIONS`).
    """

    def __init__(
        self,
        args: Iterable[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        immutable: bool = False,
        options: dict[str, Any] | None = None,
    ) -> None:
        self.args = tuple(args)
        self.kwargs = dict(kwargs or {})
        self.immutable = immutable
        self.options = _checked(options or {})

    #: It can be called with a failure's (request, exc, traceback): a task's signature.
    callable_on_failure: ClassVar[bool] = False

    # -- sending -----------------------------------------------------------------------

    def apply_async(
        self,
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        """Send every task at once; the result (an ``AsyncResult`` or a ``GroupResult``).

        Parameters:
            args: put before the first task's (each first task's) arguments,
                unless immutable.
            kwargs: merged into the first task's keyword arguments.
            options: override this canvas's options for this call.
        """
        node = self.clone(**options) if options else self
        plan = Plan()
        result, _ = node.build(plan, tuple(args or ()), dict(kwargs or {}), ROOT, None)
        plan.send()
        return result

    def delay(self, *args: Any, **kwargs: Any) -> Any:
        """``apply_async(args, kwargs)``: send with these arguments added."""
        return self.apply_async(args, kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Send it (a chain, group or chord): ``chain(...)(16)`` is ``apply_async((16,))``."""
        return self.apply_async(args, kwargs)

    def __invert__(self) -> Any:
        """``~canvas``: send it and wait for its result."""
        return self.apply_async().get()

    def build(
        self,
        plan: Plan,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        inherited: Inherited,
        parent: Result | None,
        task_id: str | None = None,
    ) -> tuple[Any, Any]:
        """Add this canvas's tasks to ``plan``; its result and its output.

        Parameters:
            plan: where the submissions go.
            args, kwargs: what comes first (call-time arguments or the previous
                step's output), unless immutable.
            inherited: what the enclosing canvases pass down.
            parent: the previous step's result (``AsyncResult.parent``).
            task_id: the id of its final result (an enclosing chain's ``task_id``).
        """
        raise NotImplementedError

    # -- options -----------------------------------------------------------------------

    def set_immutable(self, immutable: bool) -> None:
        """Make it (im)mutable: Celery's ``set_immutable``.

        Parameters:
            immutable: ignore arguments given later, and the previous result.
        """
        self.immutable = immutable

    def set(self, immutable: bool | None = None, **options: Any) -> Any:
        """Set options in place (``queue``, ``countdown``, ``link``...); return this canvas.

        Parameters:
            immutable: make it (im)mutable, as ``si`` does.
            options: as ``apply_async`` takes them.
        """
        if immutable is not None:
            self.immutable = immutable
        self.options.update(_checked(options))
        return self

    def clone(
        self,
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        """A copy, with ``args`` prepended, ``kwargs`` merged (unless immutable) and options set.

        Parameters:
            args, kwargs: partial arguments to add.
            options: options that override the copy's.
        """
        new = copy.copy(self)
        if not self.immutable:
            new.args = (*(args or ()), *self.args)
            new.kwargs = {**self.kwargs, **(kwargs or {})}
        new.options = {
            k: list(v) if isinstance(v, list) else v for k, v in self.options.items()
        }  # own link lists: linking the copy leaves this one alone
        new.options.update(_checked(options))
        new._copy_members()
        return new

    partial = clone

    def _copy_members(self) -> None:
        """A composite's clone gets its own members (members may be ``set`` later)."""

    def _merged(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        if self.immutable:
            return self.args, self.kwargs
        return (*args, *self.args), {**self.kwargs, **kwargs}

    # -- callbacks ---------------------------------------------------------------------

    def link(self, callback: Canvas) -> Canvas:
        """Run ``callback`` after this succeeds, with its result first (unless immutable).

        The callback is a task on the dependency graph, sent with this one.
        Returns the callback, as Celery does.

        Parameters:
            callback: a signature or any canvas.
        """
        require_canvas(callback, "link")
        self.options.setdefault("link", []).append(callback)
        return callback

    def link_error(self, errback: Canvas) -> Canvas:
        """Call ``errback(request, exc, traceback, *its_args)`` when this fails for good.

        The errback runs in the worker process where the failure happened,
        right after it (Celery's current convention; the scheduler cannot
        start a task on a failure).  Returns the errback, as Celery does.

        Parameters:
            errback: a signature of a task taking ``(request, exc, traceback)``
                first (or an immutable one, called with its own arguments only).
        """
        _check_errback(errback)
        self.options.setdefault("link_error", []).append(errback)
        return errback

    def on_error(self, errback: Canvas) -> Any:
        """:meth:`link_error`, returning this canvas so calls chain: ``add.s(1).on_error(eb)``.

        Parameters:
            errback: as :meth:`link_error` takes it.
        """
        self.link_error(errback)
        return self

    def _link_callbacks(self, plan: Plan, output: Any, result: Result) -> None:
        callbacks = self.options.get("link", ())
        if callbacks and not isinstance(output, TaskRef):
            raise TypeError("a link after a group: use a chord (group | callback)")
        for callback in callbacks:
            callback.build(plan, (output,), {}, ROOT, result)

    def __or__(self, other: Canvas) -> Canvas:
        """``self | other``: each kind composes by Celery's rules (:mod:`celeriac.tasks.canvas`)."""
        return NotImplemented

    @property
    def app(self) -> App | None:
        """The app of its first task (``None`` for an empty group)."""
        raise NotImplementedError

    def _plain(self) -> bool:
        """No arguments or options of its own: flattening it loses nothing."""
        return not (self.args or self.kwargs or self.options or self.immutable)


def require_canvas(obj: Any, where: str) -> Canvas:
    """``obj`` if it is a canvas, else a ``TypeError`` naming ``where`` it was given."""
    if not isinstance(obj, Canvas):
        raise TypeError(f"a {where} takes signatures (task.s(...)) or canvases, not {obj!r}")
    return obj


def _checked(options: dict[str, Any]) -> dict[str, Any]:
    """Known options only; ``link``/``link_error`` as lists (one signature, or several)."""
    options = check_options(options)
    for name in ("link", "link_error"):
        if name in options:
            value = options[name]
            options[name] = list(value) if isinstance(value, (list, tuple)) else [value]
            for callback in options[name]:
                if name == "link_error":
                    _check_errback(callback)
                else:
                    require_canvas(callback, "link")
    return options


def _check_errback(errback: Any) -> None:
    if not getattr(errback, "callable_on_failure", False):  # a composite or a map is not
        raise TypeError(
            f"link_error takes a task's signature, not {errback!r}: Celeriac calls it in "
            "the worker with (request, exc, traceback), as Celery calls its errbacks"
        )
    check_errback(errback.task, errback.args, errback.kwargs, errback.immutable)
