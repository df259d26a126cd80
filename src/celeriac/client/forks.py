"""What a process keeps that a forked child must not share: its id, its random task ids.

Every submit and every dropped future asks whether the process forked since
the client connected; ``os.getpid()`` is a system call (1.6 µs here), so the
id is read once and updated by ``os.register_at_fork``.

Task ids are capabilities: whoever knows one can ask for its result.  So each
is 128 bits from ``os.urandom``, drawn from a buffer filled 1,024 ids at a
time, which a forked child throws away before it draws (``register_at_fork``
again): it would otherwise draw the very ids its parent draws next.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

#: Ids made per ``os.urandom`` call: 16 KiB of it, about 100 µs once per batch.
BATCH = 1024


class ProcessId:
    """The current process's id in :attr:`pid`, updated in a forked child."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        os.register_at_fork(after_in_child=self._forked)

    def _forked(self) -> None:
        self.pid = os.getpid()


class RandomIds:
    """Unguessable ids: :meth:`draw` returns 32 hex digits, 128 bits from ``os.urandom``.

    Measured per call on the ``.delay()`` path (timeit, this machine, with the
    ``name-`` f-string): ``uuid4().hex`` 2.1 µs, ``os.urandom(16).hex()`` 0.53,
    a keyed BLAKE2 of a counter 0.80, a pool behind a lock 0.41, this pool
    0.26 (the old prefix plus counter, which was guessable: 0.19).

    Thread-safe without a lock: ``next()`` on a list iterator is one step
    under the GIL, so two threads never get the same id; two that find the
    batch used up at once each make a fresh one.  A forked child drops the
    batch it inherited (its parent will hand out the rest).
    """

    def __init__(self) -> None:
        self._ids: Iterator[str] = iter(())
        os.register_at_fork(after_in_child=self._forked)

    def draw(self) -> str:
        """32 lower-case hex digits no one can derive from the ids drawn before."""
        try:
            return next(self._ids)
        except StopIteration:
            text = os.urandom(16 * BATCH).hex()
            self._ids = iter([text[i : i + 32] for i in range(0, len(text), 32)])
            return next(self._ids)

    def _forked(self) -> None:
        self._ids = iter(())


#: The one instance: the client and its future tables compare against it.
process = ProcessId()
#: The one source of task ids in this process, for every client in it.
random_ids = RandomIds()
