"""Time limits inside a worker process.

* Soft limit: :class:`SoftTimeLimitExceeded` is raised inside the task.  In
  the main thread this is a signal, which also interrupts a blocking call
  such as ``time.sleep``; in other slot threads it is an asynchronous
  exception, delivered at the next Python bytecode.
* Hard limit: the supervisor kills the whole process, which works even for a
  task stuck in C code holding the GIL.  The worker tells it deadlines over a
  pipe (:class:`ControlChannel`), one JSON array per line:
  ``["deadline", key, monotonic_time]``, ``["clear", key, 0]``,
  ``["kill", key, reason]``.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import threading
import time

from celeriac.errors import SoftTimeLimitExceeded

log = logging.getLogger("celeriac.worker")

SOFT_LIMIT_SIGNAL = signal.SIGUSR1


class SoftLimits:
    """Deadlines of running tasks, checked by the I/O thread.

    A slot thread brackets its task with :meth:`start` and :meth:`stop`; the
    I/O thread sleeps until :meth:`next_deadline` and then calls :meth:`enforce`.
    """

    def __init__(self) -> None:
        self._deadlines: dict[str, tuple[float, int]] = {}  # key -> (deadline, thread id)
        self._lock = threading.Lock()
        self._main = threading.main_thread().ident
        self._main_running: str | None = None  # the task now on the main thread
        self._interrupt_main_for: str | None = None

    def install(self) -> None:
        """Call from the main thread: the signal handler raises in the main slot."""
        signal.signal(SOFT_LIMIT_SIGNAL, self._on_signal)

    def start(self, key: str, seconds: float) -> None:
        """Raise :class:`SoftTimeLimitExceeded` in task ``key`` if it runs ``seconds`` from now.

        Call from the thread about to run it: that thread is the one interrupted.
        """
        with self._lock:
            self._deadlines[key] = (time.monotonic() + seconds, threading.get_ident())
            if threading.get_ident() == self._main:
                self._main_running = key

    def stop(self, key: str) -> None:
        """Task ``key`` ended: forget its deadline, and any interrupt not yet raised for it."""
        with self._lock:
            self._deadlines.pop(key, None)
            if self._main_running == key:
                self._main_running = None
            if self._interrupt_main_for == key:
                self._interrupt_main_for = None

    def next_deadline(self) -> float | None:
        """The earliest pending deadline (``time.monotonic()`` seconds), or ``None``."""
        with self._lock:
            return min((d for d, _ in self._deadlines.values()), default=None)

    def enforce(self) -> None:
        """Interrupt every task past its soft deadline (once each)."""
        now = time.monotonic()
        with self._lock:
            due = [(k, t) for k, (d, t) in self._deadlines.items() if d <= now]
            for key, thread_id in due:
                del self._deadlines[key]
                if thread_id == self._main:
                    self._interrupt_main_for = key
        for key, thread_id in due:
            log.warning("task %s passed its soft time limit; interrupting it", key)
            if thread_id == self._main:
                signal.pthread_kill(thread_id, SOFT_LIMIT_SIGNAL)
            else:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(thread_id), ctypes.py_object(SoftTimeLimitExceeded)
                )

    def _on_signal(self, signum: int, frame: object) -> None:
        target = self._interrupt_main_for
        # Raise only into the task it was meant for, never into the next one.
        if target is not None and target == self._main_running:
            self._interrupt_main_for = None
            raise SoftTimeLimitExceeded("soft time limit exceeded")


class ControlChannel:
    """Lines to the supervisor: hard deadlines, and requests to be killed.

    ``fd`` is the write end of the supervisor's control pipe (``--control-fd``),
    or ``None`` for a worker run on its own: then every call is a no-op.  A
    write that fails logs once and makes the channel unsupervised.
    """

    def __init__(self, fd: int | None) -> None:
        self._fd = fd

    @property
    def supervised(self) -> bool:
        """A supervisor reads this channel (so it can kill this process)."""
        return self._fd is not None

    def deadline(self, key: str, seconds: float) -> None:
        """Have the supervisor kill this process if task ``key`` still runs ``seconds`` from now."""
        self._write(["deadline", key, time.monotonic() + seconds])

    def clear(self, key: str) -> None:
        """Task ``key`` ended: cancel its deadline."""
        self._write(["clear", key, 0])

    def kill_me(self, key: str, reason: str) -> None:
        """Have the supervisor kill this process now, for task ``key``.

        ``reason`` (e.g. ``"terminated"``) goes to the scheduler in its
        ``worker-died`` report, which names ``key`` as the culprit.
        """
        self._write(["kill", key, reason])

    def _write(self, event: list[object]) -> None:
        if self._fd is None:
            return
        line = json.dumps(event) + "\n"  # one JSON array per line: keys may hold spaces
        try:
            os.write(self._fd, line.encode())
        except OSError as exc:
            log.error("lost the control pipe to the supervisor: %s", exc)
            self._fd = None
