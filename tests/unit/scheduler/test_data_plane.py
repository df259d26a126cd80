"""Results kept on workers: the scheduler records where they are, never their bytes.

A worker that does not share the scheduler's ``/dev/shm`` (another host) and
says where peers reach it (``peer``) keeps the large results of futures;
dependents fetch them from it (``where``), clients are told where they are
(``at``), the worker is told when nobody needs them (``free``), and when it
dies what it kept is computed again.  Pure: a fake clock, whole lists of
commands compared.
"""

from __future__ import annotations

from typing import Any

import pytest

from celeriac.scheduler.records import Send
from celeriac.testing import SimulatedScheduler as Sim
from celeriac.testing import message as msg
from celeriac.testing import ops
from celeriac.wire.protocol import VERSION, Message

C = b"client-1"
W1, W2 = b"worker-1", b"worker-2"
FN = [b"pickled-function"]
KEEP = 1 << 20  # the scheduler's inline_result_bytes: results over it stay on the worker
PEER = {W1: "tcp://10.0.0.1:4001", W2: "tcp://10.0.0.2:4002"}


def args(key: str) -> list[bytes]:
    return [b"args:" + key.encode()]


def submit(key: str, *deps: str, **extra: Any) -> Message:
    fields = {"key": key, "deps": list(deps), "priority": 0, "retries": 0, "queue": "default"}
    return msg("submit", [FN, args(key)], **fields, **extra)


def kept(key: str, size: int = 25_000_000) -> Message:
    """The worker kept the result of ``key``: it sends the size, not the bytes."""
    return msg("task-done", [[]], key=key, kept=size)


def done(key: str) -> Message:
    return msg("task-done", [[b"small:" + key.encode()]], key=key)


def run(key: str, *deps: str, where: list[str] | None = None, keep: bool = True) -> Message:
    payloads: list[Any] = [FN, args(key)]
    payloads += [[] if where and where[i] else [b"small:" + d.encode()] for i, d in enumerate(deps)]
    fields: dict[str, Any] = {"key": key, "name": key, "deps": list(deps), "attempt": 0}
    if where is not None:
        fields["where"] = where
    if keep:
        fields["keep"] = KEEP
    return msg("run", payloads, **fields)


def held_result(key: str, at: bytes, size: int = 25_000_000) -> Message:
    return msg("result", key=key, inline=False, size=size, at=PEER[at])


def add_worker(sim: Sim, wid: bytes, *, shm: str | None = None, slots: int = 1) -> list[Send]:
    """A worker on another host: it says where peers reach it."""
    hello = msg(
        "hello-worker",
        version=VERSION,
        slots=slots,
        queues=["default"],
        name=wid.decode(),
        pid=1,
        peer=PEER[wid],
        **({"shm": shm} if shm else {}),
    )
    out = sim(wid, hello)
    assert ops(out[:1]) == [(wid, "welcome", None)]
    return out[1:]


@pytest.fixture
def sim() -> Sim:
    return Sim(prefetch=0)


def test_a_large_result_stays_on_the_worker_and_the_client_is_told_where(sim: Sim) -> None:
    add_worker(sim, W1)
    assert sim(C, submit("a")) == [Send(W1, run("a"))]
    assert sim(W1, kept("a")) == [Send(C, held_result("a", W1))]
    task = sim.state.tasks["a"]
    assert (task.state.value, task.result, task.holder, task.nbytes) == (
        "memory",
        None,
        W1,
        25_000_000,
    )
    assert sim.state.workers[W1].holds == {"a": None}
    (worker,) = sim.state.info()["workers"]
    assert (worker["peer"], worker["kept"], worker["kept_bytes"]) == (PEER[W1], 1, 25_000_000)


def test_a_client_asking_again_is_told_where_again(sim: Sim) -> None:
    add_worker(sim, W1)
    sim(C, submit("a"))
    sim(W1, kept("a"))
    assert sim(C, msg("fetch", key="a")) == [Send(C, held_result("a", W1))]


