"""The futures API against a real scheduler and real worker processes."""

from __future__ import annotations

import gc
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from celeriac import CancelledError, Client, LocalCluster, as_completed, fire_and_forget, wait
from celeriac.testing import wait_until
from tasks_for_tests import add, append_line, inc, slow_inc, total, touch, wait_for_file


def test_submit_and_dependency(client: Client) -> None:
    x = client.submit(inc, 1)
    y = client.submit(add, x, 10)
    assert y.result(timeout=10) == 12
    assert x.done() and x.status == "finished"


def test_thousand_tasks_through_map_and_gather(client: Client) -> None:
    futures = client.map(inc, range(1000))
    assert client.gather(futures) == list(range(1, 1001))


def test_thousand_tasks_through_submit(client: Client) -> None:
    futures = [client.submit(add, i, i) for i in range(1000)]
    assert [f.result(timeout=30) for f in futures] == [2 * i for i in range(1000)]


def test_chain(client: Client) -> None:
    future = client.submit(inc, 0)
    for _ in range(99):
        future = client.submit(inc, future)
    assert future.result(timeout=30) == 100


def test_tree_reduction_of_1024_leaves(client: Client) -> None:
    level = client.map(inc, range(1024))
    while len(level) > 1:
        level = [client.submit(add, a, b) for a, b in zip(level[::2], level[1::2], strict=True)]
    assert level[0].result(timeout=60) == sum(range(1, 1025))


def test_futures_nested_in_containers_and_kwargs(client: Client) -> None:
    a, b = client.submit(inc, 1), client.submit(inc, 2)
    result = client.submit(total, [a, (b, {"k": a})], {a, 7}, key_arg={"x": [b]}).result(10)
    assert result == (([2, (3, {"k": 2})], {2, 7}), {"key_arg": {"x": [3]}})


def test_none_result_as_dependency(client: Client) -> None:
    nothing = client.submit(total.__class__.__call__, lambda: None)
    assert client.submit(lambda v: v is None, nothing).result(10) is True


def test_gather_shapes(client: Client) -> None:
    futures = client.map(inc, [1, 2])
    assert client.gather(tuple(futures)) == (2, 3)
    assert client.gather({"a": futures[0], "b": futures[1]}) == {"a": 2, "b": 3}
    assert client.gather(futures[0]) == 2


def test_wait_and_as_completed(client: Client) -> None:
    futures = client.map(slow_inc, [3, 2, 1], delay=0.05)
    done, not_done = wait(futures, timeout=20)
    assert len(done) == 3 and not not_done
    results = sorted(r for _, r in as_completed(futures, with_results=True))
    assert results == [2, 3, 4]


def test_as_completed_yields_in_completion_order(client: Client, tmp_path) -> None:
    gate = str(tmp_path / "gate")
    blocked = client.submit(wait_for_file, gate)
    quick = client.submit(inc, 1)
    iterator = as_completed([blocked, quick], timeout=20)
    assert next(iterator) is quick
    touch(gate)
    assert next(iterator) is blocked


def test_done_callback(client: Client) -> None:
    seen = threading.Event()
    future = client.submit(inc, 1)
    future.add_done_callback(lambda f: seen.set() if f.result() == 2 else None)
    assert seen.wait(10)


def test_cancel_queued_task(client: Client, tmp_path) -> None:
    gate = str(tmp_path / "gate")
    blockers = [client.submit(wait_for_file, gate) for _ in range(8)]  # fill slots + prefetch
    victim = client.submit(inc, 1)
    dependent = client.submit(inc, victim)
    victim.cancel()
    with pytest.raises(CancelledError):
        victim.result(timeout=10)
    with pytest.raises(CancelledError):
        dependent.result(timeout=10)
    touch(gate)
    assert all(isinstance(b.result(timeout=20), int) for b in blockers)


def test_priority_runs_first(cluster_factory, tmp_path) -> None:
    # One worker process with one slot: execution order is assignment order
    # (with two, both tasks could start at once and race to the file).
    cluster = cluster_factory(n_workers=1)
    with Client(cluster.address) as client:
        client.wait_for_workers(1)
        gate = str(tmp_path / "gate")
        blockers = [client.submit(wait_for_file, gate) for _ in range(3)]  # slot + prefetch
        wait_until(lambda: client.scheduler_info()["by_state"].get("processing", 0) == 3)
        order_file = tmp_path / "order"
        low = client.submit(append_line, str(order_file), "low", priority=0)
        high = client.submit(append_line, str(order_file), "high", priority=10)
        wait_until(lambda: client.scheduler_info()["by_state"].get("queued", 0) == 2)
        touch(gate)
        client.gather([low, high, *blockers], timeout=20)
    assert order_file.read_text().split() == ["high", "low"]


def test_same_key_is_one_task(client: Client, tmp_path) -> None:
    a = client.submit(touch, str(tmp_path / "once"), key="only-once")
    b = client.submit(touch, str(tmp_path / "twice"), key="only-once")
    assert a.result(10) == b.result(10) == str(tmp_path / "once")
    assert not (tmp_path / "twice").exists()


