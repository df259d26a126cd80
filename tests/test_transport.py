"""Socket helpers every process uses: multipart send/receive and the busy poll."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import zmq

from celeriac.wire.transport import busy_poll, readable, recv_frames, send_frames

pytestmark = pytest.mark.timeout(10)


@pytest.fixture
def pair() -> Iterator[tuple[zmq.Socket, zmq.Socket]]:
    context = zmq.Context()
    a, b = context.socket(zmq.PAIR), context.socket(zmq.PAIR)
    a.bind("inproc://transport-test")
    b.connect("inproc://transport-test")
    yield a, b
    a.close(0)
    b.close(0)
    context.term()


def test_frames_arrive_as_sent(pair: tuple[zmq.Socket, zmq.Socket]) -> None:
    a, b = pair
    frames = [b"header", b"", memoryview(b"payload"), zmq.Frame(b"z" * 100_000)]
    send_frames(a, frames)
    send_frames(a, [b"alone"])
    first = recv_frames(b)
    assert [bytes(f.buffer) for f in first] == [b"header", b"", b"payload", b"z" * 100_000]
    assert [bytes(f.buffer) for f in recv_frames(b)] == [b"alone"]
    assert not readable(b)


def test_noblock_send_to_a_full_peer_raises_again() -> None:
    context = zmq.Context()
    dealer = context.socket(zmq.DEALER)
    dealer.setsockopt(zmq.SNDHWM, 1)
    dealer.connect("tcp://127.0.0.1:9")  # nobody there: messages pile up
    try:
        with pytest.raises(zmq.Again):
            for _ in range(10):
                send_frames(dealer, [b"a", b"b"], zmq.NOBLOCK)
    finally:
        dealer.close(0)
        context.term()


def test_busy_poll_sees_readiness_without_sleeping() -> None:
    answers = iter([False, False, True])
    assert busy_poll(lambda: next(answers), time.perf_counter() + 60)
    assert next(answers, "used up") == "used up"  # asked exactly until it came true


def test_busy_poll_gives_up_at_its_deadline() -> None:
    asked = []
    assert not busy_poll(lambda: asked.append(1) is not None, time.perf_counter() + 0.001)
    assert len(asked) >= 1
    assert busy_poll(lambda: True, time.perf_counter() - 1)  # ready beats an expired deadline
