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
        self._closed = False

    def wake(self) -> None:
        # The flag and the byte change together under the lock, so clear()
        # never sees one without the other.
        with self._lock:
            if self._pending:
                return
            self._pending = True
            try:
                os.write(self._write_fd, b"x")
            except OSError:
                pass  # closed during shutdown

    def clear(self) -> None:
        """Called by the polling thread *before* it drains its queue."""
        with self._lock:
            if not self._pending:
                return  # nothing written since the last clear: no system call
            try:
                while os.read(self.fd, 4096):
                    pass
            except (BlockingIOError, OSError):
                pass
            self._pending = False

    def close(self) -> None:
        with self._lock:
            if self._closed:  # never close a descriptor number twice: it may be reused
                return
            self._closed = True
            self._pending = True  # later wake() calls write nothing
        for fd in (self.fd, self._write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __del__(self) -> None:
        self.close()
