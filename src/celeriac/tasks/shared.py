"""``@shared_task``: a task defined before any app exists, sent through the current app.

A reusable library (or a Django app) defines its tasks without importing the
project's app::

    from celeriac import shared_task

    @shared_task(max_retries=5)
    def send_email(user_id: int) -> None: ...

Decorating makes no app and opens nothing.  Each *use* that needs an app
(``delay``, ``apply_async``, ``s``, ``signature``, ``map``, reading
``.app`` ...) takes the current app at that moment
(:func:`~celeriac.tasks.current.current_app`: the app made last, or the one
``app.set_current()`` named), as Celery's shared-task proxy does; with no
app it raises ``RuntimeError``.  ``task.app = app`` pins it to one app
instead.  Calling it directly runs the function here and needs no app.
Every app's ``tasks`` registry includes the shared tasks, so a lookup by
name finds them through any app.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from celeriac.tasks.app import Task, _qualified_name
from celeriac.tasks.current import SharedDefinition, current_app, share
from celeriac.tasks.task_options import TaskOptions, task_options

if TYPE_CHECKING:
    from celeriac.tasks.app import App

P = ParamSpec("P")
R = TypeVar("R")


class SharedTask(Task[P, R]):
    """A task of whichever app is current when it is used (see the module docstring).

    Parameters:
        fn: the function.
        name: the task's name.
        options: its settings.
    """

    def __init__(self, fn: Callable[..., R], name: str, options: TaskOptions) -> None:
        self._pinned: App | None = None
        self._define(fn, name, options)

    @property
    def app(self) -> App:
        """The app it sends through now: the one it was pinned to, else the current app."""
        pinned = self._pinned
        return pinned if pinned is not None else current_app()

    @app.setter
    def app(self, app: App) -> None:
        self._pinned = app

    def __repr__(self) -> str:
        return f"<shared task {self.name}>"


@overload
def shared_task(fn: Callable[P, R], /) -> SharedTask[P, R]: ...


@overload
def shared_task(
    fn: None = None, /, *, name: str | None = None, **options: Any
) -> Callable[[Callable[P, R]], SharedTask[P, R]]: ...


def shared_task(
    fn: Callable[P, R] | None = None, /, *, name: str | None = None, **options: Any
) -> SharedTask[P, R] | Callable[[Callable[P, R]], SharedTask[P, R]]:
    """Decorator: ``@shared_task`` or ``@shared_task(max_retries=5, ...)``, Celery's.

    Takes the options ``@app.task`` takes (an unknown one raises ``TypeError``
    here, at import).  The task keeps the function's signature for mypy.

    Parameters:
        fn: the function (when used without parentheses).
        name: the task's name (default: ``module.qualname``).
        options: as :meth:`App.task <celeriac.tasks.app.App.task>` takes them.
    """
    parsed = task_options(options)

    def define(fn: Callable[P, R]) -> SharedTask[P, R]:
        task_name = name or _qualified_name(fn)
        share(SharedDefinition(fn, task_name, parsed))
        return SharedTask(fn, task_name, parsed)

    return define(fn) if fn is not None else define


__all__ = ["SharedTask", "shared_task"]
