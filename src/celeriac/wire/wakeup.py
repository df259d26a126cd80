"""Wake a ZeroMQ poll loop from another thread.

ZeroMQ sockets are not thread-safe, so other threads hand work to the I/O
thread through a queue and poke it through a pipe, which its ``select.poll``
watches next to the socket's ``ZMQ_FD``.  A flag keeps it to one byte per
wake-up however many items pile up meanwhile: that is what turns a burst of
calls into one batch on the wire.
"""

from __future__ import annotations

import contextlib
import os
import threading


class Waker:
    """A pipe one thread polls (:attr:`fd`) and any thread writes to (:meth:`wake`).

    Register :attr:`fd` for ``POLLIN``; call :meth:`clear` after each wake-up,
    before looking at the work.  :meth:`wake` and :meth:`close` may be called
    from any thread.
    """

    def __init__(self) -> None:
        self.fd, self._write_fd = os.pipe()
        os.set_blocking(self.fd, False)
        self._pending = False
        self._lock = threading.Lock()
        self._closed = False

    def wake(self) -> None:
        """Make :attr:`fd` readable; a no-op while a wake-up is pending, or once closed."""
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
        """Close both ends of the pipe, once (collection does it too); later wakes do nothing."""
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
