"""The scheduler's journal: durable work in SQLite (WAL), written in group commits.

The state machine emits ``(table, key, record or None)`` operations; the
server writes all of one loop iteration's operations in one transaction,
*before* it sends that iteration's replies, so "accepted" means "in the
journal".  The journal is read only at start-up: it is a log to recover
from, never a queue anyone polls.

Rows are upserted and deleted by key, so the file holds live work only: a
finished task's row goes when its result TTL ends.

``fsync`` policy, like Redis's ``appendfsync``:

* ``always``: SQLite ``synchronous=FULL``: each commit is on disk before replies go out.
* ``batch`` (default): ``synchronous=NORMAL`` in WAL mode: a commit survives a
  crash of the scheduler process at once; after a power loss or kernel crash,
  commits since the last WAL checkpoint (at most about 1,000 pages of writes)
  may be lost.
* ``never``: ``synchronous=OFF``: the operating system decides when to write.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgpack

log = logging.getLogger("celeriac.scheduler")

FSYNC_POLICIES = {"always": "FULL", "batch": "NORMAL", "never": "OFF"}
TABLES = ("task", "revoked", "periodic")


class Journal:
    """The SQLite journal of durable work at ``path`` (WAL mode; created if missing).

    ``fsync``: ``always`` (every commit reaches the disk before replies go out),
    ``batch`` (the default: WAL with ``synchronous=NORMAL``) or ``never``; see
    docs/reliability.md.  One transaction per loop turn (:meth:`apply`), read
    back only at start (:meth:`load`).
    """

    def __init__(self, path: str | Path, fsync: str = "batch") -> None:
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {', '.join(FSYNC_POLICIES)}, not {fsync!r}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={FSYNC_POLICIES[fsync]}")
        for table in TABLES:
            self._db.execute(
                f"CREATE TABLE IF NOT EXISTS {table} (key TEXT PRIMARY KEY, record BLOB NOT NULL)"
            )
        self.writes = 0

    def apply(self, ops: Iterable[tuple[str, str, Any]]) -> None:
        """Write one loop iteration's operations as a single transaction."""
        upserts: dict[str, list[tuple[str, bytes]]] = {t: [] for t in TABLES}
        deletes: dict[str, list[tuple[str]]] = {t: [] for t in TABLES}
        for table, key, record in _last_per_key(ops):
            if record is None:
                deletes[table].append((key,))
            else:
                upserts[table].append((key, msgpack.packb(record, use_bin_type=True)))
        with self._db:  # BEGIN ... COMMIT
            self._db.execute("BEGIN")
            for table in TABLES:
                if upserts[table]:
                    self._db.executemany(
                        f"INSERT INTO {table} (key, record) VALUES (?, ?) "
                        "ON CONFLICT(key) DO UPDATE SET record = excluded.record",
                        upserts[table],
                    )
                if deletes[table]:
                    self._db.executemany(f"DELETE FROM {table} WHERE key = ?", deletes[table])
        self.writes += 1

    def load(self) -> tuple[list[dict[str, Any]], dict[str, float], list[dict[str, Any]]]:
        """Tasks (in submission order), revocations and periodic jobs."""
        tasks = [_unpack(r) for (r,) in self._db.execute("SELECT record FROM task ORDER BY rowid")]
        revoked = {k: _unpack(r) for k, r in self._db.execute("SELECT key, record FROM revoked")}
        jobs = [_unpack(r) for (r,) in self._db.execute("SELECT record FROM periodic")]
        return tasks, revoked, jobs

    def close(self) -> None:
        """Close the database."""
        self._db.close()


def default_path(port: int) -> Path:
    """Where a scheduler keeps its journal unless told: one file per port."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(Path.home(), ".local", "state")
    return Path(base) / "celeriac" / f"scheduler-{port}.sqlite3"


def _last_per_key(ops: Iterable[tuple[str, str, Any]]) -> list[tuple[str, str, Any]]:
    """Only the final operation per row matters within one transaction."""
    last: dict[tuple[str, str], Any] = {}
    for table, key, record in ops:
        last.pop((table, key), None)  # keep insertion order = order of the final write
        last[(table, key)] = record
    return [(table, key, record) for (table, key), record in last.items()]


def _unpack(blob: bytes) -> Any:
    return msgpack.unpackb(blob, raw=False)
