"""The scheduler as a pure state machine: events in, ``Send`` commands out.

No sockets, no processes, no sleeping: a fake clock is just the ``now`` float
passed with each event.  Expected output is spelled out as whole lists of
:class:`Send` where practical, so a surprise extra message fails the test.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from celeriac.scheduler.policies import TokenBucket
from celeriac.scheduler.queues import ReadyQueues
from celeriac.scheduler.records import TaskRecord
from celeriac.scheduler.state import SchedulerConfig, SchedulerState, Send
from celeriac.scheduler.transitions import TRANSITIONS, InvalidTransition, check_transition
from celeriac.states import FINISHED, TaskState
from celeriac.testing import SimulatedScheduler as Sim
from celeriac.testing import hello_worker, ops
from celeriac.testing import message as msg
from celeriac.wire.protocol import VERSION, Message

C, C2 = b"client-1", b"client-2"
W1, W2, W3 = b"worker-1", b"worker-2", b"worker-3"
FN = [b"pickled-function"]
EXC = [b"pickled-exception"]


# -- message builders --------------------------------------------------------------------


def args(key: str) -> list[bytes]:
    return [b"args:" + key.encode()]


def result(key: str) -> list[bytes]:
    return [b"result:" + key.encode()]


def submit(
    key: str,
    *deps: str,
    priority: int = 0,
    retries: int = 0,
    queue: str = "default",
) -> Message:
    fields = {"key": key, "deps": list(deps), "priority": priority, "retries": retries}
    return msg("submit", [FN, args(key)], queue=queue, **fields)


def done(key: str, payload: Sequence[Any] | None = None) -> Message:
    return msg("task-done", [result(key) if payload is None else list(payload)], key=key)


def failed(key: str, kind: str = "remote", text: str = "boom") -> Message:
    return msg("task-failed", [EXC], key=key, kind=kind, text=text)


def run(to: bytes, key: str, *deps: str, attempt: int = 0) -> Send:
    """The ``run`` command the scheduler should send for ``key``."""
    payloads = [FN, args(key), *(result(d) for d in deps)]
    fields = {"key": key, "name": key, "deps": list(deps), "attempt": attempt}
    return Send(to, msg("run", payloads, **fields))


def inline_result(to: bytes, key: str) -> Send:
    return Send(to, msg("result", [result(key)], key=key, inline=True))


def erred(to: bytes, key: str, kind: str = "remote", text: str = "boom") -> Send:
    return Send(to, msg("erred", [EXC], key=key, kind=kind, text=text))


def cancelled(to: bytes, key: str, reason: str = "cancelled") -> Send:
    return Send(to, msg("cancelled", key=key, reason=reason))


# -- the harness -------------------------------------------------------------------------


@pytest.fixture
def sim() -> Sim:
    """One slot per worker and no prefetch: each worker holds exactly one task."""
    return Sim(prefetch=0)


# -- hello, version, unknown peers -------------------------------------------------------


def test_client_hello_is_welcomed() -> None:
    state = SchedulerState(SchedulerConfig(max_message_bytes=1234))
    out = state.handle(C, [msg("hello-client", version=VERSION)], now=0.0)
    assert out == [Send(C, msg("welcome", version=VERSION, max_message_bytes=1234))]
    assert list(state.clients) == [C]


def test_worker_hello_is_welcomed_with_timing() -> None:
    config = SchedulerConfig(worker_timeout=7.0, heartbeat_interval=0.25, max_message_bytes=99)
    state = SchedulerState(config)
    out = state.handle(W1, [hello_worker(slots=3)], now=0.0)
    expected = msg(
        "welcome",
        version=VERSION,
        heartbeat_interval=0.25,
        worker_timeout=7.0,
        max_message_bytes=99,
    )
    assert out == [Send(W1, expected)]
    assert state.workers[W1].slots == 3


@pytest.mark.parametrize(
    "hello",
    [msg("hello-client", version=VERSION + 1), hello_worker(version=VERSION + 1)],
    ids=["client", "worker"],
)
def test_version_mismatch_gets_error_and_no_registration(hello: Message) -> None:
    state = SchedulerState()
    [reply] = state.handle(b"peer", [hello], now=0.0)
    assert reply.to == b"peer"
    assert reply.msg.op == "error"
    assert reply.msg["about"] == hello.op
    assert f"version {VERSION + 1}" in reply.msg["text"]
    assert not state.clients and not state.workers


@pytest.mark.parametrize(
    "message", [msg("heartbeat"), submit("a"), done("a"), msg("goodbye")], ids=lambda m: m.op
)
def test_unknown_sender_is_asked_to_reregister(message: Message) -> None:
    state = SchedulerState()
    assert state.handle(b"stranger", [message], now=0.0) == [Send(b"stranger", msg("reregister"))]
    assert not state.tasks


@pytest.mark.parametrize(
    ("sender", "message"),
    [(W1, submit("a")), (C, done("a"))],
    ids=["worker-sends-submit", "client-sends-task-done"],
)
def test_message_for_the_other_role_is_rejected(sim: Sim, sender: bytes, message: Message):
    sim.add_worker(W1)
    [reply] = sim(sender, message)
    assert (reply.to, reply.msg.op, reply.msg["about"]) == (sender, "error", message.op)
    assert not sim.state.tasks


def test_worker_heartbeat_is_acked_and_keeps_it_alive() -> None:
    sim = Sim(worker_timeout=5.0)
    sim.add_worker(W1)
    sim.now = 4.0
    assert sim(W1, msg("heartbeat", memory=99)) == [Send(W1, msg("heartbeat-ack"))]
    assert sim.tick(8.0) == []
    assert sim.state.workers[W1].memory == 99
    sim.tick(9.5)
    assert W1 not in sim.state.workers


# -- submission and assignment -----------------------------------------------------------


def test_submit_runs_on_worker(sim: Sim) -> None:
    sim.add_worker(W1)
    assert sim(C, submit("a")) == [run(W1, "a")]
    task = sim.state.tasks["a"]
    assert (task.state, task.worker) == (TaskState.PROCESSING, W1)
    assert list(sim.state.workers[W1].assigned) == ["a"]


def test_submit_before_any_worker_waits_in_queue(sim: Sim) -> None:
    sim.now = 5.0
    assert sim(C, submit("a")) == []
    sim.now = 9.0
    assert sim(C, submit("b")) == []
    assert sim.states() == {"a": "queued", "b": "queued"}
    assert sim.state.info()["queue_oldest"] == {"default": 5.0}  # how long "a" has waited
    assert sim.add_worker(W1)[0] == run(W1, "a")


def test_priority_first_then_submission_order() -> None:
    sim = Sim(prefetch=10)
    for key, priority in [("a", 0), ("b", 5), ("c", 5), ("d", 1), ("e", 0), ("f", -3)]:
        assert sim(C, submit(key, priority=priority)) == []
    out = sim.add_worker(W1)
    assert [s.msg["key"] for s in out] == ["b", "c", "d", "a", "e", "f"]


def test_priority_decides_the_next_task_as_slots_free(sim: Sim) -> None:
    sim.add_worker(W1)
    assert sim(C, submit("first")) == [run(W1, "first")]
    assert sim(C, submit("low", priority=-1), submit("high", priority=2)) == []
    assert sim(W1, done("first")) == [inline_result(C, "first"), run(W1, "high")]
    assert sim(W1, done("high")) == [inline_result(C, "high"), run(W1, "low")]


def test_prefetch_limits_tasks_per_worker() -> None:
    sim = Sim(prefetch=2)
    sim.add_worker(W1, slots=2)
    out = sim(C, *(submit(f"t{i}") for i in range(6)))
    assert out == [run(W1, f"t{i}") for i in range(4)]  # 2 slots + 2 prefetched
    assert sim.state.info()["by_state"] == {"processing": 4, "queued": 2}
    assert sim(W1, done("t0")) == [inline_result(C, "t0"), run(W1, "t4")]


def test_round_robin_across_equal_workers() -> None:
    sim = Sim(prefetch=1)
    sim.add_worker(W1)
    sim.add_worker(W2)
    destinations = [sim(C, submit(f"t{i}"))[0].to for i in range(4)]
    assert destinations == [W1, W2, W1, W2]
    assert sim(C, submit("t4")) == []  # both full: 1 slot + 1 prefetched each
    assert sim(W2, done("t1")) == [inline_result(C, "t1"), run(W2, "t4")]


def test_least_loaded_worker_gets_the_task_when_slots_differ() -> None:
    sim = Sim(prefetch=0)
    sim.add_worker(W1, slots=1)
    sim.add_worker(W2, slots=3)
    out = sim(C, *(submit(f"t{i}") for i in range(4)))
    assert sorted(s.to for s in out) == [W1, W2, W2, W2]


def test_idempotent_submit_with_same_key(sim: Sim) -> None:
    sim.add_worker(W1)
    assert sim(C, submit("a")) == [run(W1, "a")]
    assert sim(C, submit("a")) == []
    assert sim.state.counters["submitted"] == 1
    assert sim(W1, done("a")) == [inline_result(C, "a")]
    # a later submit of the finished key is answered at once, not rerun
    sim(C2, msg("hello-client", version=VERSION))
    assert sim(C2, submit("a")) == [inline_result(C2, "a")]


def test_rate_limit_on_a_wall_clock_spaces_runs_and_never_stalls() -> None:
    """Refills computed from epoch-sized floats land a hair under a whole token.

    A wait shorter than the float spacing of ``now`` once made ``now + wait ==
    now``, and the task was re-queued while already queued (a crash in the loop).
    """
    sim = Sim(prefetch=0)
    sim.now = start = 1_795_000_000.123
    sim.add_worker(W1, slots=4)
    started: dict[str, float] = {}

    def record(sends: list[Send]) -> None:
        for send in sends:
            if send.msg.op == "run":
                started[send.msg["key"]] = sim.now
                record(sim(W1, done(send.msg["key"])))

    for i in range(6):
        fields = {"key": f"r{i}", "deps": [], "priority": 0, "retries": 0, "queue": "default"}
        record(sim(C, msg("submit", [FN, args(f"r{i}")], name="rec", rate_limit="10/s", **fields)))
    for step in range(1, 200):
        if len(started) == 6:
            break
        record(sim.tick(start + step * 0.01))
    assert sorted(started) == [f"r{i}" for i in range(6)]
    times = sorted(started.values())
    assert all(b - a >= 0.1 - 1e-6 for a, b in itertools.pairwise(times))
    assert times[-1] - times[0] < 0.6


def test_token_bucket_counts_a_refill_a_rounding_error_short_as_a_token() -> None:
    bucket = TokenBucket(rate=10.0, per=1.0, tokens=1.0, updated=0.0)
    now = 1_795_000_000.123
    bucket.updated = now
    assert bucket.take(now) == 0.0
    assert bucket.take(now + 0.1) == 0.0  # (now + 0.1) - now is a hair under 0.1
    assert bucket.take(now + 0.1) > 0.09


# -- dependencies ------------------------------------------------------------------------


def test_dependent_waits_then_runs_with_dependency_result(sim: Sim) -> None:
    sim.add_worker(W1)
    assert sim(C, submit("a"), submit("b", "a")) == [run(W1, "a")]
    assert sim.states() == {"a": "processing", "b": "waiting"}
    assert sim(W1, done("a")) == [inline_result(C, "a"), run(W1, "b", "a")]


def test_dependency_already_in_memory_is_attached_at_once(sim: Sim) -> None:
    sim.add_worker(W1)
    sim(C, submit("a"))
    sim(W1, done("a"))
    assert sim(C, submit("b", "a")) == [run(W1, "b", "a")]


def test_several_dependencies_are_attached_in_deps_order(sim: Sim) -> None:
    sim.add_worker(W1, slots=2)
    sim(C, submit("x"), submit("y"), submit("z", "y", "x"))
    sim(W1, done("y"))
    assert sim(W1, done("x")) == [inline_result(C, "x"), run(W1, "z", "y", "x")]


def test_unknown_dependency_errs_with_lost_dependency(sim: Sim) -> None:
    sim.add_worker(W1)
    [reply] = sim(C, submit("b", "nope"))
    assert (reply.to, reply.msg.op, reply.msg["key"]) == (C, "erred", "b")
    assert reply.msg["kind"] == "lost-dependency"
    assert "'nope'" in reply.msg["text"]
    assert reply.msg.payloads == []
    assert sim.states() == {"b": "erred"}


# -- results -----------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "inline"), [(4, True), (5, False)])
def test_result_is_inline_up_to_the_limit(size: int, inline: bool) -> None:
    sim = Sim(prefetch=0, inline_result_bytes=4)
    sim.add_worker(W1)
    sim(C, submit("a"))
    payload = [b"x" * (size - 1), memoryview(b"y")]
    if inline:
        expected = Send(C, msg("result", [payload], key="a", inline=True))
    else:
        expected = Send(C, msg("result", key="a", inline=False))
    assert sim(W1, done("a", payload)) == [expected]


def test_fetch_always_sends_the_result_inline() -> None:
    sim = Sim(prefetch=0, inline_result_bytes=0)
    sim.add_worker(W1)
    sim(C, submit("a"))
    assert sim(W1, done("a")) == [Send(C, msg("result", key="a", inline=False))]
    assert sim(C, msg("fetch", key="a")) == [inline_result(C, "a")]


def test_result_goes_to_every_wanting_client(sim: Sim) -> None:
    sim.add_worker(W1)
    sim(C2, msg("hello-client", version=VERSION))
    sim(C, submit("a"))
    assert sim(C2, msg("want", key="a")) == []
    assert sorted(sim(W1, done("a"))) == sorted([inline_result(C, "a"), inline_result(C2, "a")])


@pytest.mark.parametrize("op", ["want", "fetch"])
def test_want_or_fetch_of_unknown_key_is_lost(sim: Sim, op: str) -> None:
    expected = Send(C, msg("erred", key="zz", kind="lost", text="key is not known"))
    assert sim(C, msg(op, key="zz")) == [expected]


def test_fetch_of_unfinished_task_sends_nothing(sim: Sim) -> None:
    sim(C, submit("a"))
    assert sim(C, msg("fetch", key="a")) == []


# -- failures and retries ----------------------------------------------------------------


def test_failure_with_retries_requeues_then_errs(sim: Sim) -> None:
    sim.add_worker(W1)
    sim(C, submit("a", retries=1))
    assert sim(W1, failed("a")) == [run(W1, "a", attempt=1)]
    assert sim.state.tasks["a"].retries_left == 0
    assert sim(W1, failed("a", text="again")) == [erred(C, "a", text="again")]
    assert sim.state.counters["erred"] == 1


@pytest.mark.parametrize(("backoff", "delays"), [(1.0, [1.0, 2.0, 4.0]), (0.25, [0.25, 0.5, 1.0])])
def test_retry_backoff_is_the_first_delay_then_doubles(
    sim: Sim, backoff: float, delays: list[float]
) -> None:
    """Celery's retry_backoff: True is 1 s, a number is the first delay (was read as True)."""
    sim.add_worker(W1)
    fields = {"key": "a", "deps": [], "priority": 0, "retries": 3, "queue": "default"}
    sim(C, msg("submit", [FN, args("a")], retry_backoff=backoff, retry_jitter=False, **fields))
    for attempt, delay in enumerate(delays, start=1):
        start = sim.now
        assert sim(W1, failed("a")) == []  # waits out the back-off
        assert sim.tick(start + delay - 0.001) == []
        assert sim.tick(start + delay) == [run(W1, "a", attempt=attempt)]


