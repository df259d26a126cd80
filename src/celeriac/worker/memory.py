"""How much memory a worker process may use, and what it does near the limit.  Pure.

The thresholds are Dask's (``distributed.worker.memory.*``), as fractions of
``--memory-limit``:

* **target** (0.6): results kept for peers beyond this many bytes are spilled
  to disk, least recently used first (:class:`~celeriac.worker.data.ResultStore`);
* **spill** (0.7): when the process's resident memory passes this, kept results
  are spilled until it would be back under target, whatever they weigh;
* **pause** (0.8): above this the worker takes no new tasks (the scheduler
  stops assigning to it) until memory falls under it again;
* **terminate** (0.95): the supervisor restarts the process; what it kept is
  computed again elsewhere, like a worker that died.

The default limit, as in Dask, is the machine's memory (or the cgroup's, in a
container) divided among the ``--nprocs`` processes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

TARGET, SPILL, PAUSE, TERMINATE = 0.6, 0.7, 0.8, 0.95


@dataclass(frozen=True)
class MemoryAction:
    """What to do now: spill this many bytes of kept results, and be paused or not."""

    spill: int = 0
    paused: bool = False


def decide(limit: int, rss: int, managed: int) -> MemoryAction:
    """What a worker process with ``limit`` bytes (0: none), ``rss`` resident and
    ``managed`` bytes of kept results in memory does about its memory now."""
    if limit <= 0:
        return MemoryAction()
    spill = 0
    if rss > SPILL * limit:
        spill = min(managed, rss - int(TARGET * limit))
    return MemoryAction(spill=max(0, spill), paused=rss > PAUSE * limit)


def over_terminate(limit: int, rss: int) -> bool:
    """The supervisor restarts a process this big."""
    return limit > 0 and rss > TERMINATE * limit


def limit_of(setting: int | str, nprocs: int) -> int:
    """The limit in bytes that ``--memory-limit`` names (``"auto"``: :func:`auto_limit`)."""
    return auto_limit(nprocs) if setting == "auto" else int(setting)


def auto_limit(nprocs: int) -> int:
    """Dask's ``memory_limit="auto"``: this machine's memory (or its cgroup's
    limit, if lower) shared among ``nprocs`` processes; 0 where unknown."""
    total = _physical_memory()
    cgroup = _cgroup_limit()
    if cgroup and (not total or cgroup < total):
        total = cgroup
    return total // max(1, nprocs)


def rss_of(pid: int) -> int:
    """Resident memory of process ``pid`` (Linux /proc; 0 where unavailable)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (OSError, ValueError):
        return 0


def _cgroup_limit() -> int:
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:  # "max", or v1's "no limit" value
            return int(text)
    return 0
