"""Dask collections computed on Celeriac, compared with Dask's synchronous scheduler.

One cluster for the module (2 worker processes x 1 slot): no test changes it.
Functions defined here reach the workers by value (registered below).
"""

from __future__ import annotations

import operator
import os
import sys
from collections.abc import Iterator
from typing import Any

import cloudpickle
import numpy as np
import pytest

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")
db = pytest.importorskip("dask.bag")
dd = pytest.importorskip("dask.dataframe")
pd = pytest.importorskip("pandas")

from celeriac import Client, Future  # noqa: E402
from celeriac.testing import ClusterFactory  # noqa: E402

cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with ClusterFactory() as make:
        cluster = make(2)
        with Client(cluster.address) as c:
            c.wait_for_workers(cluster.n_workers)
            yield c


def on_both(collection: Any, client: Client) -> tuple[Any, Any]:
    """The collection computed on Celeriac and on Dask's synchronous scheduler."""
    (ours,) = dask.compute(collection, scheduler=client)
    (theirs,) = dask.compute(collection, scheduler="sync")
    return ours, theirs


class Boom(Exception):
    pass


def explode(x: Any) -> Any:
    raise Boom(f"no {x}")


# -- dask.delayed -------------------------------------------------------------------


def test_delayed_tree(client: Client) -> None:
    leaves = [dask.delayed(operator.mul)(i, i) for i in range(32)]
    while len(leaves) > 1:
        pairs = zip(leaves[::2], leaves[1::2], strict=True)
        leaves = [dask.delayed(operator.add)(a, b) for a, b in pairs]
    ours, theirs = on_both(leaves[0], client)
    assert ours == theirs == sum(i * i for i in range(32))


def test_delayed_runs_on_the_workers_by_default(client: Client) -> None:
    # An open client is Dask's default scheduler: x.compute() with no scheduler= runs there.
    assert dask.delayed(os.getpid)().compute() != os.getpid()


# -- dask.array ---------------------------------------------------------------------


def test_array_reductions_transpose_and_matmul(client: Client) -> None:
    x = da.random.default_rng(1).random((60, 60), chunks=(15, 20))
    for expr in (
        (x + x.T).sum(axis=0).mean(),
        x.std(axis=1),
        x.max(),
        x @ x.T,
        (x.T @ x)[::7, 3:],
    ):
        ours, theirs = on_both(expr, client)
        np.testing.assert_allclose(ours, theirs)


def test_array_rechunk(client: Client) -> None:
    x = da.arange(400, chunks=30).reshape((20, 20)).rechunk((7, 11))
    ours, theirs = on_both(x.rechunk((20, 4)).cumsum(axis=1), client)
    assert ours.shape == (20, 20)
    np.testing.assert_array_equal(ours, theirs)


# -- dask.bag -----------------------------------------------------------------------


def test_bag_map_filter_fold_groupby(client: Client) -> None:
    b = db.from_sequence(range(200), npartitions=9)
    folded = b.map(lambda v: v * 3).filter(lambda v: v % 2 == 0).fold(operator.add)
    assert on_both(folded, client) == (sum(v * 3 for v in range(200) if v * 3 % 2 == 0),) * 2
    grouped = b.groupby(lambda v: v % 5)
    ours, theirs = on_both(grouped, client)
    assert sorted((k, sorted(v)) for k, v in ours) == sorted((k, sorted(v)) for k, v in theirs)
    assert len(ours) == 5
    by_fold = b.foldby(lambda v: v % 3, operator.add, 0)
    ours, theirs = on_both(by_fold, client)
    assert sorted(ours) == sorted(theirs)


# -- dask.dataframe -----------------------------------------------------------------


@pytest.fixture(scope="module")
def frames() -> tuple[Any, Any]:
    rng = np.random.default_rng(2)
    left = pd.DataFrame(
        {"k": rng.integers(0, 15, 600), "v": rng.random(600), "w": rng.integers(0, 100, 600)}
    )
    right = pd.DataFrame({"k": np.arange(15), "label": [f"l{i}" for i in range(15)]})
    return dd.from_pandas(left, npartitions=6), dd.from_pandas(right, npartitions=2)


