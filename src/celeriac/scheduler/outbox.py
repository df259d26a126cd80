"""What the state machine emits, held until the server takes it.

Two kinds of output: messages to send (:class:`Outbox`) and operations for
the journal (:class:`JournalOps`).  Both are plain lists: the server takes
them after each batch, writing the journal before it sends anything.
"""

from __future__ import annotations

from typing import Any

from celeriac.scheduler.periodic import PeriodicJob
from celeriac.scheduler.records import Send, TaskRecord, journal_entry
from celeriac.wire.protocol import Message, Payload

#: A journal operation: (table, key, record), or ``None`` for the record to delete it.
JournalOp = tuple[str, str, Any]

#: ``Send(to, msg)`` without the named tuple's ``__new__``, a Python-level
#: function: two or three of these are made for every task.
_send = tuple.__new__


class Outbox:
    """The messages the state has decided to send, until the server takes them."""

    def __init__(self) -> None:
        self._sends: list[Send] = []
        #: The key lists of this batch's grouped messages, by (peer, op, reason).
        self._groups: dict[tuple[bytes, str, str], list[str]] = {}

    def send(
        self, to: bytes, op: str, payloads: list[Payload] | None = None, /, **fields: Any
    ) -> None:
        """Send ``op`` with ``fields`` (and payload frames) to peer ``to``."""
        self._sends.append(_send(Send, (to, Message(op, fields, payloads or []))))

    def put(self, to: bytes, msg: Message) -> None:
        """Send a message built already: hot paths build their fields in place."""
        self._sends.append(_send(Send, (to, msg)))

    def accepted(self, to: bytes, key: str) -> None:
        """Say ``key`` is accepted: one message per peer per batch, where the first went."""
        self._grouped(to, "accepted", key, {})

    def refused(self, to: bytes, key: str, reason: str, text: str) -> None:
        """Say ``key`` is refused for ``reason`` (``text`` tells why): one message per
        peer and reason per batch, like :meth:`accepted`."""
        self._grouped(to, "refused", key, {"reason": reason, "text": text})

    def free(self, to: bytes, key: str) -> None:
        """Tell a worker it may drop the result of ``key``: one message per batch, like
        :meth:`accepted`."""
        self._grouped(to, "free", key, {})

    def _grouped(self, to: bytes, op: str, key: str, fields: dict[str, Any]) -> None:
        group = (to, op, fields.get("reason", ""))
        keys = self._groups.get(group)
        if keys is None:
            keys = self._groups[group] = []
            self._sends.append(_send(Send, (to, Message(op, {"keys": keys, **fields}))))
        keys.append(key)

    def take(self) -> list[Send]:
        """Everything decided since the last call, in order."""
        sends, self._sends = self._sends, []
        self._groups.clear()
        return sends


class JournalOps:
    """Operations on durable work; none at all unless the journal is on."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.pending: list[JournalOp] = []

    def record(self, table: str, key: str, record: Any) -> None:
        """Write ``record`` under ``key`` in ``table`` (``None`` deletes it)."""
        if self.enabled:
            self.pending.append((table, key, record))

    def task(self, task: TaskRecord) -> None:
        """Journal the task as it is now, if it is durable (detached work)."""
        if task.durable and self.enabled:
            self.pending.append(("task", task.key, journal_entry(task)))

    def job(self, name: str, job: PeriodicJob | None) -> None:
        """Journal a periodic job as it is now (``None``: it was removed)."""
        self.record("periodic", name, job.to_dict() if job is not None else None)

    def take(self) -> list[JournalOp]:
        """The operations piled up since the last call, in order."""
        ops, self.pending = self.pending, []
        return ops
