"""The state machine while its journal cannot be written: durable work refused, the rest served.

The server tells the state (``journal_failed``, ``journal_restored``); the
state stays pure.  Each test spells out the whole list of commands.
"""

from __future__ import annotations

from typing import Any

import pytest

from celeriac.scheduler.server import _refuse
from celeriac.scheduler.state import Send
from celeriac.schedules import every
from celeriac.testing import SimulatedScheduler as Sim
from celeriac.testing import message as msg
from celeriac.testing import ops
from celeriac.wire.protocol import Message

C, C2 = b"client-1", b"client-2"
W1 = b"worker-1"
FN = [b"pickled-function"]
DOWN = "disk full at /var/lib/celeriac/journal.sqlite3"


def fields(key: str, *deps: str) -> dict[str, Any]:
    return {"key": key, "deps": list(deps), "priority": 0, "retries": 0, "queue": "default"}


def plain(key: str) -> Message:
    return msg("submit", [FN, [key.encode()]], **fields(key))


def durable(key: str, *deps: str, ack: bool = True) -> Message:
    extra = {"detached": True, "ack": ack, "result_ttl": 3600.0}
    return msg("submit", [FN, [key.encode()]], **fields(key, *deps), **extra)


def periodic_set(name: str) -> Message:
    job = {"name": name, "schedule": every(seconds=60).to_dict(), "options": {}}
    job |= {"misfire": "skip", "grace": 1.0, "allow_overlap": False, "ack": True}
    return msg("periodic-set", [FN, [b"args"]], **job)


def refused(to: bytes, *keys: str) -> Send:
    return Send(to, msg("refused", keys=list(keys), reason="journal", text=DOWN))


def accepted(to: bytes, *keys: str) -> Send:
    return Send(to, msg("accepted", keys=list(keys)))


@pytest.fixture
def sim() -> Sim:
    """A journaling state, its journal just found unwritable, one worker with one slot."""
    s = Sim(prefetch=0, journal=True)
    s.add_worker(W1)
    s.state.take_journal()
    assert s.state.journal_failed(DOWN) == ([], [])
    return s


def test_durable_submissions_are_refused_naming_their_keys(sim: Sim) -> None:
    assert sim(C, durable("a"), durable("b")) == [refused(C, "a", "b")]
    assert sim.state.tasks == {} and sim.state.journal_ops == []


def test_a_durable_submission_without_ack_is_refused_too(sim: Sim) -> None:
    assert sim(C, durable("a", ack=False)) == [refused(C, "a")]
    assert sim.state.tasks == {}


def test_periodic_jobs_are_not_set(sim: Sim) -> None:
    assert sim(C, periodic_set("nightly")) == [refused(C, "nightly")]
    assert sim.state.periodic.jobs == {}


def test_plain_futures_are_served(sim: Sim) -> None:
    assert ops(sim(C, plain("p"))) == [(W1, "run", "p")]
    done = msg("task-done", [[b"42"]], key="p")
    assert ops(sim(W1, done)) == [(C, "result", "p")]


def test_refused_and_plain_work_in_one_batch(sim: Sim) -> None:
    out = sim(C, durable("d"), plain("p"))
    assert ops(out) == [(C, "refused", None), (W1, "run", "p")]
    assert out[0] == refused(C, "d")


def test_after_the_journal_is_restored_durable_work_is_accepted(sim: Sim) -> None:
    sim(C, durable("a"))
    sim.state.journal_restored()
    assert sim.state.journal_unavailable is None
    out = sim(C, durable("a"))
    assert ops(out) == [(C, "accepted", None), (W1, "run", "a")]
    assert [(table, key) for table, key, _ in sim.state.take_journal()] == [("task", "a")]


def test_the_batch_whose_commit_failed_refuses_and_drops_what_it_created() -> None:
    sim = Sim(prefetch=0, journal=True)
    sim.add_worker(W1)
    out = sim(C, durable("a"), durable("b", "a"), periodic_set("nightly"), plain("p"))
    assert ops(out) == [(C, "accepted", None), (W1, "run", "a")]
    sim.state.take_journal()  # what the server tried to commit
    keys, more = sim.state.journal_failed(DOWN)
    assert keys == ["a", "b", "nightly"]
    # "a" was on its way to the worker: taken back, and the slot goes to the plain future
    assert ops(more) == [(W1, "drop", "a"), (W1, "run", "p")]
    assert set(sim.state.tasks) == {"p"}  # refused tasks do not run, nor linger
    assert sim.state.journal_unavailable == DOWN
    # their removal is journaled like any other, to be written when writes succeed
    journal = [(table, key, record) for table, key, record in sim.state.take_journal()]
    assert ("task", "a", None) in journal and ("task", "b", None) in journal


def test_a_key_journaled_before_the_failed_batch_stays(sim: Sim) -> None:
    sim.state.journal_restored()
    sim(C, durable("old"))
    sim.state.take_journal()  # committed
    sim(C, durable("old"))  # the same key again (a resend): accepted on the earlier commit
    sim.state.take_journal()
    keys, more = sim.state.journal_failed(DOWN)
    assert (keys, more) == ([], [])
    assert "old" in sim.state.tasks


def test_without_a_journal_nothing_is_remembered_for_a_failure() -> None:
    sim = Sim(prefetch=0)  # journal=False: the embedded cluster
    for i in range(3):
        sim(C, durable(f"t{i}"))
    assert sim.state.journal_failed(DOWN) == ([], [])


# -- the server's part: accepted turned into refused ---------------------------------------


def test_the_server_turns_the_failed_batchs_acceptances_into_refusals() -> None:
    commands = [
        accepted(C, "a", "x", "b"),
        Send(W1, msg("run", key="a")),
        accepted(C2, "a"),
        accepted(C2, "y"),
    ]
    assert _refuse(commands, {"a", "b"}, DOWN) == [
        accepted(C, "x"),
        refused(C, "a", "b"),
        Send(W1, msg("run", key="a")),
        refused(C2, "a"),
        accepted(C2, "y"),
    ]
    assert _refuse(commands, set(), DOWN) is commands
