"""How a canvas becomes one ``Engine.enqueue`` call: its options and its plan.

A canvas is built into a :class:`Plan` (every task's
:class:`~celeriac.client.engine.Submission`, in order, and the results to hand
back) and sent in one batch: the scheduler accepts it as a whole, and each
task carries ``TaskRef``s to the results it needs.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from celeriac.client.engine import Submission
    from celeriac.tasks.app import App
    from celeriac.tasks.result import AsyncResult

#: The options a member inherits from the canvas around it (its own win).
INHERITED = frozenset({"queue", "priority", "retries", "countdown", "eta", "expires"})
#: Every option a signature or canvas takes (``.set``, ``.clone``, ``apply_async``).
OPTIONS = INHERITED | {"task_id", "link", "link_error"}


def check_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` as a new dict, or ``TypeError`` naming any that Celeriac does not honour.

    Parameters:
        options: ``apply_async`` options by name.
    """
    unknown = sorted(set(options) - OPTIONS)
    if unknown:
        raise TypeError(
            f"unknown canvas option(s) {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(sorted(OPTIONS))}"
        )
    return {k: v for k, v in options.items() if v is not None}  # None: unset, as in Celery


@dataclass(frozen=True, slots=True)
class Inherited:
    """What a canvas passes down to its members: options, and errbacks to run on failure.

    Parameters:
        options: inherited options (:data:`INHERITED` only).
        errbacks: ``link_error`` signatures from every enclosing canvas.
    """

    options: Mapping[str, Any] = field(default_factory=dict)
    errbacks: tuple[Any, ...] = ()

    def under(self, own: Mapping[str, Any]) -> Inherited:
        """What a node with options ``own`` passes on: its own options win over these.

        Parameters:
            own: the node's options.
        """
        passed = {k: v for k, v in own.items() if k in INHERITED}
        errbacks = tuple(own.get("link_error", ()))
        if not passed and not errbacks:
            return self
        return Inherited({**self.options, **passed}, self.errbacks + errbacks)

    def after_start(self) -> Inherited:
        """What the steps that wait for an earlier one get: no ``expires``.

        An expiry bounds when a canvas may start, as in Celery: a later chain
        step, waiting on the one before, must not expire while it waits.
        """
        if "expires" not in self.options:
            return self
        options = {k: v for k, v in self.options.items() if k != "expires"}
        return Inherited(options, self.errbacks)


ROOT = Inherited()


def moment(
    when: datetime | float | None, seconds: float | None, *, relative: bool = False
) -> float | None:
    """A UNIX time from a datetime (naive = UTC) or, when relative, seconds from now.

    The same reading as ``Task.apply_async``: ``eta`` and a datetime ``expires``
    are moments, ``countdown`` and a number for ``expires`` are seconds from now.

    Parameters:
        when: a datetime, or a number (a UNIX time, or seconds when ``relative``).
        seconds: seconds from now, used when ``when`` is ``None``.
        relative: a number for ``when`` counts from now.
    """
    if isinstance(when, datetime):
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return when.timestamp()
    if when is not None:
        return time.time() + float(when) if relative else float(when)
    if seconds is not None:
        return time.time() + float(seconds)
    return None


class Plan:
    """Every task of one canvas, gathered before the one ``enqueue`` that sends them."""

    def __init__(self) -> None:
        self.app: App | None = None
        self.submissions: list[Submission] = []
        self.results: list[AsyncResult[Any]] = []

    def add(self, app: App, submission: Submission, result: AsyncResult[Any]) -> None:
        """One more task, and the result that stands for it.

        Parameters:
            app: the task's app: every task of a canvas goes to one scheduler.
            submission: what it sends.
            result: its result, given the pushed outcome if the plan holds it.
        """
        if self.app is None:
            self.app = app
        elif app is not self.app and app.address != self.app.address:
            raise ValueError(
                f"a canvas goes to one scheduler: {submission.name} is sent through "
                f"{app.address}, the rest through {self.app.address}"
            )
        self.submissions.append(submission)
        self.results.append(result)

    def send(self) -> None:
        """Enqueue everything in one batch, accepted as a whole (nothing, for an empty plan).

        A plan of one task holds its outcome, as ``.delay()`` does: ``get`` then
        asks for nothing.
        """
        if self.app is None:
            return
        subs = self.submissions
        hold = len(subs) == 1 and not subs[0].options.ignore_result
        held = self.app.engine.enqueue(subs, timeout=self.app.timeout, hold=hold)
        for result, future in zip(self.results, held, strict=False):
            result._held = future