def test_non_remote_failure_is_not_retried(sim: Sim) -> None:
    sim.add_worker(W1)
    sim(C, submit("a", retries=3))
    out = sim(W1, failed("a", kind="serialize", text="cannot pickle"))
    assert out == [erred(C, "a", kind="serialize", text="cannot pickle")]


def test_failure_without_retries_is_inherited_by_dependents(sim: Sim) -> None:
    sim.add_worker(W1)
    sim(C, submit("a"), submit("b", "a"), submit("c", "b"))
    out = sim(W1, failed("a"))
    assert out == [erred(C, "a"), erred(C, "b"), erred(C, "c")]
    assert sim.states() == {"a": "erred", "b": "erred", "c": "erred"}


def test_submit_depending_on_erred_task_errs_at_once(sim: Sim) -> None:
    sim.add_worker(W1)
    sim(C, submit("a"))
    sim(W1, failed("a"))
    assert sim(C, submit("b", "a")) == [erred(C, "b")]


# -- cancel ------------------------------------------------------------------------------


def test_cancel_queued_task_cancels_dependents(sim: Sim) -> None:
    sim(C, submit("a"), submit("b", "a"))
    assert sim(C, msg("cancel", key="a")) == [cancelled(C, "a"), cancelled(C, "b")]
    assert sim.states() == {"a": "cancelled", "b": "cancelled"}
    assert sim.add_worker(W1) == []  # nothing left to run


