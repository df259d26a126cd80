"""``Client.compute`` and ``Client.persist``: Dask collections in, futures or collections out.

Dask builds the graph (``dask.base.collections_to_expr``, ``FinalizeCompute``,
``optimize``) and rebuilds a persisted collection (``__dask_postpersist__``);
both end in :meth:`Client.get` with ``sync=False``, so a collection's whole
graph goes to the scheduler in one batch.  Imports dask: the client imports
this module only when it is called.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import dask
from dask._expr import FinalizeCompute
from dask.base import collections_to_expr

from celeriac.client.dask_keys import flatten

if TYPE_CHECKING:
    from celeriac.client.client import Client


def compute(
    client: Client,
    collections: Any,
    sync: bool,
    optimize_graph: bool,
    traverse: bool,
    options: dict[str, Any],
) -> Any:
    """What :meth:`Client.compute` returns: a future per collection, or the results.

    Parameters:
        client: the client that runs the graph.
        collections: a collection, or a list/tuple/set of them and other objects.
        sync: gather the results.
        optimize_graph: let Dask optimise first.
        traverse: wrap builtin containers in ``dask.delayed``, so the
            collections inside them are computed too.
        options: ``priority``, ``retries``, ``queue``.
    """
    single = not isinstance(collections, (list, tuple, set, frozenset))
    items = [collections] if single else list(collections)
    if traverse:
        items = [
            dask.delayed(a) if isinstance(a, (list, set, tuple, dict, Iterator)) else a
            for a in items
        ]
    variables = [a for a in items if dask.is_dask_collection(a)]
    by_key: dict[Any, Any] = {}
    names: list[Any] = []
    if variables:
        expr = FinalizeCompute(collections_to_expr(variables, optimize_graph)).optimize()
        names = list(flatten(expr.__dask_keys__()))
        futures = client.get(expr, names, sync=False, **options)
        by_key = dict(zip(names, futures, strict=True))
    found = iter(names)
    results = []
    for item in items:
        if dask.is_dask_collection(item):
            future = by_key[next(found)]
            item = future.result() if sync else future
        results.append(item)
    return results[0] if single else results


def persist(client: Client, collections: Any, optimize_graph: bool, options: dict[str, Any]) -> Any:
    """What :meth:`Client.persist` returns: the collections rebuilt on futures.

    Parameters:
        client: the client that runs the graph.
        collections: a collection, or a list/tuple/set of them.
        optimize_graph: let Dask optimise first.
        options: ``priority``, ``retries``, ``queue``.
    """
    single = not isinstance(collections, (list, tuple, set, frozenset))
    items = [collections] if single else list(collections)
    not_collections = [type(a).__name__ for a in items if not dask.is_dask_collection(a)]
    if not_collections:
        raise TypeError(f"persist() takes Dask collections, not {', '.join(not_collections)}")
    expr = collections_to_expr(items, optimize_graph).optimize()
    keys_each = expr.__dask_keys__()
    flat = list(flatten(keys_each))
    futures = dict(zip(flat, client.get(expr, flat, sync=False, **options), strict=True))
    rebuilt = []
    for collection, keys in zip(items, keys_each, strict=True):
        rebuild, extra = collection.__dask_postpersist__()
        rebuilt.append(rebuild({k: futures[k] for k in flatten(keys)}, *extra))
    return rebuilt[0] if single else rebuilt
