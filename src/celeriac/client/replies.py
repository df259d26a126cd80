"""Requests that wait for an answer (``info``, ``status``, ``periodic``) and their replies.

Each request carries an id (``rid``); the scheduler's reply carries it back.
An id is known from the request until its caller takes the answer or stops
waiting, so a reply that comes too late finds no place and is dropped.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import Any

from celeriac.errors import SchedulerUnavailable
from celeriac.wire.protocol import Message

#: The ops that answer a request, each carrying its ``rid``.
REPLY_OPS = frozenset({"info-reply", "status-reply", "periodic-reply", "who-has-reply"})


class ReplyRouter:
    """Request ids -> replies, for callers on any thread.

    Parameters:
        send_now: sends messages on the calling thread (after anything
            queued before them).
        wait_until: ``wait_until(ready, timeout) -> bool`` blocks until
            ``ready()`` or the timeout, reading the scheduler's messages meanwhile.
    """

    def __init__(
        self,
        *,
        send_now: Callable[[list[Message]], None],
        wait_until: Callable[[Callable[[], bool], float | None], bool],
    ) -> None:
        self._lock = threading.Lock()
        self._replies: dict[int, Message | None] = {}
        self._rids = itertools.count()
        self._send_now = send_now
        self._wait_until = wait_until

    def request(self, op: str, fields: dict[str, Any], timeout: float | None) -> Message:
        """Send ``op`` with a fresh request id and wait for the reply that carries it.

        Parameters:
            op: the request's op (``info``, ``status``, ``periodic``).
            fields: its fields, besides the id.
            timeout: seconds to wait (``None``: no limit).

        Raises ``SchedulerUnavailable`` if no reply came in time.
        """
        rid = next(self._rids)
        with self._lock:
            self._replies[rid] = None
        try:
            self._send_now([Message(op, {"rid": rid, **fields})])
            self._wait_until(lambda: self._replies[rid] is not None, timeout)
        finally:
            with self._lock:
                reply = self._replies.pop(rid)
        if reply is None:
            raise SchedulerUnavailable(f"the scheduler did not answer {op!r} in time")
        return reply

    def deliver(self, msg: Message) -> None:
        """A reply came (on whichever thread read it): hand it to its caller, if still waiting.

        Parameters:
            msg: a message whose op is in :data:`REPLY_OPS`.
        """
        with self._lock:
            if msg["rid"] in self._replies:  # else: its caller stopped waiting
                self._replies[msg["rid"]] = msg

    def __len__(self) -> int:
        """How many requests wait for their reply."""
        return len(self._replies)