def test_cancel_processing_task_drops_it_and_frees_the_slot(sim: Sim) -> None:
    sim.add_worker(W1)
    sim(C, submit("a"), submit("next"))
    out = sim(C, msg("cancel", key="a"))
    assert out == [
        Send(W1, msg("drop", key="a", terminate=False)),
        cancelled(C, "a"),
        run(W1, "next"),
    ]
    # the worker finishing it anyway is stale news
    assert sim(W1, done("a")) == []
    assert sim.state.tasks["a"].state is TaskState.CANCELLED


def test_cancel_of_finished_task_is_ignored(sim: Sim) -> None:
    sim.add_worker(W1)
    sim(C, submit("a"))
    sim(W1, done("a"))
    assert sim(C, msg("cancel", key="a")) == []
    assert sim.states() == {"a": "memory"}


def test_submit_depending_on_cancelled_task_is_cancelled(sim: Sim) -> None:
    sim(C, submit("a"))
    sim(C, msg("cancel", key="a"))
    assert sim(C, submit("b", "a")) == [cancelled(C, "b")]


# -- release and forgetting --------------------------------------------------------------


def test_release_of_finished_task_frees_it(sim: Sim) -> None:
    sim.add_worker(W1)
    sim(C, submit("a"))
    sim(W1, done("a"))
    assert sim(C, msg("release", keys=["a"])) == []
    assert sim.state.tasks == {}
    assert sim.state.clients[C].wants == set()


