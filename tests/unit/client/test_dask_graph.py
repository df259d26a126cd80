"""A Dask graph as the plan of Celeriac tasks (pure: no cluster, no socket)."""

from __future__ import annotations

import operator
from typing import Any

import pytest

dask = pytest.importorskip("dask")

from dask._task_spec import Alias, DataNode, Task, TaskRef  # noqa: E402

from celeriac.client.dask_graph import GraphPlan, plan_graph, run_node  # noqa: E402
from celeriac.wire import refs  # noqa: E402


class FakeFuture:
    """What Dask sees of a Celeriac future: the flag and the key."""

    __dask_future__ = True

    def __init__(self, key: str) -> None:
        self.key = key


def nothing_held(key: str) -> bool:
    return False


def run_plan(plan: GraphPlan, held: dict[str, Any] | None = None) -> dict[str, Any]:
    """Execute a plan the way the engine would: in order, refs filled from earlier results."""
    results = dict(held or {})
    for task in plan.tasks:
        results[task.key] = run_node(task.node, refs.resolve(task.deps, results))
    return results


def test_legacy_graph_in_dependency_order_with_nested_keys() -> None:
    dsk = {
        ("z", 0): (sum, ["x", "y"]),
        "y": (operator.add, "x", 10),
        "x": 1,
    }
    plan = plan_graph(dsk, [["y"], ("z", 0)], nothing_held)
    order = [t.key for t in plan.tasks]
    assert order.index("x") < order.index("y") < order.index("('z', 0)")
    assert plan.outputs == {"y": "y", ("z", 0): "('z', 0)"}
    assert [t.name for t in plan.tasks] == ["x", "y", "z"]
    results = run_plan(plan)
    assert results["('z', 0)"] == 12


def test_only_what_the_keys_need_is_planned() -> None:
    dsk = {"x": 1, "y": (operator.add, "x", 1), "unused": (operator.neg, "x")}
    plan = plan_graph(dsk, "y", nothing_held)
    assert {t.key for t in plan.tasks} == {"x", "y"}


def test_aliases_become_no_task() -> None:
    dsk = {
        "a": Task("a", operator.add, 1, 2),
        "b": Alias("b", "a"),
        "c": Alias("c", "b"),
        "d": Task("d", operator.mul, TaskRef("c"), 10),
    }
    plan = plan_graph(dsk, ["c", "d"], nothing_held)
    assert [t.key for t in plan.tasks] == ["a", "d"]
    assert plan.outputs == {"c": "a", "d": "d"}
    assert plan.tasks[1].deps["c"].key == "a"
    assert run_plan(plan)["d"] == 30


def test_alias_cycle_is_refused() -> None:
    dsk = {"a": Alias("a", "b"), "b": Alias("b", "a")}
    with pytest.raises(ValueError, match="cycle"):
        plan_graph(dsk, "a", nothing_held)


def test_a_future_in_the_graph_is_a_dependency_not_a_task() -> None:
    future = FakeFuture("inc-123")
    dsk = {"y": (operator.add, future, 1), "x": future}
    plan = plan_graph(dsk, ["x", "y"], held={"inc-123"}.__contains__)
    assert [t.key for t in plan.tasks] == ["y"]
    assert plan.outputs["x"] == "inc-123"
    assert run_plan(plan, {"inc-123": 41})["y"] == 42


def test_a_future_inside_delayed_arguments_is_a_dependency() -> None:
    future = FakeFuture("inc-123")
    d = dask.delayed(operator.add)(future, 1)
    plan = plan_graph(d.__dask_graph__(), d.key, held={"inc-123"}.__contains__)
    (task,) = plan.tasks
    assert [ref.key for ref in task.deps.values()] == ["inc-123"]
    assert run_plan(plan, {"inc-123": 41})[task.key] == 42


def test_held_keys_are_not_computed_again() -> None:
    dsk = {("x", 0): 1, ("y", 0): (operator.add, ("x", 0), 1)}
    plan = plan_graph(dsk, ("y", 0), held={"('x', 0)"}.__contains__)
    assert [t.key for t in plan.tasks] == ["('y', 0)"]
    assert plan.tasks[0].deps == {("x", 0): plan.tasks[0].deps[("x", 0)]}
    assert plan.tasks[0].deps[("x", 0)].key == "('x', 0)"


def test_a_key_neither_defined_nor_held_is_refused() -> None:
    with pytest.raises(ValueError, match="does not define"):
        plan_graph({"y": (operator.add, "x", 1), "x": Alias("x", "missing")}, "y", nothing_held)
    with pytest.raises(ValueError, match="does not define"):
        plan_graph({"x": 1}, "not-there", nothing_held)


def test_two_dask_keys_with_one_celeriac_key_are_refused() -> None:
    dsk = {("x", 0): 1, "('x', 0)": 2}
    with pytest.raises(ValueError, match="both map to"):
        plan_graph(dsk, [("x", 0), "('x', 0)"], nothing_held)


def test_expression_graphs_are_materialised_by_dask() -> None:
    da = pytest.importorskip("dask.array")
    from dask.base import collections_to_expr

    x = da.arange(12, chunks=4).sum()
    expr = collections_to_expr([x]).optimize()
    keys = list(dask.core.flatten(expr.__dask_keys__()))
    plan = plan_graph(expr, keys, nothing_held)
    assert all(isinstance(t.node, (Task, DataNode)) for t in plan.tasks)
    results = run_plan(plan)
    assert results[plan.outputs[keys[0]]] == 66
