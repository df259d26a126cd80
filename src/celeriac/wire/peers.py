"""Fetching results from the worker processes that keep them (and scattering to them).

Between hosts a future's large result stays in the worker that made it (see
``docs/architecture.md``, "Results live on the workers"); whoever needs it,
a worker running a dependent or a client, asks that worker's data server
directly: ``get-data`` with the keys, answered by ``data`` with one payload
per key it still has and the rest listed as ``missing``.

:class:`PeerClient` holds one DEALER per peer address for each thread that
fetches (sockets are not thread-safe, and a worker's slots fetch at once),
sends every request before it waits for any answer (several transfers in
flight), and receives frames without a copy.  A peer that does not answer
within the timeout is forgotten (its socket closed, the request dropped): the
caller reports the keys missing and the scheduler decides what is lost.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import zmq

from celeriac.wire import protocol
from celeriac.wire.protocol import Message, Payload, ProtocolError
from celeriac.wire.security import secure_peer_client
from celeriac.wire.transport import readable, recv_frames, send_frames

log = logging.getLogger("celeriac.peers")

#: Seconds a peer gets to answer when the caller does not say.
DEFAULT_TIMEOUT = 30.0
#: Seconds to wait for a connection to a peer (a TCP and, with keys, a CURVE
#: handshake): a worker that died, or an address nobody can reach, fails in
#: this long rather than the whole timeout.
CONNECT_TIMEOUT = 2.0


class PeerClient:
    """Fetch payloads by key from workers' data servers, or put some there.

    ``context``: the ZeroMQ context to make sockets in (``None``: one of its own,
    made at the first fetch: most clients never fetch from a worker).  ``keys``: a CURVE key
    directory (``None``: plain TCP, loopback or ``--insecure`` clusters);
    ``role`` is whose key pair in it this process uses (``worker`` or
    ``client``).  ``max_bytes`` bounds one answer (the cluster's message limit).
    """

    def __init__(
        self,
        context: zmq.Context | None = None,
        *,
        keys: str | Path | None = None,
        role: str = "worker",
        max_bytes: int = protocol.DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self._context = context
        self._own_context: zmq.Context | None = None
        self._keys = keys
        self._role = role
        self.max_bytes = max_bytes
        self._local = threading.local()
        self._rids = itertools.count(1)
        self._all: list[zmq.Socket] = []  # every socket made, to close them all
        self._lock = threading.Lock()

    def fetch(
        self, wanted: dict[str, list[str]], timeout: float = DEFAULT_TIMEOUT
    ) -> tuple[dict[str, Payload], list[str]]:
        """The payloads of the keys wanted from each address (``{address: keys}``),
        and the keys that could not be had (gone there, or no answer in time)."""
        pending: dict[zmq.Socket, tuple[str, dict[int, str]]] = {}
        missing: list[str] = []
        sockets: dict[str, zmq.Socket] = {}
        for address, keys in wanted.items():
            try:
                sockets[address] = self._socket(address)
            except (zmq.ZMQError, OSError, ValueError) as exc:  # ValueError: KeysError
                log.warning("cannot ask %s for %d result(s): %s", address, len(keys), exc)
                missing += keys
        connected = _connected(sockets.values(), min(CONNECT_TIMEOUT, timeout))
        for address, socket in sockets.items():
            keys = wanted[address]
            if socket not in connected:
                log.warning("cannot reach %s for %d result(s)", address, len(keys))
                self._forget(address, socket)
                missing += keys
                continue
            # One request per key, all sent before any answer is read: a large
            # result then arrives as a message of its own, and the next one
            # streams while this one is taken in.  One request for 20 results of
            # 25 MB moved 1.9-2.0 GB/s here, one per key 3.7-5.1 GB/s.
            asked: dict[int, str] = {}
            for key in keys:
                rid = next(self._rids)
                frames = protocol.encode([Message("get-data", {"rid": rid, "keys": [key]})])
                send_frames(socket, frames, zmq.NOBLOCK)
                asked[rid] = key
            pending[socket] = (address, asked)
        found: dict[str, Payload] = {}
        self._collect(pending, found, missing, time.monotonic() + timeout)
        return found, missing

    def put(
        self, address: str, items: dict[str, Payload], timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        """Store payloads by key on the worker serving at ``address`` (scattering).

        Raises ``ConnectionError`` when it cannot be reached or does not confirm
        within ``timeout`` seconds.
        """
        try:
            socket = self._socket(address)
        except (zmq.ZMQError, OSError, ValueError) as exc:
            raise ConnectionError(f"cannot reach the worker at {address}: {exc}") from None
        if not _connected([socket], min(CONNECT_TIMEOUT, timeout)):
            self._forget(address, socket)
            raise ConnectionError(f"cannot reach the worker at {address}")
        rid = next(self._rids)
        fields = {"rid": rid, "keys": list(items)}
        send_frames(socket, protocol.encode([Message("put-data", fields, list(items.values()))]))
        deadline = time.monotonic() + timeout
        poller = zmq.Poller()
        poller.register(socket, zmq.POLLIN)
        while _poll_until(poller, deadline):
            frames = recv_frames(socket)
            try:
                replies = protocol.decode(frames, max_header_bytes=protocol.TRUSTED_HEADER_BYTES)
            except ProtocolError:
                continue
            if any(r.op == "put-done" and r["rid"] == rid for r in replies):
                return
        self._forget(address, socket)
        raise ConnectionError(f"the worker at {address} did not confirm within {timeout} s")

    def _collect(
        self,
        pending: dict[zmq.Socket, tuple[str, dict[int, str]]],
        found: dict[str, Payload],
        missing: list[str],
        deadline: float,
    ) -> None:
        poller = zmq.Poller()
        for socket in pending:
            poller.register(socket, zmq.POLLIN)
        while pending:
            ready = _poll_until(poller, deadline)
            if not ready:
                for socket, (address, asked) in pending.items():
                    log.warning("no answer from %s for %d result(s)", address, len(asked))
                    self._forget(address, socket)
                    missing += asked.values()
                return
            for socket in ready:
                address, asked = pending[socket]
                while asked and readable(socket):
                    self._answer(socket, address, asked, found, missing)
                if not asked:
                    poller.unregister(socket)
                    del pending[socket]

    def _answer(
        self,
        socket: zmq.Socket,
        address: str,
        asked: dict[int, str],
        found: dict[str, Payload],
        missing: list[str],
    ) -> None:
        """Take one message of answers: what it holds, what it says is missing."""
        frames = recv_frames(socket)
        try:
            replies = protocol.decode(
                frames, self.max_bytes, max_header_bytes=protocol.TRUSTED_HEADER_BYTES
            )
        except (ProtocolError, ValueError) as exc:
            log.error("bad answer from %s: %s", address, exc)
            return
        for reply in replies:
            if reply.op != "data" or reply["rid"] not in asked:
                continue  # a late answer to an earlier request
            key = asked.pop(reply["rid"])
            got = dict(zip(reply["keys"], reply.payloads, strict=False))
            if key in got:
                found[key] = got[key]
            else:
                missing.append(key)

    def _socket(self, address: str) -> zmq.Socket:
        sockets: dict[str, zmq.Socket] | None = getattr(self._local, "sockets", None)
        if sockets is None:
            sockets = self._local.sockets = {}
        socket = sockets.get(address)
        if socket is None:
            socket = self._make_context().socket(zmq.DEALER)
            socket.setsockopt(zmq.LINGER, 0)
            socket.setsockopt(zmq.MAXMSGSIZE, self.max_bytes)
            # Queue only to a connection that is up: writable means reachable
            # (see _connected), so a dead or unreachable peer is known at once.
            socket.setsockopt(zmq.IMMEDIATE, 1)
            if self._keys is not None:
                secure_peer_client(socket, self._keys, self._role)
            socket.connect(address)
            sockets[address] = socket
            with self._lock:
                self._all.append(socket)
        return socket

    def _make_context(self) -> zmq.Context:
        with self._lock:
            if self._context is None:
                self._context = self._own_context = zmq.Context()
            return self._context

    def _forget(self, address: str, socket: zmq.Socket) -> None:
        """Close a socket whose peer did not answer: its queued request goes with it."""
        self._local.sockets.pop(address, None)
        with self._lock:
            if socket in self._all:
                self._all.remove(socket)
        socket.close(linger=0)

    def close(self) -> None:
        """Close every socket this fetcher made (on any thread); call once, at the end."""
        with self._lock:
            sockets, self._all = self._all, []
            context, self._own_context = self._own_context, None
        for socket in sockets:
            socket.close(linger=0)
        if context is not None:
            context.term()


def _connected(sockets: Iterable[zmq.Socket], timeout: float) -> set[zmq.Socket]:
    """The sockets whose peer connection is up within ``timeout`` seconds (with
    ``IMMEDIATE``, a DEALER is writable only once it has a connection)."""
    waiting = set(sockets)
    up: set[zmq.Socket] = set()
    deadline = time.monotonic() + timeout
    poller = zmq.Poller()
    for socket in waiting:
        poller.register(socket, zmq.POLLOUT)
    while waiting:
        ready = _poll_until(poller, deadline)
        if not ready:
            break
        for socket in ready:
            poller.unregister(socket)
            waiting.discard(socket)
            up.add(socket)
    return up


def _poll_until(poller: zmq.Poller, deadline: float) -> dict[zmq.Socket, int]:
    """What ``poller`` finds ready by ``deadline`` (``time.monotonic()``); empty past it."""
    left = deadline - time.monotonic()
    return dict(poller.poll(int(left * 1000))) if left > 0 else {}