def test_release_of_queued_task_cancels_and_forgets_it(sim: Sim) -> None:
    sim(C, submit("a"))
    assert sim(C, msg("release", keys=["a"])) == []  # the client no longer listens
    assert sim.state.tasks == {}
    assert sim.add_worker(W1) == []


def test_release_of_processing_task_drops_it_on_the_worker(sim: Sim) -> None:
    sim.add_worker(W1)
    sim(C, submit("a"))
    assert sim(C, msg("release", keys=["a"])) == [Send(W1, msg("drop", key="a", terminate=False))]
    assert sim.state.tasks == {}
    assert sim.state.workers[W1].assigned == {}


def test_released_dependency_chain_is_freed_as_dependents_finish(sim: Sim) -> None:
    sim.add_worker(W1)
    sim(C, submit("a"), submit("b", "a"), submit("c", "b"))
    sim(C, msg("release", keys=["a"]), msg("release", keys=["b"]))  # the client only wants c
    assert set(sim.state.tasks) == {"a", "b", "c"}  # still needed by dependents
    assert sim(W1, done("a")) == [run(W1, "b", "a")]  # nobody is told about a
    assert set(sim.state.tasks) == {"a", "b", "c"}
    assert sim(W1, done("b")) == [run(W1, "c", "b")]
    assert set(sim.state.tasks) == {"b", "c"}  # a is no longer needed
    assert sim(W1, done("c")) == [inline_result(C, "c")]
    assert set(sim.state.tasks) == {"c"}
    sim(C, msg("release", keys=["c"]))
    assert sim.state.tasks == {}


