"""A worker process's decisions, as a pure state machine: events in, instructions out.

No sockets, no threads, no clock; expected output spelled out as whole lists.
"""

from __future__ import annotations

from typing import Any

from celeriac.testing import message as msg
from celeriac.wire.protocol import Message
from celeriac.worker.state import (
    Free,
    Keep,
    Recycle,
    Send,
    Spill,
    Terminate,
    WorkerLimits,
    WorkerState,
)

FN, ARGS = [b"fn"], [b"args"]
T1, T2 = 101, 102  # executors (thread ids)


def run(key: str, *deps: str, **fields: Any) -> Message:
    payloads = [FN, ARGS, *([b"dep:" + d.encode()] for d in deps)]
    return msg("run", payloads, key=key, deps=list(deps), **fields)


def done(key: str, payload: list[bytes]) -> Message:
    return msg("task-done", [payload], key=key, duration=0.1)


def test_tasks_run_in_the_order_they_came_one_per_executor() -> None:
    state = WorkerState()
    assert state.run(run("a")) == [] and state.run(run("b")) == []
    first, second = state.take(T1), state.take(T2)
    assert (first and first.key, second and second.key) == ("a", "b")
    assert state.running == {"a": T1, "b": T2} and state.take(T1) is None


def test_a_run_with_the_wrong_payload_count_fails_at_once() -> None:
    state = WorkerState()
    (failure,) = state.run(msg("run", [FN], key="a", deps=["x"]))
    assert isinstance(failure, Send) and failure.msg.op == "task-failed"
    assert failure.msg["kind"] == "serialize" and "1 payloads for 1 deps" in failure.msg["text"]
    assert not state.todo


def test_inputs_kept_elsewhere_are_remote_and_the_rest_are_here() -> None:
    state = WorkerState(WorkerLimits(keeps=True))
    message = run("c", "a", "b", where=["", "tcp://w2:1"], keep=1024)
    message.payloads[3] = []
    state.run(message)
    task = state.take(T1)
    assert task is not None
    assert (task.deps, task.remote, task.keep) == ({"a": [b"dep:a"]}, {"b": "tcp://w2:1"}, 1024)


def test_a_worker_that_serves_no_peers_never_keeps() -> None:
    state = WorkerState(WorkerLimits(keeps=False))
    state.run(run("a", keep=1024))
    task = state.take(T1)
    assert task is not None and task.keep == 0


def test_a_large_result_is_kept_and_only_its_size_is_sent() -> None:
    state = WorkerState(WorkerLimits(keeps=True))
    state.run(run("a", keep=4))
    task = state.take(T1)
    assert task is not None
    big = [b"0123", b"45"]
    assert state.finished(task, done("a", big)) == [
        Keep("a", big),
        Send(msg("task-done", [[]], key="a", duration=0.1, kept=6)),
    ]
    state.run(run("b", keep=4))
    small = state.take(T1)
    assert small is not None
    assert state.finished(small, done("b", [b"01"])) == [Send(done("b", [b"01"]))]


def test_a_dropped_task_never_starts_and_a_running_one_sends_nothing() -> None:
    state = WorkerState()
    state.run(run("a"))
    state.run(run("b"))
    assert state.drop("b", terminate=False) == []
    task = state.take(T1)
    assert task is not None and task.key == "a"
    assert state.take(T2) is None  # "b" was dropped
    state.drop("a", terminate=False)
    assert state.finished(task, done("a", [b"x"])) == []


def test_terminate_hands_back_the_queue_then_asks_to_be_killed() -> None:
    state = WorkerState()
    for key in "abc":
        state.run(run(key))
    state.take(T1)
    assert state.drop("a", terminate=True) == [
        Send(msg("worker-leaving", keys=["b", "c"])),
        Terminate("a"),
    ]


def test_steal_gives_back_what_has_not_started() -> None:
    state = WorkerState()
    for key in "abc":
        state.run(run(key))
    state.take(T1)
    assert state.steal({"a", "c", "zz"}) == [Send(msg("handed-back", keys=["c"]))]
    assert [t.key for t in state.todo] == ["b"]


def test_closing_hands_back_once_and_refuses_what_comes_later() -> None:
    state = WorkerState()
    state.run(run("a"))
    assert state.close() == [Send(msg("worker-leaving", keys=["a"]))]
    assert state.close() == []
    assert state.run(run("b")) == [Send(msg("worker-leaving", keys=["b"]))]
    assert state.take(T1) is None and state.idle()


def test_recycling_after_so_many_tasks_or_so_much_memory() -> None:
    state = WorkerState(WorkerLimits(max_tasks=2, max_memory=100))
    for key in "ab":
        state.run(run(key))
    first = state.take(T1)
    assert first is not None
    assert state.finished(first, done("a", [b"x"]), rss=150) == [
        Send(done("a", [b"x"])),
        Recycle("recycling at 0 MiB resident"),
    ]
    second = state.take(T1)
    assert second is not None
    assert state.finished(second, done("b", [b"x"]), rss=10)[-1] == Recycle(
        "recycling after 2 tasks"
    )


def test_memory_near_the_limit_spills_then_pauses_then_resumes() -> None:
    mb = 1 << 20
    state = WorkerState(WorkerLimits(memory_limit=100 * mb))
    assert state.heartbeat(50 * mb, 40 * mb) == [] and not state.paused
    assert state.heartbeat(75 * mb, 40 * mb) == [Spill(15 * mb)] and not state.paused
    assert state.heartbeat(85 * mb, 40 * mb) == [Spill(25 * mb)] and state.paused
    assert state.heartbeat(50 * mb, 10 * mb) == [] and not state.paused


def test_free_forgets_kept_results() -> None:
    assert WorkerState().free(["a", "b"]) == [Free(("a", "b"))]
