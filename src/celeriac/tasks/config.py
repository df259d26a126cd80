"""Celery's ``app.conf`` and its broker URLs: what a Celery program configures, read here.

A Celery program sets its app up with ``Celery(main, broker=..., backend=...,
include=[...], **settings)``, ``app.conf.update(...)`` and
``app.config_from_object(...)``.  :data:`SETTINGS` is the one table of the
Celery setting names Celeriac reads, each with what it means here; any other
name is kept (so the program can read it back) and warned about once, since
Celeriac does nothing with it.  Pure: no sockets, no app.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from celeriac.tasks.routes import NO_ROUTES, Routes
from celeriac.wire.protocol import parse_rate

ONE_DAY = 86400.0

#: Broker schemes of Celery's transports: Celeriac has no broker, so such a URL
#: names nothing here (tasks go to the Celeriac scheduler instead).
CELERY_TRANSPORTS = frozenset(
    {"amqp", "amqps", "pyamqp", "librabbitmq", "redis", "rediss", "sentinel", "sqs",
     "memory", "filesystem", "sqla", "sqlalchemy", "mongodb", "zookeeper", "gcpubsub"}
)  # fmt: skip


#: The Celery settings with a Celeriac meaning, and that meaning (docs/tasks.md
#: lists the same); ``App`` applies each.
SETTINGS: dict[str, str] = {
    "broker_url": "the scheduler's address, if a tcp://, ipc:// or celeriac:// URL",
    "result_backend": "ignored with a warning: the scheduler keeps every outcome",
    "result_expires": "seconds (or a timedelta) outcomes are kept: the app's result_ttl",
    "include": "modules imported when the app first looks a task up by name",
    "imports": "the same as include",
    "task_default_queue": "the queue of a task that names none and matches no route",
    "task_routes": "queue and priority by task name (names, globs, regexes, router functions)",
    "task_default_priority": "the priority of a task that gives none",
    "task_time_limit": "the hard time limit of a task that gives none, in seconds",
    "task_soft_time_limit": "the soft time limit of a task that gives none, in seconds",
    "task_default_rate_limit": "the rate limit of a task that gives none (cluster-wide, per name)",
    "task_ignore_result": "ignore_result of a task that gives none",
    "task_acks_late": "accepted: a task whose worker process dies runs again either way",
    "task_reject_on_worker_lost": "accepted: the same",
}


@dataclass(frozen=True, slots=True)
class TaskDefaults:
    """What an app's tasks get for each option they do not give: its settings, applied.

    A new value (never changed in place) each time a setting changes, so a
    task tells by identity whether the options it built are still current.

    Parameters:
        queue: ``task_default_queue`` (Celeriac's workers serve ``default``).
        routes: ``task_routes``, parsed.
        priority, time_limit, soft_time_limit, rate_limit, ignore_result:
            ``task_default_priority``, ``task_time_limit``, ... .
        result_ttl: seconds outcomes are kept (``result_expires``, ``App(result_ttl=)``).
    """

    queue: str = "default"
    routes: Routes = NO_ROUTES
    priority: int = 0
    time_limit: float | None = None
    soft_time_limit: float | None = None
    rate_limit: str | None = None
    ignore_result: bool = False
    result_ttl: float = ONE_DAY


def scheduler_address(url: str, what: str) -> str | None:
    """The scheduler address a Celery ``broker=`` URL names, or ``None`` (warned) for a transport.

    ``tcp://`` and ``ipc://`` are Celeriac's own; ``celeriac://host:port`` is
    ``tcp://host:port``.  A Celery transport (``redis://``, ``amqp://``, ...)
    is ignored with a warning that says where tasks go instead.

    Raises:
        ValueError: any other scheme, or something that is not a URL.
    """
    if not isinstance(url, str) or "://" not in url:
        raise ValueError(f"{what}={url!r} is not a URL; use tcp://HOST:PORT or ipc://PATH")
    scheme, rest = url.split("://", 1)
    scheme = scheme.lower().split("+", 1)[0]  # sqla+postgresql://, sentinel+...
    if scheme in ("tcp", "ipc"):
        return url
    if scheme == "celeriac":
        return f"tcp://{rest}"
    if scheme in CELERY_TRANSPORTS or scheme == "rpc":
        warnings.warn(
            f"{what}={url!r} ignored: Celeriac has no broker; tasks go to the Celeriac "
            "scheduler at address= (or $CELERIAC_ADDRESS, else tcp://127.0.0.1:8786)",
            stacklevel=4,
        )
        return None
    raise ValueError(
        f"{what}={url!r}: unknown scheme {scheme!r}; use tcp://, ipc:// or celeriac://"
    )


def seconds(name: str, value: Any) -> float:
    """A duration setting as seconds (a number or a ``timedelta``), or a clear error."""
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"{name} must be positive seconds or a timedelta, not {value!r}")
    return float(value)


def optional_seconds(name: str, value: Any) -> float | None:
    """A duration setting that may be ``None`` (no limit)."""
    return None if value is None else seconds(name, value)


def queue_name(name: str, value: Any) -> str:
    """A queue name: a non-empty string."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a queue name, not {value!r}")
    return value


