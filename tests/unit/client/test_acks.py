"""AckTracker: acknowledged submissions in flight, their waiters, what a restart resends."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from celeriac.client.acks import Acceptance, AckTracker
from celeriac.wire.protocol import Message


class Link:
    """Records what is sent; a wait runs ``during_wait`` (the scheduler answering) first."""

    def __init__(self) -> None:
        self.sent: list[Message] = []
        self.during_wait: Callable[[], None] = lambda: None

    def send_now(self, msgs: list[Message]) -> None:
        self.sent.extend(msgs)

    def wait_until(self, ready: Callable[[], bool], timeout: float | None) -> bool:
        self.during_wait()
        return ready()


@pytest.fixture
def link() -> Link:
    return Link()


@pytest.fixture
def acks(link: Link) -> AckTracker:
    return AckTracker(send_now=link.send_now, wait_until=link.wait_until)


def submit(key: str) -> Message:
    return Message("submit", {"key": key, "ack": True})


def periodic(name: str) -> Message:
    return Message("periodic-set", {"name": name, "ack": True})


def test_send_tracks_every_key_until_accepted(acks: AckTracker, link: Link) -> None:
    messages = [submit("a"), submit("b"), periodic("job")]
    acceptance = acks.send(messages)
    assert link.sent == messages
    assert acceptance.pending == {"a", "b", "job"} and not acceptance.done()
    assert len(acks) == 3 and acks.unacknowledged() == messages
    acks.accepted(["a", "job"])
    assert acceptance.pending == {"b"} and acks.unacknowledged() == [messages[1]]
    acks.accepted(["b"])
    assert acceptance.done() and len(acks) == 0 and acks.unacknowledged() == []


def test_wait_returns_once_the_scheduler_accepts(acks: AckTracker, link: Link) -> None:
    acceptance = acks.send([submit("a")])
    link.during_wait = lambda: acks.accepted(["a"])
    assert acks.wait(acceptance, 1.0) is True


def test_a_wait_that_times_out_stops_tracking_what_is_still_pending(
    acks: AckTracker, link: Link
) -> None:
    acceptance = acks.send([submit("a"), submit("b")])
    link.during_wait = lambda: acks.accepted(["a"])
    assert acks.wait(acceptance, 0.1) is False
    assert acceptance.pending == {"b"}  # what the error message counts
    assert acks.unacknowledged() == []  # its caller was told: not resent after a restart
    acks.accepted(["b"])  # a late answer finds nobody, harmlessly


def test_abandoning_one_caller_keeps_another_waiting_for_the_same_key(acks: AckTracker) -> None:
    first = acks.send([submit("same-id")])
    second = acks.send([submit("same-id")])
    acks.abandon(first)
    assert len(acks) == 1
    acks.accepted(["same-id"])
    assert second.done()


def test_an_accepted_for_an_unknown_key_is_ignored(acks: AckTracker) -> None:
    acks.accepted(["never-sent"])
    assert len(acks) == 0


def test_acceptance_is_safe_across_threads() -> None:
    keys = {f"k{i}" for i in range(1000)}
    acceptance = Acceptance(set(keys))
    threads = [
        threading.Thread(target=lambda part=part: [acceptance.accepted(k) for k in part])
        for part in (sorted(keys)[::2], sorted(keys)[1::2])
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert acceptance.done()
