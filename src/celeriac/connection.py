"""A client's link to the scheduler: one DEALER socket, one I/O thread.

ZeroMQ sockets are not thread-safe, so user threads never touch the socket:
they append messages to an outbox and wake the I/O thread, which sends
everything that piled up as one batch (opportunistic batching: nothing waits
on a timer).  Incoming messages are handed to ``on_message`` on the I/O thread.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path

import zmq

from celeriac import protocol
from celeriac.errors import SchedulerUnavailable
from celeriac.protocol import Message
from celeriac.security import secure_client
from celeriac.transport import drain
from celeriac.wakeup import Waker

log = logging.getLogger("celeriac.client")

#: Messages per multipart send: big enough to amortize, small enough to pipeline.
BATCH = 1000
HEARTBEAT_INTERVAL = 5.0


class Connection:
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
        self._socket = self._context.socket(zmq.DEALER)
        self._socket.setsockopt(zmq.LINGER, 1000)
        self._socket.setsockopt(zmq.ROUTING_ID, uuid.uuid4().bytes)
        self._closing = False
        self._welcome = threading.Event()
        self._refusal: str | None = None
        self._registering = True  # hello sent, no welcome yet
        self.max_message_bytes = protocol.DEFAULT_MAX_MESSAGE_BYTES
        try:
            if keys is not None:
                secure_client(self._socket, keys, "client")
            self._socket.connect(address)
        except (zmq.ZMQError, ValueError) as exc:
            self._socket.close(0)
            self._context.term()
            raise ValueError(f"cannot connect to {address!r}: {exc}") from None
        self._thread = threading.Thread(target=self._run, name="celeriac-client-io", daemon=True)

    def start(self, timeout: float) -> None:
        """Start the I/O thread and wait for the scheduler's welcome."""
        self._thread.start()
        self.send(Message("hello-client", {"version": protocol.VERSION}))
        if not self._welcome.wait(timeout):
            self.close()
            raise SchedulerUnavailable(
                f"no Celeriac scheduler answered at {self.address} within {timeout:g} s; "
                "is `celeriac scheduler` running there (and, if it uses --keys, do we have "
                "an authorized key)?"
            )
        if self._refusal is not None:
            self.close()
            raise SchedulerUnavailable(f"scheduler at {self.address} refused us: {self._refusal}")

    def send(self, msg: Message) -> None:
        self._outbox.append(msg)
        self._waker.wake()

    def send_many(self, msgs: Iterable[Message]) -> None:
        self._outbox.extend(msgs)
        self._waker.wake()

    def wake(self) -> None:
        """Have the I/O thread run ``before_flush`` and send soon."""
        self._waker.wake()

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._waker.wake()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)

    # -- the I/O thread ------------------------------------------------------

    def _run(self) -> None:
        socket = self._socket
        poller = zmq.Poller()
        poller.register(socket, zmq.POLLIN)
        poller.register(self._waker.fd, zmq.POLLIN)
        next_heartbeat = time.monotonic() + HEARTBEAT_INTERVAL
        try:
            while not self._closing:
                ready = dict(poller.poll(int(1000 * HEARTBEAT_INTERVAL)))
                if socket in ready:
                    self._read_available()
                self._waker.clear()
                self._flush()
                if time.monotonic() >= next_heartbeat:
                    self._send([Message("heartbeat")])
                    next_heartbeat = time.monotonic() + HEARTBEAT_INTERVAL
            self._flush()
            self._send([Message("goodbye")])
        except Exception:
            log.exception("client I/O thread failed")
        finally:
            socket.close()
            self._context.term()
            self._waker.close()

    def _read_available(self) -> None:
        for messages in drain(self._socket):
            for msg in messages:
                self._dispatch(msg)

    def _dispatch(self, msg: Message) -> None:
        if msg.op == "welcome":
            self._registering = False
            self.max_message_bytes = msg.get("max_message_bytes", self.max_message_bytes)
            self._welcome.set()
        elif msg.op == "error" and msg.get("about") == "hello-client":
            self._refusal = msg["text"]
            self._welcome.set()
        elif msg.op == "reregister":
            if self._registering:
                return  # one answer per restart, however many queued messages drew one
            self._registering = True
            log.warning("the scheduler does not know this client (restarted?); reconnecting")
            self._send([Message("hello-client", {"version": protocol.VERSION})])
            self._on_message(msg)
        else:
            try:
                self._on_message(msg)
            except Exception:
                log.exception("failed to handle %r from the scheduler", msg.op)

    def _flush(self) -> None:
        if self._before_flush is not None:
            self._outbox.extend(self._before_flush())
        while self._outbox:
            batch: list[Message] = []
            while self._outbox and len(batch) < BATCH:
                batch.append(self._outbox.popleft())
            self._send(batch)

    def _send(self, messages: list[Message]) -> None:
        self._socket.send_multipart(protocol.encode(messages), copy=False)