def integer(name: str, value: Any) -> int:
    """An int setting (a priority), or a clear error."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int, not {value!r}")
    return value


def flag(name: str, value: Any) -> bool:
    """A boolean setting, or a clear error."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, not {value!r}")
    return value


def rate_limit(name: str, value: Any) -> str | None:
    """A rate limit (``"10/s"``, ``"100/m"``) or ``None``, checked now."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a rate like '10/s' or '100/m', not {value!r}")
    parse_rate(value)
    return value


def redelivery(name: str, value: Any) -> bool:
    """``acks_late``/``reject_on_worker_lost``: a flag; ``False`` is warned about.

    Celeriac's scheduler runs again a task whose worker process died (up to
    ``--allowed-failures`` times), which is Celery's ``acks_late=True`` with
    ``reject_on_worker_lost=True``; it cannot lose such a task instead.
    """
    if not flag(name, value):
        warnings.warn(
            f"{name}=False: Celeriac still runs again a task whose worker process died "
            "(up to the scheduler's --allowed-failures), as Celery's acks_late with "
            "reject_on_worker_lost does",
            stacklevel=5,
        )
    return value


#: The settings that are a default of every task: the field of
#: :class:`TaskDefaults` each sets, and how its value is read.
TASK_DEFAULTS: dict[str, tuple[str, Callable[[str, Any], Any]]] = {
    "task_default_queue": ("queue", queue_name),
    "task_routes": ("routes", Routes.parse),
    "task_default_priority": ("priority", integer),
    "task_time_limit": ("time_limit", optional_seconds),
    "task_soft_time_limit": ("soft_time_limit", optional_seconds),
    "task_default_rate_limit": ("rate_limit", rate_limit),
    "task_ignore_result": ("ignore_result", flag),
}


def module_names(name: str, value: Any) -> tuple[str, ...]:
    """``include``/``imports``: a module name or an iterable of them."""
    names = (value,) if isinstance(value, str) else tuple(value)
    if not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"{name} must be module names, not {value!r}")
    return names


class Conf(Mapping[str, Any]):
    """``app.conf``: Celery's settings by name, as attributes or items, with ``update``.

    Each set goes through ``apply(name, value)`` (the app's), which checks it
    and makes it take effect; a name outside :data:`SETTINGS` is kept and
    warned about once per name.
    """

    def __init__(self, apply: Any) -> None:
        object.__setattr__(self, "_values", {})
        object.__setattr__(self, "_apply", apply)
        object.__setattr__(self, "_warned", set())

    def update(
        self, mapping: Mapping[str, Any] | Iterable[tuple[str, Any]] = (), **kw: Any
    ) -> None:
        """Set every ``name=value`` given (as ``dict.update`` takes them)."""
        for name, value in [*dict(mapping).items(), *kw.items()]:
            self[name] = value

    def __setitem__(self, name: str, value: Any) -> None:
        if name in SETTINGS:
            self._apply(name, value)
        elif name not in self._warned:
            self._warned.add(name)
            warnings.warn(
                f"Celery setting {name!r} has no meaning in Celeriac and is ignored "
                f"(the settings it reads: {', '.join(sorted(SETTINGS))})",
                stacklevel=3,
            )
        self._values[name] = value

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"app.conf has no setting {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __repr__(self) -> str:
        return f"<Conf {self._values!r}>"


__all__ = [
    "CELERY_TRANSPORTS",
    "ONE_DAY",
    "SETTINGS",
    "TASK_DEFAULTS",
    "Conf",
    "TaskDefaults",
    "flag",
    "integer",
    "module_names",
    "optional_seconds",
    "queue_name",
    "rate_limit",
    "redelivery",
    "scheduler_address",
    "seconds",
]
