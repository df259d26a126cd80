"""The results a worker process keeps, and the server that hands them to peers.

Between hosts, a future's large result stays in the worker process that made
it (the scheduler says so in ``run``: ``keep``); the scheduler knows where it
is and how big, and tells whoever needs it.  :class:`ResultStore` holds those
payloads until the scheduler says ``free``; :class:`DataServer` answers other
workers' and clients' ``get-data`` from it (and stores what a client scatters
there, ``put-data``) on a thread of its own, on a ROUTER
bound at the worker's listen address (CURVE with the worker's keys and the
cluster's allowlist when ``--keys`` is given).  Frames go out without a copy:
a pickled numpy array is sent from the array's own memory.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket as sockets
import tempfile
import threading
from collections.abc import MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack
import zmq

from celeriac.wire import protocol
from celeriac.wire.addresses import bind_refusal, is_loopback, tcp_address
from celeriac.wire.protocol import Message, Payload, ProtocolError, nbytes
from celeriac.wire.security import KeysError, secure_peer_server
from celeriac.wire.transport import readable, recv_frames, send_frames
from celeriac.wire.wakeup import Waker

if TYPE_CHECKING:
    import zict

log = logging.getLogger("celeriac.worker")


class ResultStore:
    """Results kept for other processes, by key; safe from any thread.

    Up to ``target`` bytes stay in memory; past it the least recently used go
    to files in ``directory`` (made if need be, removed at :meth:`close`) and
    come back when asked for (``zict.Buffer``
    over ``zict.File``: Dask's own spill store, small and well kept, rather than
    LRU bookkeeping of our own).  Without a ``directory`` nothing is spilled.
    """

    def __init__(self, target: float = float("inf"), directory: str | None = None) -> None:
        self._lock = threading.Lock()
        self._sizes: dict[str, int] = {}
        self._directory = directory
        self._target = target
        self._items: MutableMapping[str, Payload] = {}
        self._buffer: zict.Buffer[str, Payload] | None = None

    def _spillable(self) -> None:
        """Make the spill store, at the first result kept: zict imports asyncio
        (24 ms), which every worker process would otherwise pay at start."""
        import zict

        assert self._directory is not None
        os.makedirs(self._directory, mode=0o700, exist_ok=True)
        files = zict.File(self._directory)
        slow = zict.Func(_to_file, _from_file, files)  # type: ignore[arg-type]  # lists are fine
        self._buffer = zict.Buffer({}, slow, self._target, weight=lambda k, _: self._sizes[k])
        self._items = self._buffer

    def put(self, key: str, payload: Payload) -> int:
        """Keep ``payload`` under ``key``; its size in bytes."""
        size = sum(nbytes(frame) for frame in payload)
        with self._lock:
            if self._buffer is None and self._directory is not None:
                self._spillable()
            self._items.pop(key, None)
            self._sizes[key] = size
            self._items[key] = payload
        return size

    def get(self, key: str) -> Payload | None:
        """The payload kept under ``key`` (read back from disk if spilled), if any."""
        with self._lock:
            return self._items.get(key)

    def drop(self, keys: list[str]) -> None:
        """Forget these keys (the scheduler's ``free``); unknown ones are ignored."""
        with self._lock:
            for key in keys:
                self._items.pop(key, None)
                self._sizes.pop(key, None)

    def spill(self, nbytes: int) -> int:
        """Move at least ``nbytes`` (least recently used first) to disk; how many moved."""
        moved = 0
        with self._lock:
            buffer = self._buffer
            while buffer is not None and moved < nbytes and len(buffer.fast):
                _, _, weight = buffer.fast.evict()  # the least recently used, to disk
                moved += int(weight)
        return moved

    @property
    def in_memory(self) -> int:
        """Bytes of kept results in memory."""
        if self._buffer is None:
            return sum(self._sizes.values())
        return int(self._buffer.fast.total_weight)

    @property
    def spilled(self) -> int:
        """Bytes of kept results on disk."""
        return sum(self._sizes.values()) - self.in_memory

    def close(self) -> None:
        """Delete the spill directory and its files."""
        if self._directory is not None:
            remove_spill_directory(self._directory)

    def __len__(self) -> int:
        return len(self._sizes)


def spill_directory(parent: str | None, pid: int, identity: bytes) -> str:
    """Where worker process ``pid`` (routing id ``identity``) spills: a directory of
    its own under ``parent`` (``--local-directory``; default the system's temporary
    directory).  Named so its supervisor can remove it when the process dies, even
    killed (its own cleanup then never runs), and so any later supervisor can tell
    one whose process is gone (:func:`remove_leftover_spills`)."""
    name = f"celeriac-spill-{pid}-{identity.hex()}"
    return os.path.join(parent or tempfile.gettempdir(), name)


def remove_leftover_spills(parent: str | None) -> int:
    """Delete the spill directories under ``parent`` whose process no longer exists
    (killed with its supervisor); how many.  A live process's is never touched."""
    removed = 0
    root = parent or tempfile.gettempdir()
    try:
        names = os.listdir(root)
    except OSError:
        return 0
    for name in names:
        match = _SPILL_NAME.fullmatch(name)
        if match is None or _alive(int(match[1])):
            continue
        remove_spill_directory(os.path.join(root, name))
        removed += 1
    return removed


_SPILL_NAME = re.compile(r"celeriac-spill-(\d+)-[0-9a-f]{32}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's: alive, and not ours to delete
        return True
    return True


def remove_spill_directory(path: str) -> None:
    """Delete a spill directory, if it is there."""
    shutil.rmtree(path, ignore_errors=True)


def _to_file(payload: Payload) -> list[Any]:
    """A payload as one file: the frame sizes (msgpack), then the frames."""
    frames = [protocol.buffer_of(frame) for frame in payload]
    header = msgpack.packb([nbytes(frame) for frame in frames])
    return [len(header).to_bytes(4, "little"), header, *frames]


def _from_file(data: bytes | bytearray | memoryview) -> Payload:
    view = memoryview(data)
    size = int.from_bytes(view[:4], "little")
    frames, offset = [], 4 + size
    for length in msgpack.unpackb(view[4:offset]):
        frames.append(view[offset : offset + length])
        offset += length
    return frames


def listen_host(scheduler: str) -> str:
    """The interface to serve results on when none is given: the one this host
    reaches the scheduler through (loopback for a local or ``ipc://`` scheduler).

    Found with a UDP socket's ``connect``, which sends nothing: it only asks
    the kernel which local address its route to the scheduler uses.
    """
    if scheduler.startswith("ipc://"):
        return "127.0.0.1"
    host, _ = host_port(scheduler)
    if is_loopback(host):
        return "127.0.0.1"
    family = sockets.AF_INET6 if ":" in host else sockets.AF_INET
    try:
        with sockets.socket(family, sockets.SOCK_DGRAM) as probe:
            probe.connect((host, 9))
            local: str = probe.getsockname()[0]
            return local
    except OSError:
        return "127.0.0.1"


class DataServer:
    """Serves :class:`ResultStore` to peers: ``get-data`` in, ``data`` out.

    ``listen``: ``tcp://HOST:PORT`` or ``HOST`` (port 0 or none: any free
    port).  ``contact``: the address peers are told (default: the bound one);
    give it when they reach this host by another name (containers, NAT);
    bound to a wildcard (``0.0.0.0``) without it, peers are told ``wildcard_host``.
    ``keys`` and ``insecure``: as for the scheduler, a non-loopback ``listen``
    needs one or the other.  :meth:`start` binds and returns the contact
    address; it raises ``ValueError`` (refused, or keys missing) or
    ``zmq.ZMQError`` (cannot bind), and the worker then serves no results.
    """

    def __init__(
        self,
        context: zmq.Context,
        store: ResultStore,
        *,
        listen: str,
        contact: str | None = None,
        keys: str | Path | None = None,
        insecure: bool = False,
        wildcard_host: str = "127.0.0.1",
    ) -> None:
        self._context = context
        self._wildcard_host = wildcard_host
        self._store = store
        self._listen = listen
        self._contact = contact
        self._keys = keys
        self._insecure = insecure
        self._router: Any = None
        self._authenticator: Any = None
        self._thread: threading.Thread | None = None
        self._waker = Waker()
        self._stopping = False

    def start(self) -> str:
        """Bind and serve on a thread; the address peers are to use."""
        host, port = host_port(self._listen)
        refusal = bind_refusal(host, insecure=self._insecure, keys=self._keys)
        if refusal is not None:
            raise ValueError(refusal.replace("bind", "serve results on", 1))
        router = self._context.socket(zmq.ROUTER)
        try:
            router.setsockopt(zmq.LINGER, 0)
            router.setsockopt(zmq.SNDHWM, 0)  # queue a slow reader's answer, never drop it
            router.setsockopt(zmq.MAXMSGSIZE, protocol.DEFAULT_MAX_MESSAGE_BYTES)  # put-data
            if self._keys is not None:
                self._authenticator = secure_peer_server(router, self._context, self._keys)
            router.bind(tcp_address(host, port or "*"))
        except (zmq.ZMQError, KeysError):
            router.close(linger=0)
            self._stop_authenticator()
            raise
        self._router = router
        bound = router.getsockopt_string(zmq.LAST_ENDPOINT)
        contact = self._contact or bound
        if self._contact is None and host in ("0.0.0.0", "::"):  # a wildcard is no address
            contact = tcp_address(self._wildcard_host, bound.rsplit(":", 1)[1])
        self._thread = threading.Thread(target=self._serve, name="celeriac-data", daemon=True)
        self._thread.start()
        return contact

    def close(self) -> None:
        """Stop serving and close the socket (waits for the thread)."""
        self._stopping = True
        self._waker.wake()
        if self._thread is not None:
            self._thread.join()
        self._stop_authenticator()
        self._waker.close()

    def _stop_authenticator(self) -> None:
        if self._authenticator is not None:
            self._authenticator.stop()
            self._authenticator = None

    def _serve(self) -> None:
        router = self._router
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        poller.register(self._waker.fd, zmq.POLLIN)
        try:
            while not self._stopping:
                poller.poll()
                self._waker.clear()
                while readable(router):
                    self._answer(recv_frames(router))
        except Exception:
            log.exception("the data server stopped")
        finally:
            router.close(linger=0)

    def _answer(self, frames: list[zmq.Frame]) -> None:
        peer = frames[0].bytes
        try:
            requests = protocol.decode(frames[1:])
        except ProtocolError as exc:
            log.warning("bad request from peer %s: %s", peer.hex(), exc)
            return
        replies = [self._reply(msg) for msg in requests if msg.op in ("get-data", "put-data")]
        if replies:
            send_frames(self._router, [peer, *protocol.encode(replies)])

    def _reply(self, request: Message) -> Message:
        if request.op == "put-data":  # scattered by a client, which tells the scheduler
            for key, payload in zip(request["keys"], request.payloads, strict=False):
                self._store.put(key, list(payload))  # the frames as received: no copy
            return Message("put-done", {"rid": request["rid"]})
        return self._data(request)

    def _data(self, request: Message) -> Message:
        keys, payloads, missing = [], [], []
        for key in request["keys"]:
            payload = self._store.get(key)
            if payload is None:
                missing.append(key)
            else:
                keys.append(key)
                payloads.append(payload)
        fields: dict[str, Any] = {"rid": request["rid"], "keys": keys}
        if missing:
            fields["missing"] = missing
        return Message("data", fields, payloads)


def host_port(listen: str) -> tuple[str, int]:
    """``tcp://HOST:PORT``, ``HOST:PORT`` or ``HOST`` -> (host, port); 0 is any port."""
    text = listen.removeprefix("tcp://")
    if text.startswith("["):  # [IPv6]:port
        host, _, rest = text[1:].partition("]")
        return host, int(rest.lstrip(":") or 0)
    if text.count(":") == 1:
        host, port = text.split(":")
        return host, int(port)
    return text, 0
