"""The Waker that pokes an I/O thread's poll loop from other threads."""

from __future__ import annotations

import os
import select
import threading
from typing import Any

import pytest

from celeriac import wakeup
from celeriac.wakeup import Waker

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
    """Another thread wakes while the I/O thread is in the middle of ``clear()``."""
    waker = Waker()
    real_read = os.read
    raced = []

    def read_while_another_thread_wakes(fd: int, n: int) -> Any:
        if not raced:
            raced.append(True)
            thread = threading.Thread(target=waker.wake)
            thread.start()
            thread.join()
        return real_read(fd, n)

    try:
        waker.wake()
        monkeypatch.setattr(wakeup.os, "read", read_while_another_thread_wakes)
        waker.clear()  # the loop then drains its queue, which holds the racing item
        monkeypatch.setattr(wakeup.os, "read", real_read)
        assert raced
        waker.wake()  # the next item must wake the loop again
        assert readable(waker)
    finally:
        waker.close()