def test_release_of_unfinished_chain_forgets_everything(sim: Sim) -> None:
    sim(C, submit("a"), submit("b", "a"), submit("c", "b"))
    out = sim(C, *(msg("release", keys=[k]) for k in "abc"))
    assert out == []
    assert sim.state.tasks == {}


def test_client_goodbye_releases_what_it_wanted(sim: Sim) -> None:
    sim.add_worker(W1)
    sim(C, submit("a"), submit("b"))
    assert sim(C, msg("goodbye")) == [Send(W1, msg("drop", key="a", terminate=False))]
    assert sim.state.tasks == {}
    assert C not in sim.state.clients
    assert sim(C, msg("heartbeat")) == [Send(C, msg("reregister"))]


def test_silent_client_is_dropped_by_tick() -> None:
    sim = Sim(client_timeout=10.0)
    sim(C, submit("a"))
    assert sim.tick(9.0) == [] and C in sim.state.clients
    sim.now = 9.0
    sim(C, msg("heartbeat"))
    sim.tick(15.0)
    assert C in sim.state.clients
    sim.tick(19.5)
    assert C not in sim.state.clients
    assert sim.state.tasks == {}


def test_fire_and_forget_keeps_task_until_done_then_forgets(sim: Sim) -> None:
    sim(C, submit("a"))
    sim(C, msg("fire-and-forget", key="a"), msg("release", keys=["a"]))
    assert sim.states() == {"a": "queued"}
    assert sim.add_worker(W1) == [run(W1, "a")]
    assert sim(W1, done("a")) == []  # nobody to tell
    assert sim.state.tasks == {}


def test_fire_and_forget_dependency_survives_until_dependent_done(sim: Sim) -> None:
    sim.add_worker(W1)
    sim(C, submit("a"), submit("b", "a"), msg("fire-and-forget", key="b"))
    sim(C, msg("release", keys=["a"]), msg("release", keys=["b"]))
    assert sim(W1, done("a")) == [run(W1, "b", "a")]
    assert sim(W1, done("b")) == []
    assert sim.state.tasks == {}


# -- lost workers ------------------------------------------------------------------------


def test_lost_worker_requeues_tasks_and_counts_only_started_ones() -> None:
    sim = Sim(prefetch=2, worker_timeout=5.0)
    sim.add_worker(W1)
    assert sim(C, submit("a"), submit("b"), submit("c")) == [run(W1, k) for k in "abc"]
    sim(W1, msg("started", key="a"))
    assert sim.tick(5.0) == []  # not yet: silent for exactly the timeout
    assert W1 in sim.state.workers
    assert sim.tick(5.5) == []  # lost, and no other worker to take over
    assert W1 not in sim.state.workers
    assert sim.states() == {"a": "queued", "b": "queued", "c": "queued"}
    assert {k: t.kills for k, t in sim.state.tasks.items()} == {"a": 1, "b": 0, "c": 0}
    assert not sim.state.tasks["a"].started
    assert sim.add_worker(W2) == [run(W2, k) for k in "abc"]


def test_lost_worker_counts_oldest_unstarted_task_as_running() -> None:
    # A task that kills its process at once may die before "started" is sent.
    sim = Sim(prefetch=2, worker_timeout=5.0)
    sim.add_worker(W1)
    sim(C, submit("a"), submit("b"))
    sim.tick(6.0)
    assert {k: t.kills for k, t in sim.state.tasks.items()} == {"a": 1, "b": 0}


def test_task_killing_too_many_workers_errs_with_killed_worker() -> None:
    sim = Sim(prefetch=0, worker_timeout=5.0, allowed_failures=3)
    sim(C, submit("a"), submit("b", "a"))
    for round_, worker in enumerate([W1, W2, W3]):
        sim.now = 10.0 * round_
        assert sim.add_worker(worker) == [run(worker, "a")]
        sim(worker, msg("started", key="a"))
        out = sim.tick(sim.now + 6.0)
    assert ops(out) == [(C, "erred", "a"), (C, "erred", "b")]
    assert out[0].msg["kind"] == out[1].msg["kind"] == "killed-worker"
    assert "3 workers" in out[0].msg["text"]
    assert sim.states() == {"a": "erred", "b": "erred"}


