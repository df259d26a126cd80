"""ReplyRouter: request ids to replies, and late replies dropped; no sockets."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from celeriac.client.replies import REPLY_OPS, ReplyRouter
from celeriac.errors import SchedulerUnavailable
from celeriac.wire.protocol import Message


class Link:
    """Records requests; a wait runs ``during_wait`` (the scheduler answering) first."""

    def __init__(self) -> None:
        self.sent: list[Message] = []
        self.timeouts: list[float | None] = []
        self.during_wait: Callable[[], None] = lambda: None

    def send_now(self, msgs: list[Message]) -> None:
        self.sent.extend(msgs)

    def wait_until(self, ready: Callable[[], bool], timeout: float | None) -> bool:
        self.timeouts.append(timeout)
        self.during_wait()
        return ready()


@pytest.fixture
def link() -> Link:
    return Link()


@pytest.fixture
def router(link: Link) -> ReplyRouter:
    return ReplyRouter(send_now=link.send_now, wait_until=link.wait_until)


def answer(router: ReplyRouter, link: Link, **fields: object) -> None:
    rid = link.sent[-1]["rid"]
    router.deliver(Message("status-reply", {"rid": rid, **fields}))


def test_a_request_gets_the_reply_that_carries_its_id(router: ReplyRouter, link: Link) -> None:
    link.during_wait = lambda: answer(router, link, states={"k": "SUCCESS"})
    reply = router.request("status", {"keys": ["k"]}, 2.0)
    assert reply["states"] == {"k": "SUCCESS"}
    (sent,) = link.sent
    assert sent.op == "status" and sent["keys"] == ["k"] and isinstance(sent["rid"], int)
    assert link.timeouts == [2.0] and len(router) == 0


def test_each_request_has_its_own_id(router: ReplyRouter, link: Link) -> None:
    link.during_wait = lambda: answer(router, link, info={})
    router.request("info", {}, 1.0)
    router.request("info", {}, 1.0)
    assert link.sent[0]["rid"] != link.sent[1]["rid"]


def test_no_reply_in_time_raises_and_leaves_no_id_behind(router: ReplyRouter, link: Link) -> None:
    with pytest.raises(SchedulerUnavailable, match="did not answer 'status'"):
        router.request("status", {"keys": []}, 0.1)
    assert len(router) == 0
    answer(router, link, states={})  # the late reply finds no place
    assert len(router) == 0


def test_a_reply_nobody_asked_for_is_dropped(router: ReplyRouter) -> None:
    router.deliver(Message("info-reply", {"rid": 12345, "info": {}}))
    assert len(router) == 0


def test_a_send_that_fails_leaves_no_id_behind(link: Link) -> None:
    def refuse(msgs: list[Message]) -> None:
        raise OSError("gone")

    router = ReplyRouter(send_now=refuse, wait_until=link.wait_until)
    with pytest.raises(OSError):
        router.request("info", {}, 1.0)
    assert len(router) == 0


def test_the_reply_ops_are_the_four_answers() -> None:
    assert frozenset({"info-reply", "status-reply", "periodic-reply", "who-has-reply"}) == REPLY_OPS