def test_fire_and_forget_runs_after_futures_are_dropped(client: Client, tmp_path) -> None:
    marker = tmp_path / "ran"
    future = client.submit(slow_inc, 1, delay=0.3)
    follow_up = client.submit(lambda _, path: touch(path), future, str(marker))
    fire_and_forget([future, follow_up])
    del future, follow_up
    gc.collect()
    wait_until(marker.exists, timeout=20)
    wait_until(lambda: client.scheduler_info()["tasks"] == 0)


def test_results_are_released_when_futures_are_dropped(client: Client) -> None:
    futures = client.map(inc, range(500))
    client.gather(futures)
    assert client.scheduler_info()["tasks"] == 500
    del futures
    gc.collect()
    wait_until(lambda: client.scheduler_info()["tasks"] == 0)


def test_many_threads_share_one_client(client: Client) -> None:
    def work(start: int) -> list[int]:
        return client.gather([client.submit(add, start, i) for i in range(100)])

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(work, range(0, 800, 100)))
    assert results == [[s + i for i in range(100)] for s in range(0, 800, 100)]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_process_gets_its_own_connection(client: Client) -> None:
    assert client.submit(inc, 1).result(10) == 2
    pid = os.fork()
    if pid == 0:  # child: must not share the parent's socket
        code = 0
        try:
            code = 0 if client.submit(inc, 41).result(10) == 42 else 1
        except BaseException:
            code = 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert client.submit(inc, 2).result(10) == 3  # the parent still works


def test_large_result_is_fetched_on_demand(client: Client) -> None:
    big = client.submit(lambda: b"x" * (3 << 20))  # over the inline push limit
    assert len(big.result(timeout=20)) == 3 << 20


def test_numpy_array_round_trip(client: Client) -> None:
    np = pytest.importorskip("numpy")
    array = np.arange(1_000_000, dtype="float64")
    doubled = client.submit(lambda a: a * 2, array)
    result = doubled.result(timeout=20)
    assert result.dtype == array.dtype and (result == array * 2).all()


@pytest.mark.timeout(60)
def test_a_result_is_not_held_back_behind_a_long_prefetched_task(
    cluster_factory: Callable[..., LocalCluster], tmp_path: Path
) -> None:
    """One slot, two tasks assigned together: the short one's result comes back while
    the long one (blocked on a gate) still runs, not when it ends or at a heartbeat."""
    slow_heartbeats = ("--heartbeat-interval", "10", "--worker-timeout", "60")
    cluster = cluster_factory(n_workers=1, scheduler_args=slow_heartbeats)
    gate = tmp_path / "gate"
    with Client(cluster.address) as client:
        client.wait_for_workers(1)
        short, long = client.map(wait_for_file, [str(tmp_path), str(gate)])  # one batch
        try:
            worker_pid = short.result(timeout=5)
            assert not long.done()
        finally:
            gate.touch()
        assert long.result(timeout=10) == worker_pid  # the same worker held both


def test_long_key_lists_stay_under_the_schedulers_header_limit(client: Client) -> None:
    # 12,000 keys of ~100 bytes: 1.2 MB in one message, over the scheduler's 1 MiB
    # header limit; status() asks 5,000 at a time, releases go 5,000 a message.
    keys = [f"no-such-task-{i:06d}-{'x' * 80}" for i in range(12_000)]
    assert set(client.status(keys).values()) == {"UNKNOWN"}
    futures = client.map(inc, range(12_000))
    assert client.gather(futures, timeout=60)[-1] == 12_000
    del futures
    gc.collect()
    wait_until(lambda: client.scheduler_info()["tasks"] == 0, timeout=30)  # all released


def test_scatter_on_one_host_goes_through_shared_memory_and_feeds_tasks(client: Client) -> None:
    from tasks_for_tests import total_of

    futures = client.scatter([1, 2, 3])
    assert client.submit(total_of, futures).result(timeout=30) == 6
    assert client.who_has(futures) == {f.key: [] for f in futures}  # the scheduler has them
    single = client.scatter({"answer": 42})
    assert list(single) == ["answer"] and single["answer"].result(timeout=30) == 42


def test_dask_submit_options_celeriac_lacks_are_refused_never_passed_on(client: Client) -> None:
    from tasks_for_tests import inc

    for options in ({"workers": ["w1"]}, {"resources": {"GPU": 1}}, {"pure": True}):
        with pytest.raises(TypeError, match="unsupported keyword"):
            client.submit(inc, 1, **options)
        with pytest.raises(TypeError, match="unsupported keyword"):
            client.map(inc, [1], **options)
    # pure=False is what Celeriac does anyway: a fresh key per call
    first, second = client.submit(inc, 1, pure=False), client.submit(inc, 1, pure=False)
    assert first.key != second.key and client.gather([first, second]) == [2, 2]
