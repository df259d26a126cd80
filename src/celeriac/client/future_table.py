"""The futures one connection holds: a state per key, how many Futures share it, what to release.

A :class:`~celeriac.client.futures.Future` is a handle; what the client knows
of its key lives in one :class:`FutureState`, shared by every Future for that
key, in the :class:`FutureTable` of the connection that made it.  When the
last Future for a key is dropped the table forgets the key and queues a
``release``, which the I/O thread sends with its next batch.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from celeriac.client.forks import process
from celeriac.errors import (
    FutureLostError,
    KilledWorker,
    TaskExpiredError,
    TaskRevokedError,
    TimeLimitExceeded,
)
from celeriac.states import FutureStatus
from celeriac.wire.peers import PeerClient
from celeriac.wire.protocol import MAX_KEYS_PER_MESSAGE, Message, Payload
from celeriac.wire.serialize import RemoteError, loads, loads_exception

log = logging.getLogger("celeriac.client")

# Module constants, not enum attribute lookups: read on every submit and result.
PENDING, FINISHED, ERROR = FutureStatus.PENDING, FutureStatus.FINISHED, FutureStatus.ERROR
CANCELLED, LOST = FutureStatus.CANCELLED, FutureStatus.LOST
_NO_VALUE = object()


class FutureState:
    """What the client knows of one key; shared by all Futures for that key.

    Parameters:
        key: the task's key.
    """

    __slots__ = (
        "_settled",
        "_value",
        "callbacks",
        "error",
        "key",
        "lock",
        "payload",
        "status",
        "where",
    )

    def __init__(self, key: str) -> None:
        self.key = key
        self.status = PENDING
        self.payload: Payload | None = None
        #: The data server of the worker keeping the result, when it is kept there.
        self.where: str | None = None
        self.error: tuple[str, str, Payload] | None = None
        self.lock = threading.Lock()
        self.callbacks: list[Callable[[], None]] = []
        self._value: Any = _NO_VALUE
        self._settled = False

    def finish(
        self, status: FutureStatus, payload: Payload | None = None, error: Any = None
    ) -> None:
        """Record the outcome (on whichever thread read it) and run callbacks.

        Parameters:
            status: the final status.
            payload: the result's frames (``None``: too big to push, fetched on demand).
            error: ``(kind, text, payload)`` of a failure.
        """
        with self.lock:
            self.status = status
            self.payload = payload
            self.error = error
            self._value = _NO_VALUE
            self._settled = True
            callbacks, self.callbacks = self.callbacks, []
        for callback in callbacks:
            run_callback(callback)

    def settled(self) -> bool:
        """An outcome is here (waiters poll this while they read the socket)."""
        return self._settled

    def reset(self) -> None:
        """The result is known to exist but must be fetched; wait again."""
        with self.lock:
            self._settled = False

    def has_value(self) -> bool:
        """The result is loaded already."""
        return self._value is not _NO_VALUE

    def value(self) -> Any:
        """The result, loaded from its frames the first time."""
        with self.lock:
            if self._value is _NO_VALUE:
                assert self.payload is not None
                self._value = loads(self.payload)
                self.payload = None  # keep one copy, not two
            return self._value

    def exception(self) -> BaseException:
        """The exception a failed, cancelled or lost task raises here."""
        kind, text, payload = self.error or ("lost", "no reason given", ())
        if self.status == CANCELLED:
            if text == "expired":
                return TaskExpiredError(f"task {self.key!r} expired before it ran")
            return TaskRevokedError(f"task {self.key!r} was cancelled")
        if kind == "killed-worker":
            return KilledWorker(text)
        if kind == "time-limit":
            return TimeLimitExceeded(text)
        if kind.startswith("lost"):
            return FutureLostError(f"task {self.key!r}: {text}")
        if not payload:
            return RemoteError(kind, text)
        try:
            return loads_exception(payload)
        except Exception as exc:
            return RemoteError(kind, f"{text} (and its exception could not be loaded: {exc})")


def run_callback(callback: Callable[[], None]) -> None:
    """Run a done-callback; one that raises is logged, never passed on to the reader."""
    try:
        callback()
    except Exception:
        log.exception("a future's done-callback raised")


class FutureTable:
    """The states of the keys one connection holds Futures for, counted, and the releases due.

    Thread-safe: Futures are made on any thread, dropped on any thread (by
    the garbage collector), settled on whichever thread reads the socket.
    A table belongs to the process that made it: in a forked child, dropping
    an inherited Future releases nothing (the child's client has a table of
    its own).

    Parameters:
        wait_until: ``wait_until(ready, timeout) -> bool`` blocks until
            ``ready()`` or the timeout, reading the scheduler's messages meanwhile.
        send: queues a message for the scheduler.
        wake: asks the I/O thread to send soon; it then takes :meth:`releases`.
        peers: fetches results kept on workers from them (``None``: always
            through the scheduler).
        fetch_timeout: seconds a worker gets to hand over a result before the
            scheduler is asked to carry it.
    """

    def __init__(
        self,
        *,
        wait_until: Callable[[Callable[[], bool], float | None], bool],
        send: Callable[[Message], None],
        wake: Callable[[], None],
        peers: PeerClient | None = None,
        fetch_timeout: float = 10.0,
    ) -> None:
        self._lock = threading.Lock()
        self._states: dict[str, FutureState] = {}
        self._refcounts: dict[str, int] = {}
        self._releases: deque[str] = deque()
        self._pid = process.pid
        self._closed = False
        #: ``wait_until(ready, timeout) -> bool``: block until ``ready()``,
        #: reading the scheduler's messages on this thread; False if the
        #: timeout passed first.  The client's own wait, not wrapped: every
        #: ``result()`` goes through it.
        self.wait_until = wait_until
        self._send = send
        self._wake = wake
        self._peers = peers
        self._fetch_timeout = fetch_timeout

    # -- the client's side --------------------------------------------------------

    def add(self, key: str) -> FutureState:
        """Count one more Future for ``key``; its state (new if the key is new).

        Parameters:
            key: the task's key.
        """
        with self._lock:
            state = self._states.get(key)
            if state is None:
                state = self._states[key] = FutureState(key)
            self._refcounts[key] = self._refcounts.get(key, 0) + 1
        return state

    def get(self, key: str) -> FutureState | None:
        """The state of ``key``, if any Future holds it.

        Parameters:
            key: the task's key.
        """
        return self._states.get(key)

    def settle(self, msg: Message) -> None:
        """Apply a ``result``, ``erred`` or ``cancelled`` message to its key's state.

        A key nobody holds any more is ignored: its release is on the way.

        Parameters:
            msg: the message from the scheduler.
        """
        state = self._states.get(msg.fields["key"])
        if state is not None:
            OUTCOMES[msg.op](state, msg)

    def pending(self) -> list[str]:
        """Keys still waiting for an outcome (asked for again after a scheduler restart)."""
        with self._lock:
            return [key for key, state in self._states.items() if state.status == PENDING]

    def releases(self) -> list[Message]:
        """The keys dropped since the last call, as ``release`` messages (or none).

        Called by the I/O thread before it sends.  Each message lists at most
        ``MAX_KEYS_PER_MESSAGE`` keys, so its header stays under the scheduler's limit.
        """
        messages = []
        while self._releases:
            keys: list[str] = []
            with self._lock:
                while self._releases and len(keys) < MAX_KEYS_PER_MESSAGE:
                    key = self._releases.popleft()
                    # Held again since its last Future went (AsyncResult(id) after a
                    # dropped .delay()): its "want" may be on the way, and a release
                    # after it would leave the new Future waiting forever.
                    if key not in self._refcounts:
                        keys.append(key)
            if keys:
                messages.append(Message("release", {"keys": keys}))
        return messages

    def close(self) -> None:
        """The client is closed: dropping a Future releases nothing any more."""
        self._closed = True

    def __len__(self) -> int:
        return len(self._states)

    def __contains__(self, key: object) -> bool:
        return key in self._states

    # -- what a Future asks for ---------------------------------------------------

    def drop(self, key: str) -> None:
        """One Future for ``key`` is gone; after the last, release the key on the cluster.

        Parameters:
            key: the task's key.
        """
        if self._closed or process.pid != self._pid:
            return
        with self._lock:
            count = self._refcounts.get(key, 0) - 1
            if count > 0:
                self._refcounts[key] = count
                return
            self._refcounts.pop(key, None)
            self._states.pop(key, None)
        self._releases.append(key)
        self._wake()

    def fetch(self, key: str) -> None:
        """Get a result too big to be pushed: from the worker keeping it, if it is
        kept on one, else (or if that worker cannot be reached) through the
        scheduler; meanwhile its state waits for it again.

        Parameters:
            key: the task's key.
        """
        state = self._states.get(key)
        fields: dict[str, Any] = {"key": key}
        if state is not None and state.where is not None and self._peers is not None:
            found, _ = self._peers.fetch({state.where: [key]}, self._fetch_timeout)
            if key in found:
                state.finish(FINISHED, found[key])
                return
            log.info("result %s: its worker cannot be reached; asking the scheduler", key)
            fields["via_scheduler"] = True
        if state is not None:
            state.reset()
        self._send(Message("fetch", fields))

    def put(self, address: str, items: dict[str, Payload]) -> None:
        """Store these payloads by key on the worker serving at ``address`` (scatter).

        Raises ``ConnectionError`` when the worker cannot be reached or does not confirm.
        """
        if self._peers is None:
            raise ConnectionError("this client does not talk to workers directly")
        self._peers.put(address, items, self._fetch_timeout)

    def close_peers(self) -> None:
        """Close the sockets to workers (the client closes)."""
        if self._peers is not None:
            self._peers.close()

    def fire_and_forget(self, key: str) -> None:
        """Have the scheduler run ``key`` to completion even once no Future holds it.

        Parameters:
            key: the task's key.
        """
        self._send(Message("fire-and-forget", {"key": key}))


def _on_result(state: FutureState, msg: Message) -> None:
    if msg["inline"]:
        state.finish(FINISHED, msg.payloads[0])
    elif state.payload is None and not state.has_value():
        # Too big to push (or, "at" a worker, kept there): result() will fetch it.
        # Also where a result lost with its worker is now, computed again.
        state.where = msg.get("at")
        if state.status == PENDING or not state.settled():
            state.finish(FINISHED)


def _on_erred(state: FutureState, msg: Message) -> None:
    payload = msg.payloads[0] if msg.payloads else ()
    status = LOST if msg["kind"].startswith("lost") else ERROR
    state.finish(status, error=(msg["kind"], msg["text"], payload))


def _on_cancelled(state: FutureState, msg: Message) -> None:
    state.finish(CANCELLED, error=("cancelled", msg.get("reason", "cancelled"), ()))


#: Messages about one key, and what they do to its state.
OUTCOMES: dict[str, Callable[[FutureState, Message], None]] = {
    "result": _on_result,
    "erred": _on_erred,
    "cancelled": _on_cancelled,
}
