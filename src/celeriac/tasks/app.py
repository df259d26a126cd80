"""The Celery-style front door: ``App``, ``@app.task``, ``.delay()``, ``apply_async``.

An :class:`App` holds one :class:`~celeriac.client.Client` connection, opened
on first use (so importing a module that defines tasks connects nowhere) and
reopened in a forked child (gunicorn pre-forks).  Tasks are *detached*: no
future holds them; the scheduler keeps each outcome for ``result_ttl`` so
an :class:`AsyncResult` can look it up by id from any process.

Everything here reaches the engine through :attr:`App.engine`, typed as the
:class:`~celeriac.client.engine.Engine` protocol: a call becomes a
:class:`~celeriac.client.engine.Submission`, and ``Engine.enqueue`` sends it.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, overload

import cloudpickle

from celeriac.client.engine import Engine, RunOptions, Submission
from celeriac.context import TaskRequest, current_request
from celeriac.errors import Retry
from celeriac.tasks.config import Conf, module_names, scheduler_address, seconds
from celeriac.wire.addresses import DEFAULT_ADDRESS, normalize
from celeriac.wire.protocol import parse_rate

if TYPE_CHECKING:
    from celeriac.client import Client
    from celeriac.schedules import Schedule
    from celeriac.tasks.canvas import Signature
    from celeriac.tasks.maps import Chunks, XMap
    from celeriac.tasks.result import AsyncResult

P = ParamSpec("P")
R = TypeVar("R")

ONE_DAY = 86400.0


@dataclass(frozen=True)
class TaskOptions:
    """Per-task settings, as given to ``@app.task``; ``apply_async`` may override some.

    Parameters:
        queue, priority: where the task waits and in what order (lower first).
        retries: how many times it is tried again (on ``autoretry_for`` or ``self.retry``).
        retry_backoff, retry_backoff_max, retry_jitter: exponential back-off
            between retries (``True``: from 1 s; a number: from that many
            seconds, as in Celery), its cap, and whether it is randomised.
        autoretry_for: exception types that retry the task instead of failing it.
        time_limit, soft_time_limit: hard and soft limits on one run, in seconds.
        ignore_result: keep no outcome.
        result_ttl: seconds the outcome is kept (``None``: the app's default).
        rate_limit: cluster-wide, e.g. ``"10/s"``, ``"100/m"``.
        bind: pass the task's request as the first argument (``self``).
    """

    queue: str = "default"
    priority: int = 0
    retries: int = 3
    retry_backoff: bool | float = False  # True: 1 s, 2 s, 4 s...; 5: 5 s, 10 s, 20 s...
    retry_backoff_max: float = 600.0
    retry_jitter: bool = True
    autoretry_for: tuple[type[BaseException], ...] = ()
    time_limit: float | None = None
    soft_time_limit: float | None = None
    ignore_result: bool = False
    result_ttl: float | None = None  # None: the app's default
    rate_limit: str | None = None
    bind: bool = False

    def __post_init__(self) -> None:
        backoff = self.retry_backoff
        if not isinstance(backoff, int | float) or backoff < 0 or backoff != backoff:
            raise ValueError(
                f"retry_backoff must be True, False or the first delay in seconds, not {backoff!r}"
            )


class App:
    """A Celeriac application: where tasks are registered and sent (``Celery`` is this class).

    It takes Celery's constructor: ``App("proj", broker="tcp://host:8786",
    include=["proj.tasks"], result_expires=3600)``.  ``address`` (or a
    ``tcp://``, ``ipc://`` or ``celeriac://`` ``broker``) is the scheduler's;
    it defaults to ``$CELERIAC_ADDRESS``, then ``tcp://127.0.0.1:8786``.  A
    Celery transport URL (``redis://``, ``amqp://``) and any ``backend`` are
    ignored with a warning: the scheduler is the queue and keeps the outcomes.
    A first argument holding ``:`` is an address (``App("tcp://...")``), else
    the app's name.  ``timeout`` bounds how long ``.delay()`` waits for the
    scheduler to accept a task before raising
    :class:`~celeriac.errors.SchedulerUnavailable`: a web request never hangs
    on a dead scheduler.

    Parameters:
        main: the app's name (Celery's ``main``), or an address (see above).
        address: the scheduler's ``tcp://host:port`` or ``ipc://PATH``.
        broker: Celery's ``broker`` (``broker_url``), as above.
        backend: Celery's ``backend`` (``result_backend``): ignored, warned.
        include: modules imported when the app first looks a task up by name.
        timeout: seconds, as above (and for the connection's other requests).
        result_ttl: seconds an outcome is kept for lookup by id (default one
            day; Celery's ``result_expires``); a task may set its own.
        keys: a CURVE key directory for a scheduler that uses ``--keys``.
        settings: Celery settings by name, as ``app.conf.update`` takes them
            (:data:`celeriac.tasks.config.SETTINGS` lists those read here).
    """

    def __init__(
        self,
        main: str | None = None,
        *,
        address: str | None = None,
        broker: str | None = None,
        backend: str | None = None,
        include: Iterable[str] = (),
        timeout: float = 5.0,
        result_ttl: float = ONE_DAY,
        keys: str | None = None,
        **settings: Any,
    ) -> None:
        if main is not None and ":" in main:  # App("tcp://host:port"), App("host:port")
            if address is not None:
                raise TypeError(f"App({main!r}, address={address!r}): two addresses")
            main, address = None, main
        self.main = main
        self._explicit_address = address is not None
        self.address = normalize(address or os.environ.get("CELERIAC_ADDRESS") or DEFAULT_ADDRESS)
        self.timeout = timeout
        self.result_ttl = result_ttl
        self.keys = keys
        self._tasks: dict[str, Task[Any, Any]] = {}
        self._include: list[str] = []
        self._client: Client | None = None
        self._lock = threading.Lock()
        self.conf = Conf(self._apply_setting)
        given = {"broker_url": broker, "result_backend": backend, "include": include or None}
        self.conf.update({k: v for k, v in given.items() if v is not None}, **settings)

    def _apply_setting(self, name: str, value: Any) -> None:
        """Make one of Celery's settings take effect (``app.conf`` calls this)."""
        if name == "broker_url":
            address = scheduler_address(value, "broker")
            if address is not None and not self._explicit_address:
                if self._client is not None:
                    raise RuntimeError("broker_url set after the app connected; set it first")
                self.address = normalize(address)
        elif name == "result_backend":
            warnings.warn(
                f"backend={value!r} ignored: the Celeriac scheduler keeps every outcome "
                "(for result_ttl, Celery's result_expires)",
                stacklevel=5,
            )
        elif name == "result_expires":
            self.result_ttl = seconds(name, value)
        elif name in ("include", "imports"):
            self._include.extend(module_names(name, value))
        else:  # a name added to SETTINGS must be applied here too
            raise AssertionError(f"setting {name!r} is in SETTINGS but not applied")

    @property
    def tasks(self) -> dict[str, Task[Any, Any]]:
        """The registered tasks by name, after importing the ``include``d modules."""
        while self._include:
            importlib.import_module(self._include.pop(0))
        return self._tasks

    def config_from_object(self, obj: Any, namespace: str | None = None) -> None:
        """Celery's settings from an object: a module, ``"module"``, ``"module:attribute"``.

        With ``namespace="CELERY"``, only ``CELERY_*`` names are read, the
        prefix dropped and lower-cased (Django's ``settings``).
        """
        if isinstance(obj, str):  # "module" or Celery's "module:attribute"
            module, _, attribute = obj.partition(":")
            obj = importlib.import_module(module)
            if attribute:
                obj = getattr(obj, attribute)
        prefix = f"{namespace}_" if namespace else ""
        found = {}
        for name in dir(obj):
            if name.startswith("_") or not name.startswith(prefix):
                continue
            key = name[len(prefix) :]
            if prefix or key.islower():
                found[key.lower()] = getattr(obj, name)
        self.conf.update(found)

    @property
    def client(self) -> Client:
        """The connection, opened on first use (also a futures ``Client``)."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    from celeriac.client import Client

                    self._client = Client(self.address, timeout=self.timeout, keys=self.keys)
        return self._client

    @property
    def engine(self) -> Engine:
        """The connection as the tasks see it: only the engine interface."""
        client = self._client  # read twice per .delay(): skip the property once open
        return client if client is not None else self.client

    @overload
    def task(self, fn: Callable[P, R], /) -> Task[P, R]: ...

    @overload
    def task(
        self, fn: None = None, /, *, name: str | None = None, **options: Any
    ) -> Callable[[Callable[P, R]], Task[P, R]]: ...

    def task(
        self, fn: Callable[P, R] | None = None, /, *, name: str | None = None, **options: Any
    ) -> Task[P, R] | Callable[[Callable[P, R]], Task[P, R]]:
        """Decorator: ``@app.task`` or ``@app.task(retries=3, queue="emails", ...)``.

        The task keeps the function's signature: ``send.delay(42)`` is checked
        by mypy against ``def send(user_id: int)`` and returns ``AsyncResult[R]``.

        Parameters:
            fn: the function (when used as ``@app.task`` without parentheses).
            name: the task's name (default: ``module.qualname``).
            options: the fields of :class:`TaskOptions`.
        """

        def register(fn: Callable[P, R]) -> Task[P, R]:
            task: Task[P, R] = Task(self, fn, name or _qualified_name(fn), TaskOptions(**options))
            self._tasks[task.name] = task
            return task

        return register(fn) if fn is not None else register

    def add_periodic_task(
        self,
        schedule: Schedule,
        signature: Signature[Any],
        name: str | None = None,
        *,
        misfire: str = "skip",
        grace: float = 1.0,
        allow_overlap: bool = False,
    ) -> str:
        """Have the scheduler run ``signature`` on ``schedule``; the same name updates it.

        ``misfire`` says what to do with runs missed while the scheduler was
        down: ``skip`` (default), ``run_once`` (coalesce) or ``catch_up``; a
        run up to ``grace`` seconds late still counts as on time.  A tick is
        skipped while the previous run is still going, unless ``allow_overlap``.

        Parameters:
            schedule: when it runs (``every``, ``crontab``, ``at``).
            signature: the task and arguments each run sends.
            name: the job's name (default: the task's name).
            misfire, grace, allow_overlap: as above.

        Returns the job's name.
        """
        name = name or signature.task.name
        self.engine.set_periodic(
            signature.submission(task_id=name),
            schedule,
            misfire=misfire,
            grace=grace,
            allow_overlap=allow_overlap,
        )
        return name

    def AsyncResult(self, task_id: str) -> AsyncResult[Any]:
        """The result of ``task_id``, sent by any process to this app's scheduler.

        Parameters:
            task_id: the task's id (``result.id``).
        """
        from celeriac.tasks.result import AsyncResult

        return AsyncResult(task_id, app=self)

    def close(self) -> None:
        """Close the connection, if it was opened; the next use opens a new one."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> App:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<App {self.address} tasks={len(self._tasks)}>"

    def __getstate__(self) -> dict[str, Any]:
        # Travels inside task functions (a task that sends tasks): settings only.
        return {
            "main": self.main,
            "address": self.address,
            "timeout": self.timeout,
            "result_ttl": self.result_ttl,
            "keys": self.keys,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(  # type: ignore[misc]
            state.get("main"),  # absent from an app pickled by 0.1.0
            address=state["address"],
            timeout=state["timeout"],
            result_ttl=state["result_ttl"],
            keys=state["keys"],
        )


class Task(Generic[P, R]):
    """A registered task.  Calling it runs the function here; ``delay`` runs it on a worker.

    Made by :meth:`App.task`.

    Parameters:
        app: the app it sends through.
        fn: the function.
        name: the task's name, the same on every process.
        options: its settings.
    """

    def __init__(self, app: App, fn: Callable[..., R], name: str, options: TaskOptions) -> None:
        if options.rate_limit is not None:
            parse_rate(options.rate_limit)  # a clear error now, not on the scheduler later
        self.app = app
        self.fn = fn
        self.name = name
        self.options = options
        self._call = _TaskCall(fn, options.bind, options.autoretry_for)
        self._run_options: RunOptions | None = None  # built on first send
        functools.update_wrapper(self, fn)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the function here and now, as Celery does (a bound task gets its request)."""
        if self.options.bind:
            return self.fn(BoundTask(self.name, current_request()), *args, **kwargs)
        return self.fn(*args, **kwargs)

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> AsyncResult[R]:
        """Send the task; return once the scheduler has accepted it.

        Parameters:
            args, kwargs: the function's arguments.
        """
        return self.apply_async(args, kwargs)

    def apply_async(
        self,
        args: tuple[Any, ...] | list[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        task_id: str | None = None,
        countdown: float | None = None,
        eta: datetime | float | None = None,
        expires: datetime | float | None = None,
        queue: str | None = None,
        priority: int | None = None,
        retries: int | None = None,
    ) -> AsyncResult[R]:
        """Send the task with per-call options (Celery's names and meanings).

        ``eta`` and a ``datetime`` ``expires`` are moments (a naive datetime is
        UTC); ``countdown`` and a number for ``expires`` are seconds from now.
        A ``task_id`` makes sending idempotent: the same id runs once.

        Parameters:
            args, kwargs: the function's arguments.
            task_id: the id (default: a fresh one).
            countdown: seconds from now before it may start.
            eta: the moment before which it does not start.
            expires: the moment (or seconds from now) after which it is
                cancelled instead of run.
            queue, priority, retries: override the task's options for this call.
        """
        from celeriac.tasks.result import AsyncResult

        submission = self.submission(
            tuple(args),
            kwargs or {},
            task_id=task_id,
            not_before=_moment(eta, countdown),
            expires=_moment(expires, None, relative=True),
            queue=queue,
            priority=priority,
            retries=retries,
        )
        hold = not self.options.ignore_result
        held = self.app.engine.enqueue([submission], timeout=self.app.timeout, hold=hold)
        result: AsyncResult[R] = AsyncResult(submission.key, app=self.app)
        if held:
            result._held = held[0]
        return result

    def s(self, *args: Any, **kwargs: Any) -> Signature[R]:
        """A signature: this task with (partial) arguments, for chains, groups and chords."""
        from celeriac.tasks.canvas import Signature

        return Signature(self, args, kwargs)

    def si(self, *args: Any, **kwargs: Any) -> Signature[R]:
        """An immutable signature: a chain will not prepend the previous result."""
        from celeriac.tasks.canvas import Signature

        return Signature(self, args, kwargs, immutable=True)

    def signature(
        self,
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> Signature[R]:
        """A signature with ``args``, ``kwargs`` and ``apply_async`` options (Celery's form)."""
        from celeriac.tasks.canvas import signature

        return signature(self, args, kwargs, **options)

    subtask = signature

    def map(self, items: Iterable[Any]) -> XMap[R]:
        """One task that runs this function on each item and returns the list."""
        from celeriac.tasks.maps import xmap

        return xmap(self, items)

    def starmap(self, items: Iterable[Iterable[Any]]) -> XMap[R]:
        """As :meth:`map`, each item unpacked as the arguments."""
        from celeriac.tasks.maps import xstarmap

        return xstarmap(self, items)

    def chunks(self, items: Iterable[Iterable[Any]], n: int) -> Chunks:
        """A group of ``starmap`` tasks over ``items`` in chunks of ``n``."""
        from celeriac.tasks.maps import chunks

        return chunks(self, items, n)

    def submission(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        task_id: str | None = None,
        not_before: float | None = None,
        expires: float | None = None,
        queue: str | None = None,
        priority: int | None = None,
        retries: int | None = None,
    ) -> Submission:
        """What one call sends: this task's options, the call's arguments and overrides.

        Parameters:
            args, kwargs: the arguments (they may hold ``TaskRef``s: a canvas's links).
            task_id: the id (default: a fresh one from the engine).
            not_before, expires: UNIX times (``None``: none).
            queue, priority, retries: per-call overrides (``None``: the task's).
        """
        options = self.run_options()
        if queue or priority is not None or retries is not None:
            options = dataclasses.replace(
                options,
                queue=queue or options.queue,
                priority=options.priority if priority is None else priority,
                retries=options.retries if retries is None else retries,
            )
        return Submission(
            fn=self._call,
            args=args,
            kwargs=kwargs,
            key=task_id or self.app.engine.new_key(self.name),
            name=self.name,
            options=options,
            eta=not_before,
            expires=expires,
        )

    def run_options(self) -> RunOptions:
        """How the scheduler handles each run of this task: its options, as the engine takes them.

        Built once (a ``.delay()`` sends the same options every time), and
        again if the app's ``result_ttl`` changes.
        """
        opts = self.options
        ttl = self.app.result_ttl if opts.result_ttl is None else opts.result_ttl
        options = self._run_options
        if options is None or options.result_ttl != ttl:
            options = self._run_options = RunOptions(
                queue=opts.queue,
                priority=opts.priority,
                retries=opts.retries,
                retry_on_error=False,  # Celery semantics: only autoretry_for or self.retry
                retry_jitter=opts.retry_jitter,
                backoff_max=opts.retry_backoff_max,
                result_ttl=ttl,
                retry_backoff=float(opts.retry_backoff),
                time_limit=opts.time_limit,
                soft_time_limit=opts.soft_time_limit,
                rate_limit=opts.rate_limit,
                ignore_result=opts.ignore_result,
            )
        return options

    def __repr__(self) -> str:
        return f"<Task {self.name}>"


class _TaskCall:
    """What travels to the worker: the function, plus ``bind`` and ``autoretry_for``."""

    def __init__(
        self, fn: Callable[..., Any], bind: bool, autoretry_for: tuple[type[BaseException], ...]
    ) -> None:
        self.fn = fn
        self.bind = bind
        self.autoretry_for = autoretry_for
        self.__name__ = getattr(fn, "__name__", "task")

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """By name when the worker can import the task's module; else by value."""
        module_name = getattr(self.fn, "__module__", None) or "__main__"
        if (
            module_name != "__main__"
            and module_name not in cloudpickle.list_registry_pickle_by_value()
        ):
            module = sys.modules.get(module_name)
            target = _lookup(module, self.fn.__qualname__) if module else None
            if isinstance(target, Task) and target.fn is self.fn:
                return _task_call_by_name, (module_name, self.fn.__qualname__)
        return _TaskCall, (self.fn, self.bind, self.autoretry_for)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            if self.bind:
                request = current_request()
                return self.fn(BoundTask(self.__name__, request), *args, **kwargs)
            return self.fn(*args, **kwargs)
        except Retry:
            raise
        except self.autoretry_for as exc:
            raise Retry(exc) from exc


def _lookup(module: Any, qualname: str) -> Any:
    target = module
    for part in qualname.split("."):
        target = getattr(target, part, None)
    return target


def _task_call_by_name(module_name: str, qualname: str) -> _TaskCall:
    """On the worker: the task as its module defines it (``-A module`` imports it)."""
    task = _lookup(importlib.import_module(module_name), qualname)
    if not isinstance(task, Task):
        raise LookupError(f"{module_name}.{qualname} is not a celeriac task on this worker")
    return task._call


class BoundTask:
    """``self`` of a ``bind=True`` task: its request, and ``retry``."""

    def __init__(self, name: str, request: TaskRequest | None) -> None:
        self.name = name
        self.request = request or TaskRequest("local", name, 0)

    def retry(
        self, exc: BaseException | None = None, countdown: float | None = None, **_: Any
    ) -> Retry:
        """Raise :class:`Retry`: the scheduler runs the task again if retries are left."""
        raise Retry(exc, countdown)


def _qualified_name(fn: Callable[..., Any]) -> str:
    module = getattr(fn, "__module__", None) or "__main__"
    return f"{module}.{getattr(fn, '__qualname__', getattr(fn, '__name__', 'task'))}"


def _moment(
    when: datetime | float | None, seconds: float | None, *, relative: bool = False
) -> float | None:
    """A UNIX time from a datetime (naive = UTC) or, when relative, seconds from now."""
    if isinstance(when, datetime):
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return when.timestamp()
    if when is not None:
        return time.time() + float(when) if relative else float(when)
    if seconds is not None:
        return time.time() + float(seconds)
    return None


__all__ = ["App", "BoundTask", "Task", "TaskOptions"]
