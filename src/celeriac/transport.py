"""Reading from a ZeroMQ socket: every batch waiting, decoded, bad ones logged."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import zmq

from celeriac import protocol
from celeriac.protocol import Message, ProtocolError

log = logging.getLogger("celeriac")


def drain(socket: zmq.Socket, *, copy: bool = False) -> Iterator[list[Message]]:
    """Yield each batch already received on ``socket``; never block.

    A batch that fails validation is logged and skipped: one bad message
    from the scheduler must not stop a client or worker.
    """
    while True:
        try:
            frames = socket.recv_multipart(zmq.NOBLOCK, copy=copy)
        except zmq.Again:
            return
        try:
            yield protocol.decode(frames)
        except ProtocolError as exc:
            log.error("bad message from the scheduler: %s", exc)
