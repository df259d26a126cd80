"""The current app, and the ``@shared_task`` definitions every app takes.

Celery's rule, made explicit: an :class:`~celeriac.tasks.app.App` becomes
the current app when it is made (unless ``set_as_current=False``) or when
``app.set_current()`` is called; the last one wins.  It is one pointer per
process, shared by its threads, and nothing makes an app when there is none:
:func:`current_app` raises instead (Celery would make a default app that
sends to ``amqp://localhost``).  Creating an app opens no connection, so
nothing here connects anywhere either.

``@shared_task`` records its function here; each app's ``tasks`` registry
includes every recorded one, as Celery adds shared tasks to every app.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from celeriac.tasks.app import App
    from celeriac.tasks.task_options import TaskOptions

_current: App | None = None


def current_app() -> App:
    """The app shared tasks (and ``signature(name)``, ``AsyncResult(id)``) use now.

    Raises:
        RuntimeError: no app was made in this process (with ``set_as_current``).
    """
    app = _current
    if app is None:
        raise RuntimeError(
            "no current Celeriac app: make one first (app = Celery('proj', broker=...)); "
            "a shared task sends through the app made last, and Celeriac makes none itself"
        )
    return app


def set_current_app(app: App | None) -> None:
    """Make ``app`` the current app of this process (``None``: none)."""
    global _current
    _current = app


@dataclass(frozen=True, slots=True)
class SharedDefinition:
    """One ``@shared_task``: what each app builds its own task from.

    Parameters:
        fn: the function.
        name: the task's name.
        options: its options.
    """

    fn: Callable[..., Any]
    name: str
    options: TaskOptions


#: Every shared task defined in this process, by name (a later one of the same name wins).
SHARED: dict[str, SharedDefinition] = {}


def share(definition: SharedDefinition) -> None:
    """Record a shared task: every app's ``tasks`` includes it from now on."""
    SHARED[definition.name] = definition


__all__ = ["SHARED", "SharedDefinition", "current_app", "set_current_app", "share"]
