"""FutureTable: states by key, counted Futures, releases; no sockets (the link is recorded)."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from celeriac.client import forks
from celeriac.client.future_table import (
    CANCELLED,
    ERROR,
    FINISHED,
    LOST,
    PENDING,
    FutureTable,
)
from celeriac.errors import FutureLostError, TaskExpiredError, TaskRevokedError
from celeriac.wire.protocol import Message
from celeriac.wire.serialize import dumps_plain


class Link:
    """What the client gives a table: records sends and wake-ups; waits answer from a list."""

    def __init__(self) -> None:
        self.sent: list[Message] = []
        self.wakes = 0
        self.waits: list[float | None] = []

    def wait_until(self, ready: Callable[[], bool], timeout: float | None) -> bool:
        self.waits.append(timeout)
        return ready()

    def send(self, msg: Message) -> None:
        self.sent.append(msg)

    def wake(self) -> None:
        self.wakes += 1


@pytest.fixture
def link() -> Link:
    return Link()


@pytest.fixture
def table(link: Link) -> FutureTable:
    return FutureTable(wait_until=link.wait_until, send=link.send, wake=link.wake)


def result(key: str, value: object) -> Message:
    return Message("result", {"key": key, "inline": True}, [dumps_plain(value)])


def test_futures_for_one_key_share_one_state(table: FutureTable) -> None:
    first, second = table.add("k"), table.add("k")
    assert first is second and first.status == PENDING
    assert table.get("k") is first and "k" in table and len(table) == 1


def test_the_last_drop_forgets_the_key_and_queues_one_release(
    table: FutureTable, link: Link
) -> None:
    table.add("k")
    table.add("k")
    table.add("other")
    table.drop("k")
    assert "k" in table and table.releases() == [] and link.wakes == 0
    table.drop("k")
    table.drop("other")
    assert "k" not in table and link.wakes == 2
    (release,) = table.releases()
    assert release.op == "release" and release["keys"] == ["k", "other"]
    assert table.releases() == []  # taken once


def test_a_key_held_again_before_its_release_went_out_is_not_released(
    table: FutureTable,
) -> None:
    # AsyncResult(id).get() right after the .delay() that made it was dropped: the
    # new Future's "want" must not be followed by the old one's release.
    table.add("k")
    table.drop("k")
    table.add("k")
    table.add("other")
    table.drop("other")
    (release,) = table.releases()
    assert release["keys"] == ["other"] and "k" in table


def test_a_closed_table_releases_nothing(table: FutureTable, link: Link) -> None:
    table.add("k")
    table.close()
    table.drop("k")
    assert table.releases() == [] and link.wakes == 0


def test_a_table_inherited_by_a_forked_child_releases_nothing(
    table: FutureTable, link: Link, monkeypatch: pytest.MonkeyPatch
) -> None:
    table.add("k")
    monkeypatch.setattr(forks.process, "pid", forks.process.pid + 1)  # as after a fork
    table.drop("k")
    assert "k" in table and table.releases() == [] and link.wakes == 0


def test_outcomes_settle_the_state_of_their_key(table: FutureTable) -> None:
    ok, failed, lost, cancelled = (table.add(k) for k in ("ok", "failed", "lost", "cancelled"))
    table.settle(result("ok", 42))
    table.settle(Message("erred", {"key": "failed", "kind": "ValueError", "text": "bad"}))
    table.settle(Message("erred", {"key": "lost", "kind": "lost", "text": "unknown key"}))
    table.settle(Message("cancelled", {"key": "cancelled", "reason": "expired"}))
    assert (ok.status, ok.value()) == (FINISHED, 42)
    assert failed.status == ERROR and "bad" in str(failed.exception())
    assert lost.status == LOST and isinstance(lost.exception(), FutureLostError)
    assert cancelled.status == CANCELLED and isinstance(cancelled.exception(), TaskExpiredError)
    assert all(s.settled() for s in (ok, failed, lost, cancelled))


def test_an_outcome_for_a_key_nobody_holds_is_ignored(table: FutureTable) -> None:
    table.settle(result("gone", 1))
    assert "gone" not in table


def test_a_result_too_big_to_push_is_fetched(table: FutureTable, link: Link) -> None:
    state = table.add("big")
    table.settle(Message("result", {"key": "big", "inline": False}))
    assert state.status == FINISHED and state.payload is None and state.settled()
    table.fetch("big")
    assert not state.settled()  # waits again, for the fetched frames
    assert [(m.op, m["key"]) for m in link.sent] == [("fetch", "big")]


def test_pending_lists_the_keys_without_an_outcome(table: FutureTable) -> None:
    table.add("a")
    table.add("b")
    table.settle(result("a", 1))
    assert table.pending() == ["b"]


def test_waiting_and_fire_and_forget_go_through_the_link(table: FutureTable, link: Link) -> None:
    assert table.wait_until(lambda: True, 1.5) is True
    table.fire_and_forget("k")
    assert link.waits == [1.5]
    assert [(m.op, m["key"]) for m in link.sent] == [("fire-and-forget", "k")]


def test_callbacks_run_once_when_the_outcome_lands(table: FutureTable) -> None:
    state = table.add("k")
    calls: list[str] = []
    state.callbacks.append(lambda: calls.append("done"))
    state.callbacks.append(lambda: 1 / 0)  # logged, never passed on
    table.settle(Message("cancelled", {"key": "k"}))
    assert calls == ["done"] and state.callbacks == []
    assert isinstance(state.exception(), TaskRevokedError)


def test_counts_stay_exact_under_threads(table: FutureTable) -> None:
    def churn() -> None:
        for _ in range(2000):
            table.add("k")
            table.drop("k")

    table.add("k")  # held throughout: never released
    threads = [threading.Thread(target=churn) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert "k" in table and table.releases() == []