def test_released_results_are_freed_on_their_worker_in_one_message(sim: Sim) -> None:
    add_worker(sim, W1, slots=2)
    sim(C, submit("a"), submit("b"))
    sim(W1, kept("a"), kept("b"))
    out = sim(C, msg("release", keys=["a", "b"]))
    assert out == [Send(W1, msg("free", keys=["a", "b"]))]
    assert sim.state.tasks == {} and sim.state.workers[W1].holds == {}


def test_a_dependent_fetches_its_input_where_it_is_kept(sim: Sim) -> None:
    add_worker(sim, W1)
    add_worker(sim, W2)
    sim(C, submit("a"))
    sim(W1, kept("a"))
    sim(C, submit("x"))  # W1 is busy with it: the dependent goes to W2
    assert sim(C, submit("b", "a")) == [Send(W2, run("b", "a", where=[PEER[W1]]))]


def test_a_dependent_waits_behind_short_tasks_where_its_input_is() -> None:
    # 25 MB at the assumed 100 MB/s is 0.25 s of transfer; a queued task is
    # expected to take 0.01 s: the holder takes them all.
    sim = Sim(prefetch=0, unknown_duration=0.01)
    add_worker(sim, W1)
    add_worker(sim, W2)
    sim(C, submit("a"))
    sim(W1, kept("a"))
    out = sim(C, *[submit(f"p{i}", "a") for i in range(5)])
    assert {to for to, _, _ in ops(out)} == {W1}


def test_a_dependent_goes_elsewhere_when_waiting_costs_more_than_the_transfer() -> None:
    # a queued task is expected to take 0.5 s, more than the 0.25 s transfer
    sim = Sim(prefetch=2, unknown_duration=0.5)
    add_worker(sim, W1)
    add_worker(sim, W2)
    sim(C, submit("a"))
    sim(W1, kept("a"))
    assert ops(sim(C, submit("b", "a"))) == [(W1, "run", "b")]  # nothing queued there yet
    assert ops(sim(C, submit("c", "a"))) == [(W2, "run", "c")]  # 0.5 s wait > 0.25 s fetch


def test_small_results_and_durable_work_still_come_to_the_scheduler(sim: Sim) -> None:
    add_worker(sim, W1)
    sim(C, submit("a"))
    assert ops(sim(W1, done("a"))) == [(C, "result", "a")]
    assert sim.state.tasks["a"].result == [b"small:a"]
    out = sim(C, submit("d", detached=True))
    assert out == [Send(W1, run("d", keep=False))]


def test_a_worker_sharing_our_shared_memory_keeps_nothing(sim: Sim) -> None:
    sim.state.welcome_fields = {"shm": "boot:1:2:0", "shm_tag": "0123abcd"}
    add_worker(sim, W1, shm="boot:1:2:0")
    assert sim(C, submit("a")) == [Send(W1, run("a", keep=False))]
    assert sim.state.workers[W1].peer is None


def test_a_result_lost_with_its_worker_is_computed_again_and_its_dependents_wait(
    sim: Sim,
) -> None:
    add_worker(sim, W1)
    add_worker(sim, W2)
    sim(C, submit("a"))
    sim(W1, kept("a"))
    sim(C, submit("x"))  # W1 is busy
    assert ops(sim(C, submit("b", "a"))) == [(W2, "run", "b")]
    # W1 dies: "a" is computed again on W2, whose "b" is dropped and waits for it
    out = sim(W2, msg("heartbeat"))
    assert ops(out) == [(W2, "heartbeat-ack", None)]
    sim.now = 10.0
    out = sim(W2, msg("heartbeat"))
    out += sim.tick(10.0)
    assert ops(out) == [(W2, "heartbeat-ack", None), (W2, "drop", "b"), (W2, "run", "a")]
    assert sim.states() == {"a": "processing", "b": "waiting", "x": "queued"}
    assert ops(sim(W2, kept("a"))) == [(C, "result", "a"), (W2, "run", "x")]  # older
    assert sim(W2, done("x"))[1:] == [Send(W2, run("b", "a", where=[PEER[W2]]))]


