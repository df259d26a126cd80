"""Acknowledgements: submissions sent but not yet accepted, and who waits for them.

A detached submission (``.delay()``, a canvas, a periodic job) asks the
scheduler to answer ``accepted`` once it has recorded it; from then on it runs
even if this process exits.  :class:`AckTracker` remembers each such message
until its key is accepted, so that after a scheduler restart exactly those are
sent again (they are idempotent by key), and it lets callers wait for the keys
they sent (:class:`Acceptance`).  A key the scheduler ``refused`` (it cannot
write its journal) ends its wait too, and is not resent.

The tracker is pure bookkeeping (the client sends and waits): tracking,
sending and waiting are separate steps on purpose, so a pipelined ``.delay()``
(issue 17) can send now, learn of the acceptance later, and bound how many
keys are in flight by ``len(tracker)``.
"""

from __future__ import annotations

import threading

from celeriac.wire.protocol import Message


class Acceptance:
    """One caller's keys, sent together, until the scheduler has accepted each.

    Parameters:
        keys: the keys (a periodic job's: its name) still to be accepted.
    """

    def __init__(self, keys: set[str]) -> None:
        self.pending = keys
        #: ``(reason, text)`` of a ``refused`` for any of the keys, else None.
        self.refusal: tuple[str, str] | None = None
        self._lock = threading.Lock()

    def accepted(self, key: str) -> None:
        """The scheduler has recorded ``key`` (called on whichever thread read it).

        Parameters:
            key: an accepted key.
        """
        with self._lock:
            self.pending.discard(key)

    def refused(self, key: str, reason: str, text: str) -> None:
        """The scheduler refused ``key``: it was not recorded and will not run.

        Parameters:
            key: a refused key.
            reason: why, in a word (``journal``: it cannot write its journal).
            text: why, for a person (``disk full at PATH``).
        """
        with self._lock:
            self.pending.discard(key)
            self.refusal = (reason, text)

    def done(self) -> bool:
        """Every key has been answered: accepted, or refused (then :attr:`refusal` says why)."""
        return not self.pending


class AckTracker:
    """Acknowledged submissions in flight: the message of each key until it is accepted.

    Thread-safe: any thread tracks what it is about to send, whichever
    thread reads the socket reports acceptances.  No I/O: the client sends the
    messages after :meth:`track` and waits on :meth:`Acceptance.done`.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[str, list[Acceptance]] = {}
        self._unacked: dict[str, Message] = {}  # sent, not yet accepted: resent after a restart

    def track(self, messages: list[Message]) -> Acceptance:
        """Remember messages about to be sent that ask to be acknowledged; the handle to wait on.

        Track before sending: the ``accepted`` may come back before the send returns.

        Parameters:
            messages: ``submit`` messages (keyed by ``key``) or ``periodic-set``
                messages (keyed by ``name``), each with ``ack`` set.
        """
        # A task is acknowledged by its key, a periodic job by its name.
        by_key = {m.fields.get("key") or m.fields["name"]: m for m in messages}
        acceptance = Acceptance(set(by_key))
        with self._lock:
            for key in by_key:
                self._waiting.setdefault(key, []).append(acceptance)
            self._unacked.update(by_key)
        return acceptance

    def abandon(self, acceptance: Acceptance) -> None:
        """Stop tracking the keys of ``acceptance`` that are still pending (its wait timed out).

        They are not resent after a restart, since their caller was told they
        failed.  Another caller waiting for the same key keeps waiting, and
        keeps it tracked.

        Parameters:
            acceptance: what :meth:`track` returned.
        """
        with self._lock:
            for key in list(acceptance.pending):
                others = [a for a in self._waiting.get(key, ()) if a is not acceptance]
                if others:
                    self._waiting[key] = others
                else:
                    self._waiting.pop(key, None)
                    self._unacked.pop(key, None)

    def accepted(self, keys: list[str]) -> None:
        """The scheduler accepted these keys (an ``accepted`` message).

        Parameters:
            keys: the accepted keys; unknown ones (a late answer) are ignored.
        """
        accepted: list[tuple[Acceptance, str]] = []
        with self._lock:
            for key in keys:
                accepted.extend((acceptance, key) for acceptance in self._waiting.pop(key, ()))
                self._unacked.pop(key, None)
        for acceptance, key in accepted:
            acceptance.accepted(key)

    def refused(self, keys: list[str], reason: str, text: str) -> None:
        """The scheduler refused these keys (a ``refused`` message): not resent after a restart.

        Parameters:
            keys: the refused keys; unknown ones are ignored.
            reason: why, in a word (``journal``).
            text: why, for a person.
        """
        refused: list[tuple[Acceptance, str]] = []
        with self._lock:
            for key in keys:
                refused.extend((acceptance, key) for acceptance in self._waiting.pop(key, ()))
                self._unacked.pop(key, None)
        for acceptance, key in refused:
            acceptance.refused(key, reason, text)

    def unacknowledged(self) -> list[Message]:
        """The messages sent and not yet accepted, in the order they were sent."""
        with self._lock:
            return list(self._unacked.values())

    def __len__(self) -> int:
        """How many keys are sent and not yet accepted."""
        return len(self._unacked)