def test_killed_worker_failure_that_forgets_another_assigned_task() -> None:
    # c and a both run on W1; a is only kept for b, which also needs c.  When c fails
    # with killed-worker, b inherits the error and a (now unneeded) is forgotten while
    # _remove_worker is still walking W1's assigned keys.
    sim = Sim(prefetch=0, allowed_failures=1, worker_timeout=5.0)
    sim.add_worker(W1, slots=2)
    sim(C, submit("c"), submit("a"), submit("b", "c", "a"), msg("release", keys=["a"]))
    sim(W1, msg("started", key="c"), msg("started", key="a"))
    out = sim.tick(6.0)
    assert [s for s in ops(out) if s[0] == C] == [(C, "erred", "c"), (C, "erred", "b")]
    assert sim.states() == {"c": "erred", "b": "erred"}


def test_worker_goodbye_requeues_without_counting_kills(sim: Sim) -> None:
    sim.add_worker(W1)
    sim.add_worker(W2)
    sim(C, submit("a"), submit("b"))
    sim(W1, msg("started", key="a"))
    assert sim(W1, msg("goodbye")) == []  # W2 is busy with b
    assert W1 not in sim.state.workers
    assert sim.state.tasks["a"].kills == 0
    assert sim(W2, done("b")) == [inline_result(C, "b"), run(W2, "a")]


def test_repeated_worker_hello_keeps_its_assignments(sim: Sim) -> None:
    # A worker that thought we forgot it says hello again; it still runs "a",
    # so re-sending "a" would run it twice.
    sim.add_worker(W1)
    sim(C, submit("a"))
    assert sim.add_worker(W1) == []
    assert list(sim.state.workers[W1].assigned) == ["a"]
    assert sim.state.tasks["a"].kills == 0


def test_worker_leaving_hands_back_unstarted_tasks_and_gets_nothing_new() -> None:
    sim = Sim(prefetch=2)
    sim.add_worker(W1)
    sim(C, submit("a"), submit("b"), submit("c"))
    sim(W1, msg("started", key="a"))
    assert sim(W1, msg("worker-leaving", keys=["a", "b", "c"])) == []
    assert sim.state.workers[W1].closing
    assert list(sim.state.workers[W1].assigned) == ["a"]  # a runs to completion
    assert sim.states() == {"a": "processing", "b": "queued", "c": "queued"}
    assert sim(W1, done("a")) == [inline_result(C, "a")]  # nothing new for W1
    assert sim(C, submit("d")) == []
    assert sim.add_worker(W2) == [run(W2, k) for k in "bcd"]


# -- stale news and queues ---------------------------------------------------------------


@pytest.mark.parametrize("news", [done("a"), failed("a"), msg("started", key="a")])
def test_stale_news_from_another_worker_is_ignored(sim: Sim, news: Message) -> None:
    sim.add_worker(W1)
    sim.add_worker(W2)
    sim(C, submit("a"))
    assert sim(W2, news) == []
    task = sim.state.tasks["a"]
    assert (task.state, task.worker, task.started) == (TaskState.PROCESSING, W1, False)


def test_news_about_unknown_key_is_ignored(sim: Sim) -> None:
    sim.add_worker(W1)
    assert sim(W1, done("ghost"), failed("ghost"), msg("started", key="ghost")) == []
    assert sim.state.tasks == {}


def test_task_goes_only_to_a_worker_consuming_its_queue(sim: Sim) -> None:
    sim.add_worker(W1, queues=["default"])
    assert sim(C, submit("mail", queue="emails")) == []
    assert sim.states() == {"mail": "queued"}
    assert sim.add_worker(W2, queues=["emails"]) == [run(W2, "mail")]
    assert sim(C, submit("plain")) == [run(W1, "plain")]


def test_worker_without_queues_consumes_default(sim: Sim) -> None:
    sim(C, submit("a"))
    assert sim.add_worker(W1, queues=[]) == [run(W1, "a")]


def test_worker_on_several_queues_takes_highest_priority_first() -> None:
    sim = Sim(prefetch=10)
    sim(C, submit("d1"), submit("e1", queue="emails", priority=1), submit("d2", priority=2))
    out = sim.add_worker(W1, queues=["default", "emails"])
    assert [s.msg["key"] for s in out] == ["d2", "e1", "d1"]


def test_task_back_from_a_lost_worker_goes_ahead_of_newer_ones(sim: Sim) -> None:
    sim.add_worker(W1)
    sim(C, submit("a"), submit("b"), submit("c"))
    assert sim(W1, msg("goodbye")) == []  # "a" is queued again, behind nothing newer
    assert sim.add_worker(W2) == [run(W2, "a")]
    assert sim(C, submit("d", priority=1)) == []
    assert sim(W2, done("a")) == [inline_result(C, "a"), run(W2, "d")]
    assert sim(W2, done("d")) == [inline_result(C, "d"), run(W2, "b")]