def test_dataframe_groupby_aggregations(client: Client, frames: tuple[Any, Any]) -> None:
    left, _ = frames
    for expr in (
        left.groupby("k").v.mean(),
        left.groupby("k").agg({"v": ["sum", "max"], "w": "count"}),
        left.groupby("k").w.nunique(),
    ):
        ours, theirs = on_both(expr, client)
        pd.testing.assert_frame_equal(
            pd.DataFrame(ours).sort_index(), pd.DataFrame(theirs).sort_index()
        )


def test_dataframe_merge_and_join(client: Client, frames: tuple[Any, Any]) -> None:
    left, right = frames
    merged = left.merge(right, on="k", how="inner")
    ours, theirs = on_both(merged, client)
    assert len(ours) == 600
    columns = ["k", "v", "w", "label"]
    pd.testing.assert_frame_equal(
        ours.sort_values(columns).reset_index(drop=True),
        theirs.sort_values(columns).reset_index(drop=True),
    )
    # A shuffle join (neither side broadcast): many partitions on both sides.
    joined = left.set_index("k").join(left.set_index("k").w.rename("w2"), how="left")
    ours, theirs = on_both(joined.w2.sum(), client)
    assert ours == theirs


# -- persist, compute, futures inside graphs -------------------------------------------


def graph_futures(collection: Any) -> list[Any]:
    return [v for v in dict(collection.__dask_graph__()).values() if isinstance(v, Future)]


def test_persist_then_further_work(client: Client) -> None:
    x = da.arange(100, chunks=10) ** 2
    (persisted,) = dask.persist(x, scheduler=client)
    assert isinstance(persisted, type(x))
    futures = graph_futures(persisted)
    assert len(futures) == 10
    client.gather(futures)
    total = (persisted + 1).sum()
    assert total.compute() == (x + 1).sum().compute(scheduler="sync") == 328450
    again = client.persist([x, x.sum()])
    assert len(again) == 2 and again[1].compute() == sum(i * i for i in range(100))


def test_persisted_dataframe(client: Client, frames: tuple[Any, Any]) -> None:
    left, _ = frames
    persisted = client.persist(left[left.w > 50])
    assert isinstance(persisted, type(left))
    ours = persisted.groupby("k").v.sum().compute()
    theirs = left[left.w > 50].groupby("k").v.sum().compute(scheduler="sync")
    pd.testing.assert_series_equal(ours.sort_index(), theirs.sort_index())


def test_client_compute_gives_futures(client: Client) -> None:
    x = da.ones(50, chunks=10).sum()
    future = client.compute(x)
    assert isinstance(future, Future) and future.result(30) == 50
    futures = client.compute([x, dask.delayed(operator.add)(1, 2), "not dask"])
    assert isinstance(futures[0], Future) and futures[2] == "not dask"
    assert [futures[0].result(30), futures[1].result(30)] == [50, 3]
    assert client.compute([x, x + 1], sync=True) == [50, 51]


def test_a_celeriac_future_inside_a_graph_is_not_recomputed(client: Client) -> None:
    random_bytes = client.submit(os.urandom, 16)  # a recomputation would differ
    hexed = dask.delayed(bytes.hex)(random_bytes)
    assert hexed.compute() == random_bytes.result(10).hex()
    legacy = {"x": random_bytes, "y": (len, "x"), ("z", 0): (bytes.hex, random_bytes)}
    assert client.get(legacy, [["y"], ("z", 0)]) == [[16], random_bytes.result().hex()]
    array = da.from_delayed(dask.delayed(np.frombuffer)(random_bytes, np.uint8), (16,), np.uint8)
    np.testing.assert_array_equal(array.compute(), np.frombuffer(random_bytes.result(), np.uint8))


