"""A client's link to the scheduler: one DEALER socket, shared by every thread.

ZeroMQ sockets are not thread-safe, but behind a lock any thread may use one
(:class:`SharedSocket`).  So a caller that waits for an answer sends its
request and reads the reply itself: no hand-off to another thread and back,
which would cost more than the network does.  A background thread covers
everything nobody waits on: the batches that plain ``submit`` calls pile up
in the outbox (opportunistic batching: nothing waits on a timer),
heartbeats, and reading while no caller is.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path

import zmq

from celeriac.errors import SchedulerUnavailable
from celeriac.wire import protocol, sharedmem
from celeriac.wire.addresses import not_a_socket
from celeriac.wire.protocol import Message
from celeriac.wire.transport import (
    RECHECK_MS,
    Registration,
    SharedSocket,
    busy_poll,
    readable,
    scheduler_dealer,
)
from celeriac.wire.wakeup import Waker

log = logging.getLogger("celeriac.client")

#: Messages per multipart send: big enough to amortize, small enough to pipeline.
BATCH = 1000
HEARTBEAT_INTERVAL = 5.0
#: After a caller read for itself, the I/O thread leaves the socket alone this
#: long: callers that wait again and again (a loop of round trips) would
#: otherwise race it for every reply and lose half of them to a hand-off.
HANDBACK = 0.05
#: A caller waiting for a reply asks the socket in a loop this long before it
#: sleeps (see transport.busy_poll): replies from a nearby scheduler often come
#: sooner than a sleeping thread wakes.  One caller at a time.
BUSY_POLL = 0.0002
#: A send that cannot even be queued this long gives up (and is retried): a
#: DEALER with no connection to queue on, e.g. while its security handshake
#: keeps failing, would otherwise block its caller forever.
SEND_TIMEOUT_MS = 100


class Connection:
    """A client's DEALER connection to the scheduler at ``address``, shared by all threads.

    ``on_message`` gets every message from the scheduler, on whichever thread
    read it; ``before_flush`` returns messages to add to each batch the I/O
    thread sends (the client's releases); ``keys`` is a CURVE key directory.
    :meth:`start` says hello and waits for the welcome.  ``send`` queues for
    the I/O thread (a burst goes out in batches), ``send_now`` sends on the
    calling thread, ``wait_until`` lets a caller read the socket itself while
    it waits (see the "whoever waits does the I/O" decision in
    docs/architecture.md).
    """

    def __init__(
        self,
        address: str,
        on_message: Callable[[Message], None],
        before_flush: Callable[[], list[Message]] | None = None,
        keys: Path | None = None,
    ) -> None:
        self.address = address
        self._on_message = on_message
        self._before_flush = before_flush
        self._outbox: deque[Message] = deque()
        self._waker = Waker()
        self._context = zmq.Context()
        self._closing = False
        self._closed = False  # the socket is gone: nobody reads any more
        self._welcome = threading.Event()
        self._refusal: str | None = None
        self._registration = Registration()
        self._waiting: set[Waker] = set()  # callers reading the socket themselves
        self._waiting_lock = threading.Lock()
        self._caller_read_at = 0.0
        self._busy_polling = threading.Lock()
        self._local = threading.local()
        self.max_message_bytes = protocol.DEFAULT_MAX_MESSAGE_BYTES
        try:
            socket = scheduler_dealer(
                self._context, address, role="client", keys=keys, routing_id=uuid.uuid4().bytes
            )
        except (zmq.ZMQError, ValueError) as exc:
            self._context.term()
            raise ValueError(f"cannot connect to {address!r}: {exc}") from None
        socket.setsockopt(zmq.SNDTIMEO, SEND_TIMEOUT_MS)
        self._socket = SharedSocket(socket, self._on_batch)
        self._thread = threading.Thread(target=self._run, name="celeriac-client-io", daemon=True)

    def start(self, timeout: float) -> None:
        """Start the I/O thread and wait for the scheduler's welcome."""
        self._thread.start()
        self.send_now([_hello()])
        if not self.wait_until(self._welcome.is_set, timeout):
            self.close()
            raise SchedulerUnavailable(
                f"no Celeriac scheduler answered at {self.address} within {timeout:g} s; "
                + (_unix_socket_problem(self.address) or "is `celeriac scheduler` running there")
                + " (and, if it uses --keys, do we have an authorized key)?"
            )
        if self._refusal is not None:
            self.close()
            raise SchedulerUnavailable(f"scheduler at {self.address} refused us: {self._refusal}")

    def send(self, msg: Message) -> None:
        """Queue for the next batch (the I/O thread sends it soon)."""
        self._outbox.append(msg)
        self._waker.wake()

    def send_many(self, msgs: Iterable[Message]) -> None:
        """Queue several messages for the next batch."""
        self._outbox.extend(msgs)
        self._waker.wake()

    def send_now(self, msgs: list[Message]) -> None:
        """Send on the calling thread, with whatever was queued before (order kept)."""
        self._outbox.extend(msgs)
        self._flush()

    def wake(self) -> None:
        """Have the I/O thread run ``before_flush`` and send soon."""
        self._waker.wake()

    def wait_until(self, ready: Callable[[], bool], timeout: float | None) -> bool:
        """Read the socket on this thread until ``ready()``; False at the timeout."""
        if ready():
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        busy_until = time.perf_counter() + BUSY_POLL
        waker = self._thread_waker()
        poller = select.poll()
        poller.register(waker.fd, select.POLLIN)
        polling_socket = not self._closed
        if polling_socket:
            poller.register(self._socket.fd, select.POLLIN)
        with self._waiting_lock:
            self._waiting.add(waker)
        try:
            while True:
                if self._closed and polling_socket:
                    poller.unregister(self._socket.fd)  # gone: wait out the timeout
                    polling_socket = False
                waker.clear()
                self._flush()
                if ready():
                    return True
                wait_ms = RECHECK_MS
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    wait_ms = min(wait_ms, int(remaining * 1000) + 1)
                if not (polling_socket and self._busy_poll(ready, busy_until)):
                    poller.poll(wait_ms)
        finally:
            with self._waiting_lock:
                self._waiting.discard(waker)
            self._caller_read_at = time.monotonic()

    def _busy_poll(self, ready: Callable[[], bool], until: float) -> bool:
        if time.perf_counter() >= until or not self._busy_polling.acquire(blocking=False):
            return False
        try:  # another thread may read our reply: ask ready() too
            return busy_poll(lambda: ready() or self._readable(), until)
        finally:
            self._busy_polling.release()

    def _readable(self) -> bool:
        with self._socket.lock:
            return not self._closed and readable(self._socket.socket)

    def close(self) -> None:
        """Say goodbye, stop the I/O thread and close the socket (once; later calls do nothing)."""
        if self._closing:
            return
        self._closing = True
        self._waker.wake()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)

    # -- reading (on whichever thread holds the socket) ----------------------

    def _thread_waker(self) -> Waker:
        waker: Waker | None = getattr(self._local, "waker", None)
        if waker is None:
            waker = self._local.waker = Waker()  # closed when the thread ends
        return waker

    def _on_batch(self, messages: list[Message]) -> None:
        for msg in messages:
            self._dispatch(msg)
        # Callers blocked on the socket may have been waiting for this batch.
        mine = getattr(self._local, "waker", None)
        with self._waiting_lock:
            others = [w for w in self._waiting if w is not mine]
        for waker in others:
            waker.wake()

    def _dispatch(self, msg: Message) -> None:
        if msg.op == "welcome":
            self._registration.welcomed()
            self.max_message_bytes = msg.get("max_message_bytes", self.max_message_bytes)
            self._socket.share_memory(msg)
            self._welcome.set()
        elif msg.op == "error" and msg.get("about") == "hello-client":
            self._refusal = msg["text"]
            self._welcome.set()
        elif msg.op == "reregister":
            if not self._registration.reregister():
                return  # one answer per restart, however many queued messages drew one
            log.warning("the scheduler does not know this client (restarted?); reconnecting")
            self._outbox.appendleft(_hello())  # before anything the restart makes us resend
            self._waker.wake()
            self._on_message(msg)
        else:
            try:
                self._on_message(msg)
            except Exception:
                log.exception("failed to handle %r from the scheduler", msg.op)

    def _flush(self) -> None:
        """Send what piled up, in batches, then read what came in."""
        with self._socket.lock:
            if self._closed:
                return
            if self._before_flush is not None:
                self._outbox.extend(self._before_flush())
            if not self._outbox:
                self._socket.read()
            while self._outbox:
                batch: list[Message] = []
                while self._outbox and len(batch) < BATCH:
                    msg = self._outbox.popleft()
                    batch.append(msg)
                    if "keys" in msg.fields:  # up to 5,000 keys: it ends the batch, so
                        break  # the header stays under the scheduler's limit
                try:
                    self._socket.send(batch)
                except zmq.Again:  # nowhere to queue it yet: keep it, in order, for later
                    self._outbox.extendleft(reversed(batch))
                    return

    # -- the I/O thread ------------------------------------------------------

    def _run(self) -> None:
        waker_only = select.poll()
        waker_only.register(self._waker.fd, select.POLLIN)
        with_socket = select.poll()
        with_socket.register(self._waker.fd, select.POLLIN)
        with_socket.register(self._socket.fd, select.POLLIN)
        next_heartbeat = time.monotonic() + HEARTBEAT_INTERVAL
        try:
            while not self._closing:
                wake_at = next_heartbeat
                poller = with_socket
                if self._waiting:  # a caller reads: racing it would only slow it down
                    poller = waker_only
                elif (handback := self._caller_read_at + HANDBACK) > time.monotonic():
                    poller, wake_at = waker_only, min(wake_at, handback)
                if self._outbox:  # a send gave up (SEND_TIMEOUT_MS): try again soon
                    wake_at = min(wake_at, time.monotonic() + SEND_TIMEOUT_MS / 1000)
                poller.poll(int(1000 * max(0.0, wake_at - time.monotonic())) + 1)
                self._waker.clear()
                self._flush()
                if time.monotonic() >= next_heartbeat:
                    self._outbox.append(Message("heartbeat"))
                    self._flush()
                    next_heartbeat = time.monotonic() + HEARTBEAT_INTERVAL
            self._outbox.append(Message("goodbye"))
            self._flush()
        except Exception:
            log.exception("client I/O thread failed")
        finally:
            with self._socket.lock:
                self._closed = True
                self._socket.socket.close()
            self._context.term()
            self._waker.close()
            with self._waiting_lock:
                waiting = list(self._waiting)
            for waker in waiting:  # stop polling a closed socket
                waker.wake()


def _hello() -> Message:
    return Message("hello-client", {"version": protocol.VERSION, **sharedmem.hello_fields()})


def _unix_socket_problem(address: str) -> str | None:
    """Why nobody could answer at an ``ipc://`` address, when the file says so."""
    if not address.startswith("ipc://"):
        return None
    path = address.removeprefix("ipc://")
    if not_a_socket(path):
        return f"{path} is not a socket: is that the path given to `celeriac scheduler --ipc`"
    if not os.path.lexists(path):
        return f"there is no socket at {path}: is `celeriac scheduler --ipc {path}` running"
    if not os.access(path, os.W_OK):
        return f"this user may not connect to {path} (no write permission on it)"
    return None