def test_key_submitted_again_after_a_cancel_waits_its_turn(sim: Sim) -> None:
    # The cancelled task's queue entry goes stale: the new task with its key
    # must not take the old one's place, ahead of "b".
    sim(C, submit("a"), submit("b"))
    sim(C, msg("cancel", key="a"), msg("release", keys=["a"]))
    sim(C, submit("a"))
    assert sim.add_worker(W1) == [run(W1, "b")]
    assert sim(W1, done("b")) == [inline_result(C, "b"), run(W1, "a")]
    assert sim(W1, done("a")) == [inline_result(C, "a")]


def test_ready_queue_pops_in_priority_then_submission_order_whatever_the_arrivals() -> None:
    """New tasks mostly arrive in order (the fast path); some jump ahead: a higher
    priority, or an older task coming back (lost worker, retry).  Some go stale."""
    rng = random.Random(7)
    ready = ReadyQueues()
    model: list[tuple[int, int, str]] = []  # what should wait, sorted
    tasks: dict[str, TaskRecord] = {}
    given: list[TaskRecord] = []  # popped: may come back
    seqs = itertools.count()
    clock = itertools.count()

    def leave(task: TaskRecord, state: TaskState) -> None:  # as the lifecycle's transition does
        task.state = state
        ready.left(task)

    def queue(task: TaskRecord) -> None:
        task.state = TaskState.QUEUED
        task.queued_at = float(next(clock))
        ready.push(task)
        model.append((-task.priority, task.seq, task.key))
        model.sort()

    for step in range(3000):
        roll = rng.random()
        if roll < 0.45:
            key = f"t{step}"
            priority = rng.choice([0, 0, 0, 0, 1, -1, 5])
            queue(
                tasks.setdefault(
                    key, TaskRecord(key, key, (), (), (), priority, next(seqs), "q", 0)
                )
            )
        elif roll < 0.5 and given:
            queue(given.pop(rng.randrange(len(given))))
        elif roll < 0.6 and model:  # cancelled while queued: its entry goes stale
            leave(tasks[model.pop(rng.randrange(len(model)))[2]], TaskState.CANCELLED)
        else:
            popped = ready.pop(["q"])
            assert (popped.key if popped else None) == (model.pop(0)[2] if model else None)
            if popped is not None:
                leave(popped, TaskState.PROCESSING)
                given.append(popped)
        depths, oldest = ready.summary()
        assert depths == {"q": len(model)}
        waiting = [tasks[key].queued_at for *_, key in model]
        assert oldest == ({"q": min(waiting)} if waiting else {})


def test_restore_runs_a_task_whose_dependent_lost_another_dependency() -> None:
    """X needs C (durable) and M (a plain future, not journaled).  After a restart
    X fails for want of M; C must still run, whatever the journal's order."""
    before = Sim(prefetch=0, journal=True)
    detached = {"detached": True, "ack": True, "result_ttl": 3600.0}
    before(C, submit("m"))
    before(C, msg("submit", [FN, args("c")], **task_fields("c"), **detached))
    before(C, msg("submit", [FN, args("x")], **task_fields("x", "c", "m"), **detached))
    records = {key: record for table, key, record in before.state.take_journal() if table == "task"}
    assert set(records) == {"c", "x"}

    after = Sim(prefetch=0, journal=True)
    after.state.restore([records["x"], records["c"]], {}, [], now=0.0)
    out = after.add_worker(W1)
    assert [s.msg["key"] for s in out if s.msg.op == "run"] == ["c"]
    assert after.states() == {"c": "processing", "x": "erred"}


def task_fields(key: str, *deps: str) -> dict[str, Any]:
    return {"key": key, "deps": list(deps), "priority": 0, "retries": 0, "queue": "default"}


# -- info --------------------------------------------------------------------------------


def test_info_counts(sim: Sim) -> None:
    sim.add_worker(W1, slots=1, queues=["default", "emails"])
    sim(C, submit("a"), submit("b"), submit("c", "b"), submit("m", queue="emails"))
    sim(W1, msg("heartbeat", memory=123))
    [reply] = sim(C, msg("info", rid=7))
    assert (reply.to, reply.msg.op, reply.msg["rid"]) == (C, "info-reply", 7)
    info = reply.msg["info"]
    assert info["tasks"] == 4
    assert info["by_state"] == {"processing": 1, "queued": 2, "waiting": 1}
    assert info["queues"] == {"default": 1, "emails": 1}
    assert info["workers"] == [
        {
            "name": "w",
            "pid": 1,
            "slots": 1,
            "queues": ["default", "emails"],
            "assigned": 1,
            "running": 0,
            "memory": 123,
            "last_seen": 0.0,
            "peer": None,
            "kept": 0,
            "kept_bytes": 0,
            "managed": 0,
            "spilled": 0,
            "paused": False,
        }
    ]
    assert info["clients"] == 1
    assert info["counters"] == {"done": 0, "erred": 0, "submitted": 4}


