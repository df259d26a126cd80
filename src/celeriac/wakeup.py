"""Wake a ZeroMQ poll loop from another thread.

ZeroMQ sockets are not thread-safe, so other threads hand work to the I/O
thread through a queue and poke it through a pipe, which ``zmq.Poller``
watches next to its sockets.  A flag keeps it to one byte per wake-up however
many items pile up meanwhile: that is what turns a burst of calls into one
batch on the wire.
"""

from __future__ import annotations

import contextlib
import os
import threading


class Waker:
    def __init__(self) -> None:
        self.fd, self._write_fd = os.pipe()
        os.set_blocking(self.fd, False)
        self._pending = False
        self._lock = threading.Lock()

    def wake(self) -> None:
        with self._lock:
            if self._pending:
                return
            self._pending = True
        try:
            os.write(self._write_fd, b"x")
        except OSError:
            pass  # closed during shutdown

    def clear(self) -> None:
        """Called by the I/O thread *before* it drains its queue.

        The pipe is emptied before the flag is lowered: the other way round, a
        byte written by a ``wake()`` that slips in between would be swallowed
        with the flag left up, and every later ``wake()`` would be a no-op
        until something else woke the loop (a lost wake-up: seconds of delay).
        """
        try:
            while os.read(self.fd, 4096):
                pass
        except (BlockingIOError, OSError):
            pass
        with self._lock:
            self._pending = False

    def close(self) -> None:
        for fd in (self.fd, self._write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
