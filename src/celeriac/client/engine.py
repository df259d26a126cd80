"""The seam between the front doors and the engine: :class:`Engine` and :class:`Submission`.

The futures API (:class:`~celeriac.client.Client`) is one front door; the
Celery-style API (:mod:`celeriac.tasks`: ``App``, canvas, ``AsyncResult``) is
the other.  The Celery side never builds wire messages or touches a client's
internals: it describes each task as a :class:`Submission` and hands it to an
:class:`Engine`, the way dramatiq's ``Actor.send`` ends in ``broker.enqueue``.
:class:`~celeriac.client.Client` is the engine; a test may put any object with
these methods in its place.

Room to grow (issue 17): a pipelined ``.delay()`` becomes an ``enqueue`` that
returns once the submissions are queued, with the acceptance tracked by
:class:`~celeriac.client.acks.AckTracker` (already kept apart from the wait,
and already what is resent after a scheduler restart); an asyncio engine gets
``async`` twins of these methods.  :class:`Submission` is a plain value, so
neither changes what the front doors build.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from celeriac.client.futures import Future
    from celeriac.schedules import Schedule


@dataclass(frozen=True, slots=True)
class RunOptions:
    """How the scheduler handles every run of a task: a value a task builds once.

    Parameters:
        queue, priority: where it waits and in what order (lower runs first).
        retries: how many times a failed or lost run is tried again.
        retry_on_error: whether any exception retries (``None``: the
            scheduler's default, yes); ``False`` retries only on ``Retry``.
        retry_backoff, backoff_max, retry_jitter: exponential back-off between
            retries from ``retry_backoff`` seconds (0: none), its cap in
            seconds and whether it is randomised (``None``: the scheduler's
            default).
        result_ttl: seconds the outcome is kept for lookup by id (``None``:
            the scheduler's default).
        time_limit, soft_time_limit: hard and soft limits on one run, in seconds.
        rate_limit: cluster-wide limit for tasks of this name, e.g. ``"10/s"``.
        ignore_result: keep no outcome at all.
    """

    queue: str = "default"
    priority: int = 0
    retries: int = 0
    retry_on_error: bool | None = None
    retry_jitter: bool | None = None
    backoff_max: float | None = None
    result_ttl: float | None = None
    retry_backoff: float = 0.0
    time_limit: float | None = None
    soft_time_limit: float | None = None
    rate_limit: str | None = None
    ignore_result: bool = False


DEFAULT_OPTIONS = RunOptions()


@dataclass(slots=True, kw_only=True)
class Submission:
    """One task for the engine to run: what a front door builds, what :meth:`Engine.enqueue` takes.

    Parameters:
        fn: the callable a worker runs (sent by value, or by name if it pickles so).
        args, kwargs: its arguments; a :class:`~celeriac.wire.refs.TaskRef` or a
            ``Future`` anywhere in them makes that task a dependency and is
            replaced by its result.
        key: the task's id, unique per task (:meth:`Engine.new_key` draws one).
        name: the task's name, for logs, ``inspect`` and rate limits.
        options: how its runs are handled (shared by every call of a task).
        eta: a UNIX time before which it does not start.
        expires: a UNIX time after which it is cancelled instead of run.
    """

    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    key: str
    name: str
    options: RunOptions = DEFAULT_OPTIONS
    eta: float | None = None
    expires: float | None = None


class Engine(Protocol):
    """What the Celery-style front door needs from the engine; ``Client`` provides it.

    Every method may be called from any thread, and in a process forked after
    the engine was made (which then opens a connection of its own).
    """

    def new_key(self, name: str) -> str:
        """A fresh task id: ``name`` followed by a suffix unique to this process.

        Parameters:
            name: the task's name, which the id starts with.
        """
        ...

    def enqueue(
        self,
        submissions: Sequence[Submission],
        *,
        timeout: float | None = None,
        hold: bool = False,
    ) -> list[Future[Any]]:
        """Send detached tasks; return once the scheduler has accepted every one.

        Accepted tasks run even if this process exits, and keep their outcome
        for ``result_ttl``.  Dependencies between them may point either way
        within one call.  Raises ``SchedulerUnavailable`` if not all are
        accepted within the timeout.

        Parameters:
            submissions: the tasks, sent together.
            timeout: seconds to wait for the acceptance (``None``: the
                engine's own timeout).
            hold: also return a future per task, to which the scheduler pushes
                the outcome unasked; dropping it never cancels the task.
                Without ``hold`` the list is empty.
        """
        ...

    def future_for(self, key: str) -> Future[Any]:
        """A future for a task submitted elsewhere (another process, or detached).

        It fails with ``FutureLostError`` if the scheduler holds no such task.

        Parameters:
            key: the task's id.
        """
        ...

    def status(self, keys: list[str], timeout: float | None = None) -> dict[str, str]:
        """The Celery-style status of each key (``PENDING`` ... ``UNKNOWN``).

        Parameters:
            keys: task ids.
            timeout: seconds to wait for the answer (``None``: the engine's own).
        """
        ...

    def revoke(self, key: str, *, terminate: bool = False) -> None:
        """Cancel a task cluster-wide, even one not submitted yet.

        Parameters:
            key: the task's id.
            terminate: also kill the worker process if it is running.
        """
        ...

    def forget(self, key: str) -> None:
        """Drop a finished task's stored outcome now instead of at the end of its TTL.

        Parameters:
            key: the task's id.
        """
        ...

    def set_periodic(
        self,
        submission: Submission,
        schedule: Schedule,
        *,
        misfire: str = "skip",
        grace: float = 1.0,
        allow_overlap: bool = False,
    ) -> None:
        """Create or update the periodic job named ``submission.key``; wait until it is stored.

        Parameters:
            submission: the task each run submits; its key is the job's name.
            schedule: when it runs (``every``, ``crontab``, ``at``).
            misfire: runs missed while the scheduler was down: ``skip``,
                ``run_once`` or ``catch_up``.
            grace: seconds late a run may start and still count as on time.
            allow_overlap: start a run while the previous one still runs.
        """
        ...

    def close(self) -> None:
        """Disconnect (and stop what the engine started)."""
        ...