def test_info_queue_length_excludes_cancelled_tasks(sim: Sim) -> None:
    sim(C, submit("a"), submit("b", queue="emails"))
    sim(C, msg("cancel", key="a"), msg("release", keys=["b"]))
    assert sim.state.info()["queues"] in ({}, {"default": 0, "emails": 0})


def test_state_counts_kept_as_tasks_move_match_a_full_count() -> None:
    """``info()`` keeps counts by state as tasks move instead of walking every task."""
    sim = Sim(prefetch=0)

    def recount() -> dict[str, int]:
        return dict(Counter(task.state.value for task in sim.state.tasks.values()))

    steps: list[Callable[[], object]] = [
        lambda: sim.add_worker(W1, slots=1),
        lambda: sim(C, submit("a"), submit("b"), submit("c", "b"), submit("d", retries=1)),
        lambda: sim(W1, done("a")),
        lambda: sim(W1, failed("b")),
        lambda: sim(W1, failed("d")),  # retried: back to queued
        lambda: sim(C, msg("cancel", key="d")),
        lambda: sim(C, msg("release", keys=["a", "b", "c", "d"])),
        lambda: sim.tick(100.0),
    ]
    for step in steps:
        step()
        assert sim.state.info()["by_state"] == recount()
    assert recount() == {}


# -- the transition table ----------------------------------------------------------------


def _illegal_moves() -> list[tuple[TaskState, TaskState]]:
    return [(a, b) for a in TaskState for b in TaskState if b not in TRANSITIONS[a]]


@pytest.mark.parametrize(("old", "new"), _illegal_moves(), ids=str)
def test_transition_table_rejects_illegal_moves(old: TaskState, new: TaskState) -> None:
    with pytest.raises(InvalidTransition, match=f"'k': {old.value} -> {new.value}"):
        check_transition("k", old, new)


def test_transition_table_allows_the_listed_moves_and_finished_states_are_final() -> None:
    for old, allowed in TRANSITIONS.items():
        for new in allowed:
            check_transition("k", old, new)
    # memory is final but for a result lost with the worker that kept it
    assert TRANSITIONS[TaskState.MEMORY] == {TaskState.WAITING, TaskState.ERRED}
    assert {s for s in TaskState if not TRANSITIONS[s]} == set(FINISHED) - {TaskState.MEMORY}
    assert all(s.finished == (s in FINISHED) for s in TaskState)


def test_scheduler_refuses_an_illegal_move(sim: Sim) -> None:
    sim.add_worker(W1)
    sim(C, submit("a"))
    sim(W1, done("a"))
    with pytest.raises(InvalidTransition):
        sim.state._transition(sim.state.tasks["a"], TaskState.QUEUED)
    assert sim.states() == {"a": "memory"}


def detached_submit(key: str, **extra: Any) -> Message:
    fields = {"detached": True, "ack": True, "result_ttl": 3600.0, **extra}
    return msg("submit", [FN, args(key)], **task_fields(key), **fields)


def test_a_held_detached_task_pushes_its_outcome_to_the_submitter(sim: Sim) -> None:
    sim.add_worker(W1)
    assert ops(sim(C, detached_submit("a", held=True))) == [(C, "accepted", None), (W1, "run", "a")]
    assert sim(W1, done("a")) == [inline_result(C, "a")]
    assert ops(sim(C, detached_submit("b"))) == [(C, "accepted", None), (W1, "run", "b")]
    assert sim(W1, done("b")) == []  # not held: nobody is told


def test_releasing_a_held_detached_task_stops_the_push_not_the_task(sim: Sim) -> None:
    sim.add_worker(W1)
    sim(C, detached_submit("a", held=True))
    assert sim(C, msg("release", keys=["a"])) == []  # not cancelled: it is detached
    assert sim(W1, done("a")) == []
    assert sim.states() == {"a": "memory"}  # kept for lookups by id until its TTL


def test_one_accepted_answers_a_whole_batch_before_anything_else_goes(sim: Sim) -> None:
    sim.add_worker(W1)
    out = sim(C, *(detached_submit(k) for k in "abc"))
    assert out[0] == Send(C, msg("accepted", keys=["a", "b", "c"]))
    assert ops(out[1:]) == [(W1, "run", "a")]  # one slot, no prefetch


def test_welcomes_carry_the_servers_fields_and_hellos_their_namespace() -> None:
    state = SchedulerState(SchedulerConfig())
    state.welcome_fields = {"shm": "here", "shm_tag": "0badcafe"}
    [client_welcome] = state.handle(C, [msg("hello-client", version=VERSION, shm="here")], 0.0)
    hello = msg("hello-worker", version=VERSION, slots=1, queues=["default"], name="w", pid=1)
    [worker_welcome] = state.handle(W1, [hello], 0.0)
    for welcome in (client_welcome, worker_welcome):
        assert welcome.msg.op == "welcome" and welcome.msg["shm_tag"] == "0badcafe"
    assert (state.shm_namespace(C), state.shm_namespace(W1), state.shm_namespace(W2)) == (
        "here",
        None,
        None,
    )
