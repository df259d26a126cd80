"""Socket helpers every process uses: multipart send/receive and the busy poll."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import zmq

from celeriac.wire.transport import readable, recv_frames, send_frames

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
