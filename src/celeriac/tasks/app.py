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
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, Never, ParamSpec, TypeVar, overload

from celeriac.client.engine import Engine, RunOptions, Submission
from celeriac.context import current_request
from celeriac.tasks.callables import BoundTask, TaskCall, task_call_by_name
from celeriac.tasks.commit import on_commit
from celeriac.tasks.config import (
    ONE_DAY,
    TASK_DEFAULTS,
    Conf,
    TaskDefaults,
    module_names,
    redelivery,
    scheduler_address,
    seconds,
)
from celeriac.tasks.current import SHARED, set_current_app
from celeriac.tasks.discovery import Packages, TaskModules
from celeriac.tasks.task_options import (
    TaskOptions,
    refuse_call_options,
    task_options,
)
from celeriac.wire.addresses import DEFAULT_ADDRESS, normalize

if TYPE_CHECKING:
    from celeriac.client import Client
    from celeriac.schedules import Schedule
    from celeriac.tasks.canvas import Signature
    from celeriac.tasks.canvas_base import Canvas
    from celeriac.tasks.maps import Chunks, XMap
    from celeriac.tasks.result import AsyncResult

P = ParamSpec("P")
R = TypeVar("R")


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
        set_as_current: make it the current app, which shared tasks use
            (:mod:`celeriac.tasks.current`), as Celery does.
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
        set_as_current: bool = True,
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
        self.keys = keys
        #: What its tasks get for the options they do not give (its settings, applied).
        self.defaults = TaskDefaults(result_ttl=result_ttl)
        self._tasks: dict[str, Task[Any, Any]] = {}
        self._modules = TaskModules()
        self._client: Client | None = None
        self._lock = threading.Lock()
        self.conf = Conf(self._apply_setting)
        given = {"broker_url": broker, "result_backend": backend, "include": include or None}
        self.conf.update({k: v for k, v in given.items() if v is not None}, **settings)
        if set_as_current:
            self.set_current()

    @property
    def result_ttl(self) -> float:
        """Seconds an outcome is kept, for tasks that set none (Celery's ``result_expires``)."""
        return self.defaults.result_ttl

    @result_ttl.setter
    def result_ttl(self, value: float) -> None:
        self.defaults = dataclasses.replace(self.defaults, result_ttl=value)

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
            self._modules.include(module_names(name, value))
        elif name in TASK_DEFAULTS:
            field, read = TASK_DEFAULTS[name]
            self.defaults = dataclasses.replace(self.defaults, **{field: read(name, value)})
        elif name in ("task_acks_late", "task_reject_on_worker_lost"):
            redelivery(name, value)  # what Celeriac does anyway; False is warned about
        else:  # a name added to SETTINGS must be applied here too
            raise AssertionError(f"setting {name!r} is in SETTINGS but not applied")

    @property
    def tasks(self) -> dict[str, Task[Any, Any]]:
        """The registered tasks by name, shared ones included, after :meth:`finalize`."""
        self.finalize()
        for name, shared in list(SHARED.items()):
            if name not in self._tasks:
                self._tasks[name] = Task(self, shared.fn, name, shared.options)
        return self._tasks

    def finalize(self) -> None:
        """Import the modules ``include``/``imports`` and :meth:`autodiscover_tasks` named.

        Called by every lookup by name (``app.tasks``); call it at a
        process's start to import them then.  Each is imported once; one
        that fails to import raises and is tried again on the next call.
        """
        self._modules.import_pending()

    def autodiscover_tasks(
        self,
        packages: Packages = None,
        related_name: str | None = "tasks",
        force: bool = False,
    ) -> None:
        """Import ``<package>.tasks`` of each package, lazily, as Celery does.

        Nothing is imported now unless ``force``: :meth:`finalize` (the first
        lookup by name) imports them.  A package without such a module is
        skipped.  Workers need none of it: each task names its module.

        Parameters:
            packages: package names, or a function returning them (read when
                they are imported); ``None``: Django's installed apps, when
                Django is configured (else none).
            related_name: the module to import in each (``None``: the package).
            force: import them now.
        """
        self._modules.discover(packages, related_name)
        if force:
            self.finalize()

    def set_current(self) -> None:
        """Make this the current app: the one shared tasks send through (see :mod:`.current`)."""
        set_current_app(self)

    #: Celery's ``set_default``: Celeriac has one current app per process, no separate default.
    set_default = set_current

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
            options: the fields of :class:`TaskOptions`, and Celery's names
                for some (``max_retries``, ``acks_late``); any other raises
                ``TypeError`` (:func:`~celeriac.tasks.task_options.task_options`).
        """

        def register(fn: Callable[P, R]) -> Task[P, R]:
            task: Task[P, R] = Task(self, fn, name or _qualified_name(fn), task_options(options))
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
            set_as_current=False,  # an app inside a task's arguments is not the worker's
        )


class Task(Generic[P, R]):
    """A registered task.  Calling it runs the function here; ``delay`` runs it on a worker.

    Made by :meth:`App.task` (or :func:`~celeriac.tasks.shared.shared_task`).

    Parameters:
        app: the app it sends through.
        fn: the function.
        name: the task's name, the same on every process.
        options: its settings.
    """

    def __init__(self, app: App, fn: Callable[..., R], name: str, options: TaskOptions) -> None:
        self.app = app
        self._define(fn, name, options)

    def _define(self, fn: Callable[..., R], name: str, options: TaskOptions) -> None:
        """Everything but the app (a shared task finds its app at each use)."""
        self.fn = fn
        self.name = name
        self.options = options
        self._call = TaskCall(fn, options.bind, options.autoretry_for, options.retry_policy())
        self._run_options: RunOptions | None = None  # built on first send
        self._built_from: TaskDefaults | None = None  # the app defaults it was built from
        functools.update_wrapper(self, fn)

    @property
    def max_retries(self) -> int:
        """Celery's name for ``options.retries``."""
        return self.options.retries

    @property
    def default_retry_delay(self) -> float:
        """Seconds a ``self.retry()`` without a countdown waits (Celery's 3 minutes by default)."""
        return self.options.default_retry_delay

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the function here and now, as Celery does (a bound task gets its request)."""
        if self.options.bind:
            request = current_request()
            return self.fn(BoundTask(self.name, request, self._call.retry), *args, **kwargs)
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
        link: Canvas | Sequence[Canvas] | None = None,
        link_error: Canvas | Sequence[Canvas] | None = None,
        **unknown: Never,
    ) -> AsyncResult[R]:
        """Send the task with per-call options (Celery's names and meanings).

        ``eta`` and a ``datetime`` ``expires`` are moments (a naive datetime is
        UTC); ``countdown`` and a number for ``expires`` are seconds from now.
        A ``task_id`` makes sending idempotent: the same id runs once.  Any
        other keyword raises ``TypeError`` here, saying why (mypy flags it too).

        Parameters:
            args, kwargs: the function's arguments.
            task_id: the id (default: a fresh one).
            countdown: seconds from now before it may start.
            eta: the moment before which it does not start.
            expires: the moment (or seconds from now) after which it is
                cancelled instead of run.
            queue, priority, retries: override the task's options for this call.
            link, link_error: callbacks, as a signature's (see ``docs/canvas.md``).
        """
        from celeriac.tasks.result import AsyncResult

        if unknown:
            raise refuse_call_options(f"{self.name}.apply_async", unknown)
        if link is not None or link_error is not None:
            sig = self.signature(
                args, kwargs, task_id=task_id, countdown=countdown, eta=eta, expires=expires,
                queue=queue, priority=priority, retries=retries, link=link, link_error=link_error,
            )  # fmt: skip
            return sig.apply_async()
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
        hold = not submission.options.ignore_result
        held = self.app.engine.enqueue([submission], timeout=self.app.timeout, hold=hold)
        result: AsyncResult[R] = AsyncResult(submission.key, app=self.app)
        if held:
            result._held = held[0]
        return result

    def delay_on_commit(self, *args: P.args, **kwargs: P.kwargs) -> None:
        """``delay`` once the current Django transaction commits; now, without Django.

        Returns ``None``, as Celery's does: the task is sent later (never, if
        the transaction rolls back), so there is no result yet.  See
        :mod:`celeriac.tasks.commit`.

        Parameters:
            args, kwargs: the function's arguments.
        """
        on_commit(functools.partial(self.apply_async, args, kwargs))

    def apply_async_on_commit(
        self,
        args: tuple[Any, ...] | list[Any] = (),
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> None:
        """``apply_async`` once the current Django transaction commits; now, without Django.

        The options are checked now, so a wrong one raises here, not at the commit.

        Parameters:
            args, kwargs: the function's arguments.
            options: ``apply_async``'s keywords.
        """
        wrong = {name: options[name] for name in options if name not in _CALL_OPTIONS}
        if wrong:
            raise refuse_call_options(f"{self.name}.apply_async_on_commit", wrong)
        on_commit(functools.partial(self.apply_async, args, kwargs, **options))

    def AsyncResult(self, task_id: str) -> AsyncResult[R]:
        """The result of ``task_id`` (Celery's ``task.AsyncResult(id)``), through this task's app.

        Parameters:
            task_id: the task's id (``result.id``).
        """
        from celeriac.tasks.result import AsyncResult

        return AsyncResult(task_id, app=self.app)

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

        A queue (and priority) comes from, first to last: the call, the
        task, the app's ``task_routes``, the app's defaults.

        Parameters:
            args, kwargs: the arguments (they may hold ``TaskRef``s: a canvas's links).
            task_id: the id (default: a fresh one from the engine).
            not_before, expires: UNIX times (``None``: none).
            queue, priority, retries: per-call overrides (``None``: the task's).
        """
        options = self.run_options()
        if self.app.defaults.routes.per_call:  # a router function: asked at each call
            queue, priority = self._routed(args, kwargs, queue, priority, retries)
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

    def _routed(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        queue: str | None,
        priority: int | None,
        retries: int | None,
    ) -> tuple[str | None, int | None]:
        """The call's queue and priority, from the routers where neither call nor task gave them."""
        opts = self.options
        if (queue or opts.queue) and (priority is not None or opts.priority is not None):
            return queue, priority
        given = {"queue": queue, "priority": priority, "retries": retries}
        route = self.app.defaults.routes.route(self.name, args, kwargs, given, task=self)
        if route is None:
            return queue, priority
        if not (queue or opts.queue):
            queue = route.queue
        if priority is None and opts.priority is None:
            priority = route.priority
        return queue, priority

    def run_options(self) -> RunOptions:
        """How the scheduler handles each run of this task: its options, as the engine takes them.

        Each option the task does not give is the app's (:class:`TaskDefaults`:
        its settings, and ``task_routes`` when they depend on the name only).
        Built once (a ``.delay()`` sends the same options every time), and
        again when the app's settings change.
        """
        defaults = self.app.defaults
        options = self._run_options
        if options is not None and self._built_from is defaults:
            return options
        opts = self.options
        route = defaults.routes.for_name(self.name) if defaults.routes.by_name_only else None
        routed_queue = route.queue if route else None
        routed_priority = route.priority if route else None
        options = RunOptions(
            queue=opts.queue or routed_queue or defaults.queue,
            priority=_first(opts.priority, routed_priority, defaults.priority),
            retries=opts.ceiling(),
            retry_on_error=False,  # Celery semantics: only autoretry_for or self.retry
            retry_jitter=opts.retry_jitter,
            backoff_max=opts.retry_backoff_max,
            result_ttl=_first(opts.result_ttl, defaults.result_ttl),
            retry_backoff=float(opts.retry_backoff),
            time_limit=_first(opts.time_limit, defaults.time_limit),
            soft_time_limit=_first(opts.soft_time_limit, defaults.soft_time_limit),
            rate_limit=_first(opts.rate_limit, defaults.rate_limit),
            ignore_result=_first(opts.ignore_result, defaults.ignore_result),
        )
        self._run_options, self._built_from = options, defaults
        return options

    def __repr__(self) -> str:
        return f"<Task {self.name}>"


#: The keywords ``apply_async`` takes (besides ``args`` and ``kwargs``).
_CALL_OPTIONS = frozenset(
    {"task_id", "countdown", "eta", "expires", "queue", "priority", "retries", "link", "link_error"}
)


def _first(*values: Any) -> Any:
    """The first value that is not ``None`` (the last one, if all are)."""
    for value in values:
        if value is not None:
            return value
    return values[-1]


#: The paths a call pickled by an earlier release names (``celeriac.app._TaskCall`` ...).
_TaskCall = TaskCall
_task_call_by_name = task_call_by_name


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
