"""AckTracker: acknowledged submissions in flight, their waiters, what a restart resends."""

from __future__ import annotations

import threading

import pytest

from celeriac.client.acks import Acceptance, AckTracker
from celeriac.wire.protocol import Message


@pytest.fixture
def acks() -> AckTracker:
    return AckTracker()


def submit(key: str) -> Message:
    return Message("submit", {"key": key, "ack": True})


def periodic(name: str) -> Message:
    return Message("periodic-set", {"name": name, "ack": True})


def test_every_key_is_tracked_until_accepted(acks: AckTracker) -> None:
    messages = [submit("a"), submit("b"), periodic("job")]
    acceptance = acks.track(messages)
    assert acceptance.pending == {"a", "b", "job"} and not acceptance.done()
    assert len(acks) == 3 and acks.unacknowledged() == messages
    acks.accepted(["a", "job"])
    assert acceptance.pending == {"b"} and acks.unacknowledged() == [messages[1]]
    acks.accepted(["b"])
    assert acceptance.done() and len(acks) == 0 and acks.unacknowledged() == []


def test_abandoning_stops_tracking_what_is_still_pending(acks: AckTracker) -> None:
    acceptance = acks.track([submit("a"), submit("b")])
    acks.accepted(["a"])
    acks.abandon(acceptance)  # its wait timed out
    assert acceptance.pending == {"b"}  # what the error message counts
    assert acks.unacknowledged() == []  # its caller was told: not resent after a restart
    acks.accepted(["b"])  # a late answer finds nobody, harmlessly
    assert len(acks) == 0


def test_abandoning_one_caller_keeps_another_waiting_for_the_same_key(acks: AckTracker) -> None:
    first = acks.track([submit("same-id")])
    second = acks.track([submit("same-id")])
    acks.abandon(first)
    assert len(acks) == 1
    acks.accepted(["same-id"])
    assert second.done()


def test_a_refusal_ends_the_wait_with_its_reason_and_is_not_resent(acks: AckTracker) -> None:
    acceptance = acks.track([submit("a"), submit("b"), periodic("job")])
    acks.accepted(["a"])
    acks.refused(["b", "job"], "journal", "disk full at /j.sqlite3")
    assert acceptance.done() and acceptance.refusal == ("journal", "disk full at /j.sqlite3")
    assert acks.unacknowledged() == [] and len(acks) == 0
    acks.refused(["never-sent"], "journal", "disk full")  # ignored, like a late accepted


def test_an_accepted_for_an_unknown_key_is_ignored(acks: AckTracker) -> None:
    acks.accepted(["never-sent"])
    assert len(acks) == 0


def test_what_a_restart_resends_is_in_sending_order(acks: AckTracker) -> None:
    first, second = submit("x"), submit("y")
    acks.track([first])
    acks.track([second])
    assert acks.unacknowledged() == [first, second]


def test_acceptance_is_safe_across_threads() -> None:
    keys = sorted(f"k{i}" for i in range(1000))
    acceptance = Acceptance(set(keys))

    def accept(part: list[str]) -> None:
        for key in part:
            acceptance.accepted(key)

    threads = [threading.Thread(target=accept, args=(part,)) for part in (keys[::2], keys[1::2])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert acceptance.done()
