"""Sockets to the scheduler: how a peer connects and registers, reading (every batch
waiting, decoded, bad ones logged), and sharing one socket between threads."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import zmq

from celeriac.wire import protocol, sharedmem
from celeriac.wire.protocol import Message, ProtocolError
from celeriac.wire.security import secure_client

log = logging.getLogger("celeriac")

# Plain ints: pyzmq's constants are enum members, and enum arithmetic costs
# microseconds on a path taken for every message.
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
_SNDMORE = int(zmq.SNDMORE)
# pyzmq's send_multipart/recv_multipart wrap each frame in Python-level
# checks and enum arithmetic: 8.8 µs for three frames each way where the
# Cython methods they end in take 2.8 (the scheduler, the worker and the
# client each pay it per batch, in every round trip); its getsockopt makes
# an enum of the option first.
_send = zmq.backend.Socket.send
_recv = zmq.backend.Socket.recv
_get = zmq.backend.Socket.get


def send_frames(socket: zmq.Socket, frames: list[Any], flags: int = 0) -> None:
    """``socket.send_multipart(frames, flags, copy=False)``, minus pyzmq's per-frame overhead.

    ``frames`` must not be empty; ``flags`` (e.g. ``zmq.NOBLOCK``) apply to every frame.
    """
    more = flags | _SNDMORE
    for frame in frames[:-1]:
        _send(socket, frame, more, False)
    _send(socket, frames[-1], flags, False)


def recv_frames(socket: zmq.Socket) -> list[zmq.Frame]:
    """``socket.recv_multipart(copy=False)`` when a message is known to be waiting."""
    frame = _recv(socket, 0, False)
    frames = [frame]
    while frame.more:
        frame = _recv(socket, 0, False)
        frames.append(frame)
    return frames


def scheduler_dealer(
    context: zmq.Context,
    address: str,
    *,
    role: str,
    keys: str | Path | None = None,
    routing_id: bytes | None = None,
    linger_ms: int = 1000,
) -> zmq.Socket:
    """A DEALER connected to the scheduler at ``address``, as every client, worker
    and supervisor makes it: ``routing_id`` (ZeroMQ picks one if None), quick
    reconnects, CURVE with ``role``'s key pair from ``keys`` if given, ``linger_ms``
    for what is still queued at close.  Closed again if connecting fails."""
    socket = context.socket(zmq.DEALER)
    try:
        socket.setsockopt(zmq.LINGER, linger_ms)
        if routing_id is not None:
            socket.setsockopt(zmq.ROUTING_ID, routing_id)
        reconnect_quickly(socket)
        if keys is not None:
            secure_client(socket, keys, role)
        socket.connect(address)
    except BaseException:
        socket.close(0)
        raise
    return socket


class Registration:
    """The hello/welcome/reregister handshake every peer of the scheduler does.

    A peer says hello and is registered once welcomed.  A scheduler that
    restarted answers whatever it gets from a peer it does not know with
    ``reregister``, one per queued message: only the first asks for a new
    hello, until the welcome arrives (:meth:`reregister`).
    """

    def __init__(self) -> None:
        self.registering = True  # hello sent, no welcome yet

    def welcomed(self) -> None:
        """The welcome came: registered."""
        self.registering = False

    def reregister(self) -> bool:
        """A ``reregister`` came: whether to say hello again (not while we wait for a welcome)."""
        if self.registering:
            return False
        self.registering = True
        return True


def reconnect_quickly(socket: zmq.Socket) -> None:
    """Retry a refused connection after 10 ms, backing off to 1 s.

    ZeroMQ's default is a flat 100 ms: a worker started beside its scheduler
    (the embedded cluster starts both at once) would lose that much whenever
    it connects a moment before the scheduler binds.
    """
    socket.setsockopt(zmq.RECONNECT_IVL, 10)
    socket.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)


def readable(socket: zmq.Socket) -> bool:
    """A whole message waits on ``socket`` (cheaper to ask than to catch ``zmq.Again``)."""
    return bool(_get(socket, _EVENTS) & _POLLIN)  # type: ignore[operator]


def busy_poll(ready: Callable[[], bool], until: float) -> bool:
    """Whether ``ready()`` (a message waits) comes true by ``until`` (``perf_counter``),
    found without sleeping.

    A process asleep in ``poll()`` takes 50-150 µs to notice a message on a
    small VM (the idle core wakes, then ZeroMQ's I/O thread, then ours);
    asking in a loop notices it at once.  Each turn yields the core to any
    other thread that wants it, so the loop only spends time nobody else
    wanted; the caller decides when a reply is near enough to be worth it.
    """
    while not ready():
        if time.perf_counter() >= until:
            return False
        os.sched_yield()  # releases the GIL too
    return True


def drain(socket: zmq.Socket) -> Iterator[list[Message]]:
    """Yield each batch already received on ``socket``; never block.

    A batch that fails validation is logged and skipped: one bad message
    from the scheduler must not stop a client or worker.  The scheduler
    names shared memory only to a peer that shares it; the scheduler owns it.
    """
    while readable(socket):
        frames = recv_frames(socket)
        try:
            yield protocol.decode(
                frames,
                segment=sharedmem.Segment,
                max_header_bytes=protocol.TRUSTED_HEADER_BYTES,
            )
        except ProtocolError as exc:
            log.error("bad message from the scheduler: %s", exc)


#: A thread waiting on a SharedSocket re-checks its state this often even if no
#: wake-up came: a safety net, never the way anything is meant to be noticed.
RECHECK_MS = 1000


class SharedSocket:
    """A ZeroMQ socket any thread may use, one thread at a time.

    ZeroMQ sockets are not thread-safe, but they may move between threads
    behind a lock.  So the thread with something to send sends it itself,
    and a thread waiting for input polls :attr:`fd` (the socket's ``ZMQ_FD``,
    a plain file descriptor that is safe to poll from any thread) and then
    reads under the lock.  Handing work to a dedicated I/O thread instead
    costs two thread wake-ups per message, which is most of a round trip.

    ``ZMQ_FD`` is edge-triggered: any call on the socket may consume the
    signal of a message that then sits unread.  So every method here reads
    whatever is readable before it lets go of the lock; a message that
    arrives after that raises the signal anew.

    ``socket`` is the DEALER connected to the scheduler; ``on_batch`` gets
    each batch read, on whichever thread reads it, with :attr:`lock` held (it
    may send: the nested read is skipped, and the outer one reads on).
    """

    def __init__(self, socket: zmq.Socket, on_batch: Callable[[list[Message]], None]) -> None:
        self.socket = socket
        self.fd = int(socket.getsockopt(zmq.FD))
        self.lock = threading.RLock()
        self._on_batch = on_batch
        self._reading = False
        self._spiller: sharedmem.Spiller | None = None

    def share_memory(self, welcome: Message) -> None:
        """Send large frames through ``/dev/shm`` if the scheduler shares ours.

        ``welcome`` is the scheduler's ``welcome`` message; its ``shm`` and
        ``shm_tag`` decide.  Without them (or with a bad tag) everything is inline.
        """
        namespace, tag = welcome.get("shm"), welcome.get("shm_tag")
        local = namespace is not None and namespace == sharedmem.namespace()
        with self.lock:
            try:
                self._spiller = sharedmem.Spiller(tag) if local and tag else None
            except ValueError as exc:
                log.warning("not using shared memory with the scheduler: %s", exc)
                self._spiller = None

    def send(self, messages: list[Message], flags: int = 0) -> None:
        """Send one batch now (``zmq.Again`` with ``zmq.NOBLOCK`` when it cannot).

        ``flags`` go to every frame.  Whatever arrived meanwhile is read (and handed
        to ``on_batch``) before the lock is let go, whether or not the send worked.
        """
        with self.lock:
            spiller = self._spiller
            try:
                send_frames(self.socket, protocol.encode(messages, spiller), flags)
            except BaseException:
                if spiller is not None:
                    spiller.abandoned()
                raise
            else:
                if spiller is not None:
                    spiller.handed_over()
            finally:
                self._read()

    def read(self) -> None:
        """Hand every batch already received to ``on_batch``; never block."""
        with self.lock:
            self._read()

    def _read(self) -> None:
        if self._reading:  # on_batch sent a reply: the outer loop reads on
            return
        self._reading = True
        try:
            for messages in drain(self.socket):
                self._on_batch(messages)
        finally:
            self._reading = False
