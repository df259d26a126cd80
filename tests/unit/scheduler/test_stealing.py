"""Prefetched work taken back from a worker stuck on overdue tasks (issue 14, M11).

The fake clock is the ``now`` of each event; outputs are whole lists of ``Send``.
"""

from __future__ import annotations

from celeriac.scheduler.state import Send
from celeriac.testing import SimulatedScheduler as Sim
from celeriac.testing import message as msg

from .test_state import W1, W2, run, submit

C = b"client-1"


def stuck_on_a(**config: float) -> Sim:
    """W1 (one slot) runs ``a`` since t=0 and holds ``b`` prefetched; W2 joins idle."""
    sim = Sim(prefetch=1, **config)
    sim.add_worker(W1)
    assert sim(C, submit("a"), submit("b")) == [run(W1, "a"), run(W1, "b")]
    assert sim(W1, msg("started", key="a")) == []
    assert sim.add_worker(W2) == []  # nothing ready for it
    return sim


def test_a_worker_whose_slots_are_overdue_hands_its_prefetched_tasks_to_an_idle_one() -> None:
    sim = stuck_on_a()
    assert sim.tick(0.9) == []  # a is not overdue yet (steal_after = 1 s)
    assert sim.tick(1.2) == [Send(W1, msg("steal", keys=["b"]))]
    assert sim.tick(1.3) == []  # asked once, until it answers
    assert sim(W1, msg("handed-back", keys=["b"])) == [run(W2, "b")]
    assert list(sim.state.workers[W1].assigned) == ["a"]


def test_a_task_started_before_the_answer_stays_where_it_runs() -> None:
    sim = stuck_on_a()
    assert sim.tick(1.2) == [Send(W1, msg("steal", keys=["b"]))]
    assert sim(W1, msg("started", key="b"), msg("handed-back", keys=[])) == []
    assert list(sim.state.workers[W1].assigned) == ["a", "b"]
    assert sim.tick(5.0) == []  # nothing waits there any more


def test_overdue_means_twice_the_expected_duration_too() -> None:
    sim = stuck_on_a(unknown_duration=2.0)  # a is expected to take 2 s
    assert sim.tick(3.9) == []
    assert sim.tick(4.1) == [Send(W1, msg("steal", keys=["b"]))]


def test_no_steal_for_a_worker_that_serves_other_queues() -> None:
    sim = Sim(prefetch=1)
    sim.add_worker(W1)
    assert sim(C, submit("a"), submit("b")) == [run(W1, "a"), run(W1, "b")]
    assert sim(W1, msg("started", key="a")) == []
    assert sim.add_worker(W2, queues=("emails",)) == []
    assert sim.tick(3.0) == []


def test_no_steal_while_another_slot_of_the_worker_is_not_overdue() -> None:
    sim = Sim(prefetch=1)
    sim.add_worker(W1, slots=2)
    assert sim(C, submit("a"), submit("b"), submit("c")) == [
        run(W1, "a"),
        run(W1, "b"),
        run(W1, "c"),
    ]
    assert sim(W1, msg("started", key="a")) == []
    sim.now = 1.0
    assert sim(W1, msg("started", key="b")) == []  # b started a second later
    assert sim.add_worker(W2) == []
    assert sim.tick(1.5) == []  # a is overdue, b not: c runs in b's slot soon
    assert sim.tick(2.5) == [Send(W1, msg("steal", keys=["c"]))]
