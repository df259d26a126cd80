"""This process's id, kept current across forks.

Every submit and every dropped future asks whether the process forked since
the client connected; ``os.getpid()`` is a system call (1.6 µs here), so the
id is read once and updated by ``os.register_at_fork``.
"""

from __future__ import annotations

import os


class ProcessId:
    """The current process's id in :attr:`pid`, updated in a forked child."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        os.register_at_fork(after_in_child=self._forked)

    def _forked(self) -> None:
        self.pid = os.getpid()


#: The one instance: the client and its future tables compare against it.
process = ProcessId()
