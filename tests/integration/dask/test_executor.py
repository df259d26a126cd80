"""``client.get_executor()``: the ``concurrent.futures.Executor`` interface on real workers.

(Here beside the Dask tests because it is the same issue's front door; it
needs no dask.)
"""

from __future__ import annotations

import concurrent.futures as cf
import os
from collections.abc import Iterator

import pytest

from celeriac import Client
from celeriac.testing import ClusterFactory
from tasks_for_tests import add, fail, inc, pid, sleep_for, total, wait_for_file


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with ClusterFactory() as make:
        cluster = make(2)
        with Client(cluster.address, set_as_default=False) as c:
            c.wait_for_workers(cluster.n_workers)
            yield c


def test_submit_and_concurrent_futures_wait(client: Client) -> None:
    with client.get_executor() as executor:
        futures = [executor.submit(add, i, 1) for i in range(20)]
        assert all(isinstance(f, cf.Future) for f in futures)
        done, not_done = cf.wait(futures, timeout=30)
        assert len(done) == 20 and not not_done
        assert sorted(f.result() for f in done) == list(range(1, 21))
        assert executor.submit(pid).result(30) != os.getpid()
        # Too big to be pushed with its outcome: fetched off the thread that read it.
        big = executor.submit(os.urandom, 3 << 20)
        assert len(next(cf.as_completed([big], timeout=30)).result()) == 3 << 20


def test_as_completed_and_exceptions(client: Client) -> None:
    with client.get_executor() as executor:
        futures = [executor.submit(inc, i) for i in range(10)]
        failing = executor.submit(fail, "on purpose")
        results = sorted(f.result() for f in cf.as_completed(futures, timeout=30))
        assert results == list(range(1, 11))
        assert cf.wait([failing], return_when=cf.FIRST_EXCEPTION, timeout=30).done == {failing}
        with pytest.raises(ValueError, match="on purpose"):
            failing.result()


def test_keywords_reach_the_function(client: Client) -> None:
    with client.get_executor() as executor:
        # "priority" and "key" are submit()'s own options: they must still reach fn.
        result = executor.submit(total, 1, priority=5, key="k").result(30)
        assert result == ((1,), {"priority": 5, "key": "k"})


def test_map_in_order_with_chunksize(client: Client) -> None:
    with client.get_executor() as executor:
        assert list(executor.map(add, range(50), range(50), chunksize=7)) == [
            2 * i for i in range(50)
        ]
        assert list(executor.map(inc, range(5), timeout=30)) == [1, 2, 3, 4, 5]
        with pytest.raises(ValueError, match="chunksize"):
            executor.map(inc, range(3), chunksize=0)


def test_map_timeout(client: Client, tmp_path: os.PathLike[str]) -> None:
    gate = os.path.join(tmp_path, "gate")
    with client.get_executor() as executor:
        results = executor.map(wait_for_file, [gate, gate], [20.0, 20.0], timeout=0.3)
        with pytest.raises(cf.TimeoutError):
            next(results)
        with pytest.raises(StopIteration):  # what was left was cancelled
            next(results)
        open(gate, "w").close()  # let the running calls end
        assert executor.submit(inc, 1).result(30) == 2


def test_options_apply_and_unknown_ones_are_refused(client: Client) -> None:
    with pytest.raises(TypeError, match="workers"):
        client.get_executor(workers=["a"])
    with pytest.raises(TypeError, match="key"):
        client.get_executor(key="fixed")
    # A queue no worker consumes: the task waits (it would run at once elsewhere).
    with client.get_executor(queue="nobody-listens") as executor:
        waiting = executor.submit(inc, 1)
        assert cf.wait([waiting], timeout=0.5).not_done == {waiting}
        assert waiting.cancel() and waiting.cancelled()
        assert cf.wait([waiting], timeout=5).done == {waiting}
        revoked = executor.submit(inc, 2)
        client.cancel([revoked.remote])  # cancelled on the cluster, not through this future
        assert cf.wait([revoked], timeout=10).done == {revoked} and revoked.cancelled()
        executor.shutdown(wait=True)


def test_shutdown(client: Client) -> None:
    executor = client.get_executor()
    slow = [executor.submit(sleep_for, 0.3) for _ in range(2)]
    executor.shutdown(wait=True)
    assert all(f.done() and f.result() for f in slow)
    with pytest.raises(RuntimeError, match="shutdown"):
        executor.submit(inc, 1)
    with pytest.raises(RuntimeError, match="shutdown"):
        executor.map(inc, [1])

    executor = client.get_executor(queue="nobody-listens")
    stuck = executor.submit(inc, 1)
    executor.shutdown(wait=True, cancel_futures=True)
    assert stuck.cancelled()
    assert client.submit(inc, 41).result(30) == 42  # the client is still open
