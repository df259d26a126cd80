"""A Dask graph as Celeriac tasks: the plan the client sends in one batch, and what a worker runs.

Dask does the reading: :func:`plan_graph` materialises an expression
(``__dask_graph__``), turns legacy tuple tasks into task-spec nodes with
``dask._task_spec.convert_legacy_graph``, culls to the requested keys and
orders the nodes with ``dask.order.order``.  What is left here is the mapping
onto the engine: each ``Task`` or ``DataNode`` becomes one Celeriac task that
runs :func:`run_node` on a worker, its dependencies passed as
:class:`~celeriac.wire.refs.TaskRef` values the worker fills in; an ``Alias``
becomes no task at all (whoever needs it is pointed at its target's key).
A key the graph needs but does not define must be a future this client holds.

Imports dask at module level: the client imports this module only when a
Dask graph arrives, so ``import celeriac`` never imports dask.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from dask._task_spec import (
    Alias,
    GraphNode,
    Task,
    _execute_subgraph,
    convert_legacy_graph,
    cull,
    parse_input,
)
from dask._task_spec import TaskRef as DaskRef
from dask.order import order
from dask.utils import key_split

from celeriac.client.dask_keys import celeriac_key, flatten
from celeriac.wire.refs import TaskRef


@dataclass(slots=True)
class NodeTask:
    """One node of the graph as the Celeriac task that runs it.

    Parameters:
        key: the Celeriac key (:func:`~celeriac.client.dask_keys.celeriac_key`).
        name: the task's name, Dask's key prefix (``sum-aggregate``).
        node: the task-spec node the worker calls.
        deps: each Dask key the node reads, mapped to a ref to the Celeriac key holding it.
    """

    key: str
    name: str
    node: GraphNode
    deps: dict[Any, TaskRef]


@dataclass(slots=True)
class GraphPlan:
    """What to send for a graph: its tasks in Dask's order, and where each requested key lands.

    Parameters:
        tasks: the tasks to submit, dependencies first.
        outputs: each requested Dask key, mapped to the Celeriac key of its value.
    """

    tasks: list[NodeTask] = field(default_factory=list)
    outputs: dict[Any, str] = field(default_factory=dict)


def plan_graph(
    dsk: Any, keys: Any, held: Callable[[str], bool], *, look_for_futures: bool = True
) -> GraphPlan:
    """Turn a Dask graph into the Celeriac tasks that compute ``keys``.

    Parameters:
        dsk: a dict of legacy tasks or task-spec nodes, a ``HighLevelGraph``,
            or anything with ``__dask_graph__`` (a Dask expression).
        keys: the requested keys, nested in lists as Dask nests them.
        held: whether this client holds a future for a Celeriac key: such a
            key is not computed again (a persisted result, a future in the graph).
        look_for_futures: walk task arguments for futures Dask did not see
            (``False`` when this client holds none: there can be none to find).

    Raises ``ValueError`` for a key the graph needs, does not define and no
    future of this client holds, for two Dask keys with one Celeriac key, and
    for an alias cycle.
    """
    graph = _materialise(dsk, look_for_futures)
    requested = list(dict.fromkeys(flatten(keys)))
    graph = cull(graph, [k for k in requested if k in graph])
    resolved = _resolve_aliases(graph)

    def ckey_of(dask_key: Any) -> str:
        target = resolved.get(dask_key, dask_key)
        ckey = celeriac_key(target)
        if target not in graph and not held(ckey):
            raise ValueError(
                f"the graph needs {target!r}, which it does not define and which is "
                "not the key of a future this client holds"
            )
        return ckey

    plan = GraphPlan(outputs={k: ckey_of(k) for k in requested})
    seen: dict[str, Any] = {}
    priorities = order(graph)
    for dask_key in sorted(graph, key=priorities.__getitem__):
        node = graph[dask_key]
        if isinstance(node, Alias):
            continue
        ckey = celeriac_key(dask_key)
        if seen.setdefault(ckey, dask_key) != dask_key:
            raise ValueError(f"Dask keys {seen[ckey]!r} and {dask_key!r} both map to {ckey!r}")
        if held(ckey):
            continue  # already on the cluster (persisted): depend on it, do not recompute
        deps = {dep: TaskRef(ckey_of(dep)) for dep in node.dependencies}
        plan.tasks.append(NodeTask(ckey, key_split(dask_key), node, deps))
    return plan


def _materialise(dsk: Any, look_for_futures: bool) -> dict[Any, GraphNode]:
    """Task-spec nodes by key, with Celeriac futures in task arguments made dependencies."""
    if not isinstance(dsk, Mapping):
        dsk = dsk.__dask_graph__()
    graph: dict[Any, GraphNode] = convert_legacy_graph(dsk)
    if look_for_futures:
        for key, node in graph.items():
            graph[key], _ = _lift_futures(node)
    return graph


def _lift_futures(node: GraphNode) -> tuple[GraphNode, set[str]]:
    """``node`` with the futures in its arguments made dependencies; the keys of those futures.

    ``dask.delayed(f)(future)`` leaves a future that is not a Dask ``TaskRef``
    as a plain argument, and Dask may fuse that task into a subgraph
    (``_execute_subgraph``) before we see it.  Dask's own ``parse_input`` turns
    such an argument into a dependency; a subgraph also gets the key as an input.
    """
    if type(node) is not Task:
        return node, set()
    if node.func is _execute_subgraph:
        inner, outkey, inkeys, *deps = node.args
        found: set[str] = set()
        lifted = {}
        for key, inner_node in inner.items():
            lifted[key], keys = _lift_futures(inner_node)
            found |= keys
        if not found:
            return node, found
        extra = sorted(found.difference(inkeys))
        refs = [DaskRef(key) for key in extra]
        args = (lifted, outkey, (*inkeys, *extra), *deps, *refs)
        return Task(node.key, _execute_subgraph, *args), found
    found = set(_future_keys((node.args, node.kwargs)))
    if not found:
        return node, found
    parsed = [parse_input(a) for a in node.args]
    kwargs: dict[str, Any] = {k: parse_input(v) for k, v in node.kwargs.items()}
    return Task(node.key, node.func, *parsed, **kwargs), found


def _future_keys(obj: Any) -> Iterator[str]:
    """Keys of the futures (anything with ``__dask_future__``) inside builtin containers."""
    kind = type(obj)
    if kind in (list, tuple, set, frozenset):
        for item in obj:
            yield from _future_keys(item)
    elif kind is dict:
        for item in obj.values():
            yield from _future_keys(item)
    elif getattr(obj, "__dask_future__", False) is True:
        yield obj.key


def _resolve_aliases(graph: dict[Any, GraphNode]) -> dict[Any, Any]:
    """Each alias key, mapped to the key at the end of its chain of aliases."""
    resolved: dict[Any, Any] = {}
    for key, first in graph.items():
        node: GraphNode | None = first
        chain = []
        while isinstance(node, Alias) and key not in resolved:
            chain.append(key)
            if len(chain) > len(graph):
                raise ValueError(f"the graph's aliases form a cycle through {key!r}")
            key = node.target
            node = graph.get(key)
        end = resolved.get(key, key)
        for alias in chain:
            resolved[alias] = end
    return resolved


def run_node(node: GraphNode, values: dict[Any, Any]) -> Any:
    """Run one task-spec node on a worker; ``values`` maps each Dask key it reads to its value.

    Parameters:
        node: a ``Task`` or ``DataNode``.
        values: the dependencies' values (the engine filled in the refs).
    """
    return node(values)
