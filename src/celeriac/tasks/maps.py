"""Celery's ``xmap``, ``xstarmap`` and ``chunks``: many calls of one task, in few tasks.

``task.map(items)`` is one task that calls the function on each item in
turn; ``task.chunks(items, n)`` is a group of such tasks, ``n`` calls each.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from celeriac.tasks.callables import MapCall
from celeriac.tasks.canvas import Group, Signature

if TYPE_CHECKING:
    from celeriac.client.engine import Submission
    from celeriac.tasks.app import Task

R = TypeVar("R")


class XMap(Signature[list[R]]):
    """``xmap(task, items)``/``xstarmap``: one task calling the task's function on each item.

    As in Celery, the items run one after another in one worker (a group
    runs them in parallel), and it is immutable.  Its runs use the task's
    options (queue, retries, limits), with no rate limit.

    Parameters:
        task: the task.
        items: the arguments of each call (argument tuples, for ``star``).
        star: unpack each item (``starmap``).
    """

    def __init__(self, task: Task[Any, R], items: Iterable[Any], *, star: bool = False) -> None:
        super().__init__(task, immutable=True)  # type: ignore[arg-type]
        self.items = list(items)
        self.star = star

    callable_on_failure: ClassVar[bool] = False  # a map is no errback

    @property
    def name(self) -> str:
        """What the scheduler calls these tasks: ``celeriac.map`` or ``celeriac.starmap``."""
        return "celeriac.starmap" if self.star else "celeriac.map"

    def __call__(self, *args: Any, **kwargs: Any) -> list[R]:
        """Run every call here, in turn."""
        return MapCall(self.task, self.star)(self.items)

    def submission(self, previous: Any = None, *, task_id: str | None = None) -> Submission:
        """What this map sends alone (a periodic job's runs); ``previous`` is ignored: immutable.

        Parameters:
            previous: unused (a map takes no previous result).
            task_id: the id (default: a fresh one).
        """
        placing = {k: v for k, v in self.options.items() if k in ("queue", "priority", "retries")}
        return self._submission((), {}, placing, task_id)

    def _submission(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: Mapping[str, Any],
        task_id: str | None,
    ) -> Submission:
        one = super()._submission((), {}, options, task_id or self.app.engine.new_key(self.name))
        one.fn = MapCall(one.fn, self.star)
        one.args, one.name = (self.items,), self.name
        if one.options.rate_limit is not None:  # a limit on the task's calls, not its maps
            one.options = dataclasses.replace(one.options, rate_limit=None)
        return one

    def __repr__(self) -> str:
        star = "*" if self.star else ""
        return f"[{self.task.name}({star}x) for x in {self.items!r:.100}]"


class Chunks(Group):
    """``chunks(task, items, n)``: the items in parts of ``n``, each part one ``xstarmap``.

    A group of them; its result's ``get()`` is a list of lists.

    Parameters:
        task: the task.
        items: argument tuples, one per call.
        n: calls per part.
    """

    def __init__(self, task: Task[Any, Any], items: Iterable[Any], n: int) -> None:
        if n < 1:
            raise ValueError(f"chunks of {n}: a chunk holds at least one call")
        iterator = iter(items)
        parts = iter(lambda: list(itertools.islice(iterator, n)), [])
        super().__init__([XMap(task, part, star=True) for part in parts])
        self.task = task
        self.n = n

    def group(self) -> Group:
        """The parts as a plain group."""
        return Group(self.tasks)

    def __repr__(self) -> str:
        return f"chunks({self.task.name}, {len(self.tasks)} parts of {self.n})"


def xmap(task: Task[Any, R], items: Iterable[Any]) -> XMap[R]:
    """One task calling ``task``'s function on each item in turn (Celery's ``task.map``)."""
    return XMap(task, items)


def xstarmap(task: Task[Any, R], items: Iterable[Iterable[Any]]) -> XMap[R]:
    """One task calling ``task``'s function with each item as arguments (``task.starmap``)."""
    return XMap(task, items, star=True)


def chunks(task: Task[Any, Any], items: Iterable[Iterable[Any]], n: int) -> Chunks:
    """A group of ``xstarmap``s of ``n`` calls each (Celery's ``task.chunks(items, n)``)."""
    return Chunks(task, items, n)


__all__ = ["Chunks", "XMap", "chunks", "xmap", "xstarmap"]
