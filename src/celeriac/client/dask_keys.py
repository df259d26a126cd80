"""Dask keys as Celeriac keys, and Dask's nesting of requested keys (pure, no dask import).

A Dask key is a string or a tuple such as ``("x-abc", 0, 1)``; a Celeriac key
is a string.  :func:`celeriac_key` maps one to the other deterministically: a
string stays itself (so a Celeriac future's key, which Dask finds in a graph
through ``__dask_future__``, names the same task on both sides), anything else
becomes its ``repr``, readable on the dashboard as Dask would print it.
``keys`` arguments nest like Dask's: a key in, a value out; a list in, a list
out, nested lists too (a tuple is a key, never a nesting).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any


def celeriac_key(key: Any) -> str:
    """The Celeriac key standing for a Dask key.

    Parameters:
        key: a Dask key (a string, bytes, a number, or a tuple of these).
    """
    if type(key) is str:
        return key
    if isinstance(key, (tuple, bytes, int, float)):
        return repr(key)
    raise TypeError(f"{key!r} ({type(key).__name__}) is not a Dask key")


def flatten(keys: Any) -> Iterator[Any]:
    """Every key in ``keys`` (a key, or lists of keys nested to any depth), in order.

    Parameters:
        keys: what ``get`` was asked for.
    """
    if type(keys) is list:
        for item in keys:
            yield from flatten(item)
    else:
        yield keys


def repack(keys: Any, value_of: Callable[[Any], Any]) -> Any:
    """``keys`` with each key replaced by ``value_of(key)``, nested the same way.

    Parameters:
        keys: a key, or lists of keys nested to any depth.
        value_of: the value of one key.
    """
    if type(keys) is list:
        return [repack(item, value_of) for item in keys]
    return value_of(keys)
