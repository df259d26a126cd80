"""Futures inside task arguments: found on the client, filled in on the worker.

A future anywhere in a task's arguments (nested in lists, tuples, sets and
dicts, as in Dask) becomes a dependency: the client swaps it for a
:class:`TaskRef` naming its key, and the worker swaps each ref for the
dependency's value before calling the function.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any


class TaskRef:
    """Stands in for a dependency's value while the task travels.

    ``key`` is the dependency's task key, listed in the task's ``deps``.
    """

    __slots__ = ("key",)

    def __init__(self, key: str) -> None:
        self.key = key

    def __reduce__(self) -> tuple[type, tuple[str]]:
        return TaskRef, (self.key,)

    def __repr__(self) -> str:
        return f"TaskRef({self.key!r})"


#: What a ``swap`` function returns for "leave this object alone".
KEEP = object()


#: Types that can hold no Future and pickle the same with plain pickle.
PLAIN_TYPES = frozenset({int, float, str, bytes, bool, type(None), complex})


def is_plain(obj: tuple[tuple[Any, ...], dict[str, Any]]) -> bool:
    """True when ``(args, kwargs)`` holds only plain scalars (no walk, no cloudpickle needed)."""
    args, kwargs = obj
    return all(type(a) in PLAIN_TYPES for a in args) and all(
        type(v) in PLAIN_TYPES for v in kwargs.values()
    )


def replace(obj: Any, swap: Callable[[Any], Any]) -> Any:
    """Rebuild ``obj`` with every leaf for which ``swap`` does not return KEEP replaced.

    ``swap`` sees every object, containers included, before it is walked; what
    it returns (unless :data:`KEEP`) replaces that object whole.  Only builtin
    containers (exactly ``list``, ``tuple``, ``set``, ``frozenset``, ``dict``;
    not subclasses) are walked, dict values but not keys; anything else is a
    leaf.  Containers without a replacement inside are returned as they are
    (no copy).
    """
    swapped = swap(obj)
    if swapped is not KEEP:
        return swapped
    kind = type(obj)
    if kind in (list, tuple, set, frozenset):
        items = [replace(item, swap) for item in obj]
        if all(new is old for new, old in zip(items, obj, strict=True)):
            return obj
        return kind(items)
    if kind is dict:
        values = {k: replace(v, swap) for k, v in obj.items()}
        if all(values[k] is v for k, v in obj.items()):
            return obj
        return values
    return obj


def resolve(obj: Any, values: Mapping[str, Any]) -> Any:
    """Replace each :class:`TaskRef` in ``obj`` with its value.

    ``values`` maps each dependency key to its (unpickled) value; a ref to a
    key it lacks raises ``KeyError``.
    """
    return replace(obj, lambda o: values[o.key] if type(o) is TaskRef else KEEP)


def import_callable(path: str) -> Any:
    """``"package.module:function"`` (or ``package.module.function``) -> the object."""
    import importlib

    module_name, _, attribute = path.partition(":") if ":" in path else path.rpartition(".")
    if not module_name or not attribute:
        raise ValueError(f"{path!r} must look like 'package.module:function'")
    target: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        target = getattr(target, part)
    return target


class CallableRef:
    """A function named by its import path; it pickles as "import this on the worker".

    Lets the scheduler build a task from a schedule file without importing
    user code itself.  ``path`` is what :func:`import_callable` takes.
    """

    __slots__ = ("path",)

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Callable[[str], Any], tuple[str]]:
        return import_callable, (self.path,)