def test_a_failing_task_reraises_its_exception(client: Client) -> None:
    with pytest.raises(Boom, match="no 3"):
        dask.delayed(explode)(3).compute()
    downstream = dask.delayed(operator.add)(dask.delayed(explode)(4), 1)
    with pytest.raises(Boom, match="no 4"):
        dask.compute(downstream, scheduler=client)
    blocks = da.ones(40, chunks=10)
    x = blocks.map_blocks(lambda b: explode("block") if b.size else b, meta=np.ones(0))
    with pytest.raises(Boom):
        x.sum().compute()


# -- Client.get -----------------------------------------------------------------------


def test_get_nests_keys_like_dask(client: Client) -> None:
    # Keys of their own: a key is a result (as in Dask), whichever graph names it.
    dsk = {"x1": 1, "y1": (operator.add, "x1", 10), ("z1", 0): (sum, ["x1", "y1"])}
    assert client.get(dsk, "y1") == 11
    assert client.get(dsk, ("z1", 0)) == 12
    assert client.get(dsk, [["y1"], [("z1", 0), ["x1"]]]) == [[11], [12, [1]]]
    futures = client.get(dsk, ["x1", ["y1"]], sync=False)
    assert isinstance(futures[0], Future) and client.gather(futures[1]) == [11]


def test_get_of_a_high_level_graph(client: Client) -> None:
    x = da.arange(16, chunks=4).reshape((4, 4)).rechunk(2)
    blocks = client.get(x.__dask_graph__(), x.__dask_keys__())
    assert len(blocks) == 2 and all(len(row) == 2 for row in blocks)
    np.testing.assert_array_equal(np.block(blocks), np.arange(16).reshape((4, 4)))


def test_the_graph_goes_in_one_batch(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    conn = client._conn
    batches: list[list[Any]] = []
    real_send_many = conn.send_many

    def record(messages: Any) -> None:
        messages = list(messages)
        batches.append(messages)
        real_send_many(messages)

    def refuse(message: Any) -> None:
        raise AssertionError(f"sent {message.op} on its own")

    monkeypatch.setattr(conn, "send_many", record)
    monkeypatch.setattr(conn, "send", refuse)
    x = (da.arange(300, chunks=10) + 1).sum()
    assert x.compute() == sum(range(1, 301))
    (batch,) = batches
    submits = [m for m in batch if m.op == "submit"]
    assert len(submits) >= 30
    # Only the output stays wanted: every other task is released in the same batch.
    released = {k for m in batch if m.op == "release" for k in m.fields["keys"]}
    assert {m.fields["key"] for m in submits} - released == {m.fields["key"] for m in submits[-1:]}


def test_unsupported_keywords_are_refused_at_the_call(client: Client) -> None:
    x = da.ones(10, chunks=5).sum()
    with pytest.raises(TypeError, match="workers"):
        x.compute(workers=["somewhere"])
    with pytest.raises(TypeError, match="resources"):
        client.get({"x": 1}, "x", resources={"GPU": 1})
    with pytest.raises(TypeError, match="actors"):
        client.persist(x, actors=True)
    with pytest.raises(TypeError, match="fifo_timeout"):
        client.compute(x, fifo_timeout="1s")
    # What Dask itself passes (persist's optimize_graph) and our own options are taken.
    assert x.persist(optimize_graph=False).compute() == 10
    assert x.compute(priority=-1, retries=1) == 10


def test_set_as_default_and_restore(client: Client) -> None:
    def default() -> Any:
        return getattr(dask.config.get("scheduler", None), "__self__", None)

    assert default() is client
    with Client(client.address, set_as_default=False) as other:
        assert default() is client
        assert other.compute(dask.delayed(operator.add)(1, 1), sync=True) == 2
    with Client(client.address) as newer:
        assert default() is newer
        assert dask.delayed(operator.add)(2, 2).compute() == 4
    assert default() is client
