"""The Waker that pokes an I/O thread's poll loop from other threads."""

from __future__ import annotations

import os
import select
import threading
from typing import Any

import pytest

from celeriac.wire import wakeup
from celeriac.wire.wakeup import Waker

pytestmark = pytest.mark.timeout(10)


def readable(waker: Waker) -> bool:
    ready, _, _ = select.select([waker.fd], [], [], 0)
    return bool(ready)


def test_a_wake_makes_the_fd_readable_once_per_burst() -> None:
    waker = Waker()
    try:
        waker.wake()
        waker.wake()
        assert readable(waker)
        waker.clear()
        assert not readable(waker)
        waker.wake()
        assert readable(waker)
    finally:
        waker.close()


def test_a_wake_racing_with_clear_is_never_lost(monkeypatch: pytest.MonkeyPatch) -> None:
    """Another thread wakes while the polling thread is in the middle of ``clear()``."""
    waker = Waker()
    real_read = os.read
    racers: list[threading.Thread] = []

    def read_while_another_thread_wakes(fd: int, n: int) -> Any:
        if not racers:
            racers.append(threading.Thread(target=waker.wake))
            racers[0].start()
        return real_read(fd, n)

    try:
        waker.wake()
        monkeypatch.setattr(wakeup.os, "read", read_while_another_thread_wakes)
        waker.clear()
        monkeypatch.setattr(wakeup.os, "read", real_read)
        racers[0].join()
        assert readable(waker)  # the racing wake counts: the loop polls again
        waker.clear()
        assert not readable(waker)
        waker.wake()  # and later wakes still work
        assert readable(waker)
    finally:
        waker.close()
