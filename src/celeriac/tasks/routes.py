"""Celery's ``task_routes``: which queue (and priority) a task goes to, by its name.

The setting takes what Celery's takes: a dict from task names to routes, with
glob patterns (``"feeds.*"``) and compiled regexes as keys; a router function
``router(name, args, kwargs, options, task=None, **kw)`` returning a route or
``None``; an object with Celery's old ``route_for_task(name, args, kwargs)``;
the import path of either (``"proj.routers.route"``); or a list of these,
asked in order until one answers.  A route is a queue name or a dict with
``queue`` and ``priority``.

A route names a destination in Celery's AMQP terms too (``exchange``,
``routing_key``, ...); Celeriac has no exchanges, the queue is the whole
destination, so those keys are dropped with a warning, once each.  Any other
key is refused.  Pure: no app, no sockets.
"""

from __future__ import annotations

import fnmatch
import importlib
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

#: Route keys that name an AMQP destination: meaningless without exchanges.
AMQP_KEYS = frozenset({"exchange", "exchange_type", "routing_key", "delivery_mode"})


@dataclass(frozen=True, slots=True)
class Route:
    """Where a route sends a task; ``None``: the route does not say."""

    queue: str | None = None
    priority: int | None = None


def route_of(value: Any, where: str, warned: set[str]) -> Route:
    """A router's answer (a queue name or a dict) as a :class:`Route`, or a clear error.

    Parameters:
        value: what the setting or the router gave.
        where: what gave it, for messages.
        warned: the AMQP keys already warned about (each is warned about once).
    """
    if isinstance(value, str):
        return Route(queue=value)
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: a route is a queue name or a dict, not {value!r}")
    for key in sorted(AMQP_KEYS & set(value)):
        if key not in warned:
            warned.add(key)
            warnings.warn(
                f"{where}: route key {key!r} ignored: Celeriac has no exchanges; "
                "the queue is where the task goes",
                stacklevel=4,
            )
    unknown = sorted(set(value) - AMQP_KEYS - {"queue", "priority"})
    if unknown:
        raise ValueError(f"{where}: unknown route key(s) {unknown}; a route has queue, priority")
    queue, priority = value.get("queue"), value.get("priority")
    if queue is not None and (not isinstance(queue, str) or not queue):
        raise ValueError(f"{where}: a route's queue is a queue name, not {queue!r}")
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
        raise ValueError(f"{where}: a route's priority is an int, not {priority!r}")
    return Route(queue, priority)


class MapRouter:
    """A dict of routes: exact names first, then patterns (globs, regexes) in order."""

    def __init__(self, routes: Mapping[Any, Any], warned: set[str]) -> None:
        self.names: dict[str, Route] = {}
        self.patterns: list[tuple[re.Pattern[str], Route]] = []
        for key, value in routes.items():
            route = route_of(value, f"task_routes[{key!r}]", warned)
            if isinstance(key, re.Pattern):
                self.patterns.append((key, route))
            elif isinstance(key, str) and "*" in key:
                self.patterns.append((re.compile(fnmatch.translate(key)), route))
            elif isinstance(key, str):
                self.names[key] = route
            else:
                raise ValueError(f"task_routes: a key is a name, a glob or a regex, not {key!r}")

    def __call__(self, name: str) -> Route | None:
        """The route for tasks called ``name``, if any key matches it."""
        route = self.names.get(name)
        if route is not None:
            return route
        for pattern, route in self.patterns:
            if pattern.match(name):
                return route
        return None


class Routes:
    """The parsed ``task_routes``: its routers in order, maps and functions.

    When every router is a map, the route depends on the task's name alone
    (:attr:`by_name_only`), so a task works it out once; a router function
    is asked at each call, with the call's arguments.
    """

    def __init__(
        self,
        routers: tuple[MapRouter | Callable[..., Any] | str, ...] = (),
        warned: set[str] | None = None,
    ) -> None:
        self._routers = list(routers)
        self._warned = set() if warned is None else warned
        self.by_name_only = all(isinstance(r, MapRouter) for r in routers)
        #: A router function is asked at each call (``not by_name_only``).
        self.per_call = not self.by_name_only

    @classmethod
    def parse(cls, name: str, value: Any) -> Routes:
        """``task_routes`` as Celery takes it (see the module docstring); ``None``: none.

        Router paths are imported when first asked, as Celery imports them.
        """
        if value is None:
            return cls()
        items = list(value) if isinstance(value, list | tuple) else [value]
        routers: list[MapRouter | Callable[..., Any] | str] = []
        warned: set[str] = set()
        for item in items:
            if isinstance(item, Mapping):
                routers.append(MapRouter(item, warned))
            elif isinstance(item, str) or callable(item) or hasattr(item, "route_for_task"):
                routers.append(item)
            else:
                raise ValueError(
                    f"{name}: a router is a dict, a function or its path, not {item!r}"
                )
        return cls(tuple(routers), warned)

    def __bool__(self) -> bool:
        return bool(self._routers)

    def for_name(self, name: str) -> Route | None:
        """The route of a task called ``name``, when :attr:`by_name_only`."""
        for router in self._routers:
            assert isinstance(router, MapRouter)
            route = router(name)
            if route is not None:
                return route
        return None

    def route(
        self,
        name: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: dict[str, Any],
        task: Any = None,
    ) -> Route | None:
        """The first route any router gives for this call, as Celery asks them.

        Parameters:
            name: the task's name.
            args, kwargs: the call's arguments.
            options: the call's options (``queue``, ``priority``, ...).
            task: the task, passed to router functions as ``task=``.
        """
        for index, router in enumerate(self._routers):
            if isinstance(router, MapRouter):
                route = router(name)
            else:
                if isinstance(router, str):
                    router = self._routers[index] = _import_router(router)
                answer = _ask(router, name, args, kwargs, options, task)
                route = (
                    None if answer is None else route_of(answer, f"router {router!r}", self._warned)
                )
            if route is not None:
                return route
        return None


def _ask(
    router: Any,
    name: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    options: dict[str, Any],
    task: Any,
) -> Any:
    if hasattr(router, "route_for_task"):  # Celery's router classes before 4.0
        return router.route_for_task(name, args, kwargs)
    return router(name, args, kwargs, options, task=task)


def _import_router(path: str) -> Any:
    """``"module:attr"`` or ``"module.attr"``; a class with ``route_for_task`` is instantiated."""
    module, sep, attribute = path.partition(":")
    if not sep:
        module, _, attribute = path.rpartition(".")
    try:
        router = getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ValueError(f"task_routes: cannot import router {path!r}: {exc}") from exc
    if isinstance(router, type) and hasattr(router, "route_for_task"):
        router = router()
    return router


NO_ROUTES = Routes()

__all__ = ["AMQP_KEYS", "NO_ROUTES", "MapRouter", "Route", "Routes", "route_of"]