def test_a_lost_result_whose_input_is_gone_fails_naming_it(sim: Sim) -> None:
    add_worker(sim, W1)
    sim(C, submit("a"))
    sim(W1, done("a"))  # small: on the scheduler
    sim(C, submit("b", "a"))
    sim(W1, kept("b"))  # its input "a" is released once "b" is done...
    sim(C, msg("release", keys=["a"]))
    assert "a" not in sim.state.tasks
    out = sim(C, msg("worker-died", worker=W1.hex(), reason="killed"))
    assert ops(out) == [(C, "erred", "b")]
    assert "lost with worker worker-1: it cannot be computed again" in out[0].msg["text"]
    assert "its input 'a' is gone" in out[0].msg["text"]


def test_inputs_a_worker_cannot_fetch_make_it_wait_then_fail(sim: Sim) -> None:
    add_worker(sim, W1)
    add_worker(sim, W2)
    sim(C, submit("a"))
    sim(W1, kept("a"))
    sim(C, submit("x"))
    sim(C, submit("b", "a"))
    unreachable = msg("task-failed", [[]], key="b", kind="missing", text="no answer", missing=["a"])
    for _ in range(2):  # W1 keeps it and is alive, as far as we know: try again
        assert ops(sim(W2, unreachable)) == [(W2, "run", "b")]
    out = sim(W2, unreachable)
    assert ops(out) == [(C, "erred", "b")]
    assert out[0].msg["kind"] == "lost-dependency"


def test_a_client_that_cannot_reach_the_worker_gets_the_bytes_through_us(sim: Sim) -> None:
    add_worker(sim, W1)
    sim(C, submit("a"))
    sim(W1, kept("a"))
    assert sim(C, msg("fetch", key="a", via_scheduler=True)) == [Send(W1, msg("upload", key="a"))]
    assert sim(C, msg("fetch", key="a", via_scheduler=True)) == []  # asked once
    out = sim(W1, msg("uploaded", [[b"big"]], key="a"))
    assert out == [Send(C, msg("result", [[b"big"]], key="a", inline=True))]
    assert sim.state.tasks["a"].result is None  # carried, not kept


def test_a_stale_kept_result_is_freed_at_once(sim: Sim) -> None:
    add_worker(sim, W1)
    sim(C, submit("a"))
    sim(C, msg("cancel", key="a"))
    assert sim(W1, kept("a")) == [Send(W1, msg("free", keys=["a"]))]


def test_scattered_data_is_a_finished_task_its_worker_keeps(sim: Sim) -> None:
    add_worker(sim, W1)
    out = sim(C, msg("scattered", key="d", at=PEER[W1], size=9))
    assert out == [Send(C, held_result("d", W1, size=9))]
    assert sim.states() == {"d": "memory"}
    where = sim(C, msg("who-has", rid=1, keys=["d", "nope"]))
    assert where == [Send(C, msg("who-has-reply", rid=1, where={"d": [PEER[W1]], "nope": []}))]
    # a dependent fetches it like any kept result
    assert sim(C, submit("b", "d")) == [Send(W1, run("b", "d", where=[PEER[W1]]))]


def test_scattered_data_lost_with_its_worker_fails_what_needs_it(sim: Sim) -> None:
    add_worker(sim, W1)
    sim(C, msg("scattered", key="d", at=PEER[W1], size=9))
    out = sim(C, msg("worker-died", worker=W1.hex(), reason="killed"))
    assert ops(out) == [(C, "erred", "d")]
    assert "it was scattered data, which exists nowhere else" in out[0].msg["text"]


def test_data_scattered_to_a_worker_that_is_gone_is_lost(sim: Sim) -> None:
    out = sim(C, msg("scattered", key="d", at=PEER[W1], size=9))
    assert ops(out) == [(C, "erred", "d")] and out[0].msg["kind"] == "lost"
    assert sim.state.tasks == {}


def test_a_paused_worker_gets_nothing_new_until_it_resumes(sim: Sim) -> None:
    add_worker(sim, W1)
    sim(W1, msg("heartbeat", memory=900, paused=True, managed=500, spilled=200))
    assert sim(C, submit("a")) == []
    (worker,) = sim.state.info()["workers"]
    assert (worker["paused"], worker["managed"], worker["spilled"]) == (True, 500, 200)
    out = sim(W1, msg("heartbeat", memory=100))
    assert ops(out) == [(W1, "heartbeat-ack", None), (W1, "run", "a")]
