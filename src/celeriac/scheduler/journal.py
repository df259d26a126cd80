"""The scheduler's journal: durable work in SQLite (WAL), written in group commits.

The state machine emits ``(table, key, record or None)`` operations; the
server writes all of one loop iteration's operations in one transaction,
*before* it sends that iteration's replies, so "accepted" means "in the
journal".  The journal is read only at start-up: it is a log to recover
from, never a queue anyone polls.

Rows are upserted and deleted by key, so the file holds live work only: a
finished task's row goes when its result TTL ends.  The file format (the
checksum beside every record, the header, the commit number and its side
file ``PATH.seq``) is :mod:`celeriac.scheduler.journal_format`'s; opening a
journal checks all of it and refuses a damaged one (:class:`JournalDamaged`).

A commit that fails (the disk is full, an I/O error) raises
:class:`JournalWriteError` and keeps its operations: they are written with
the next commit that succeeds, so memory and journal agree again once the
disk has room (see the server for what callers are told meanwhile).

``fsync`` policy, like Redis's ``appendfsync``:

* ``always``: SQLite ``synchronous=FULL``: each commit is on disk before replies go out.
* ``batch`` (default): ``synchronous=NORMAL`` in WAL mode: a commit survives a
  crash of the scheduler process at once; after a power loss or kernel crash,
  commits since the last WAL checkpoint (at most about 1,000 pages of writes)
  may be lost.
* ``never``: ``synchronous=OFF``: the operating system decides when to write.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import sqlite3
import time
import uuid
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celeriac.scheduler import journal_format
from celeriac.scheduler.journal_format import (
    FORMAT,
    TABLES,
    SequenceFile,
    checksum,
    pack,
    seq_seed,
    sequence_path,
)

log = logging.getLogger("celeriac.scheduler")

FSYNC_POLICIES = {"always": "FULL", "batch": "NORMAL", "never": "OFF"}

_UPSERT = {
    table: f"INSERT INTO {table} (key, record, seq, crc) VALUES (?, ?, ?, ?) ON CONFLICT(key) "
    "DO UPDATE SET record = excluded.record, seq = excluded.seq, crc = excluded.crc"
    for table in TABLES
}
_DELETE = {table: f"DELETE FROM {table} WHERE key = ?" for table in TABLES}
_SET_META = (
    "INSERT INTO meta (name, value, crc) VALUES (?, ?, ?) "
    "ON CONFLICT(name) DO UPDATE SET value = excluded.value, crc = excluded.crc"
)
#: With ``--fsync always``, the side file is synced at most this often (seconds): it
#: needs no sync to be right (it is written after a commit that is on disk, so it
#: is never ahead), only to be recent after a power loss; syncing it on every
#: commit doubled the syncs (+100 µs of 300 µs per commit, measured).
SIDE_SYNC_INTERVAL = 1.0


class JournalError(Exception):
    """The journal at ``path`` cannot be used; the message names the file and why."""

    def __init__(self, path: Path, text: str) -> None:
        super().__init__(text)
        self.path = path


class JournalDamaged(JournalError):
    """The journal at ``path`` failed its checks at start; ``problems`` lists each."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(
            path,
            f"journal {path} is damaged: {problems[0]}{more}; refusing to start. "
            f"`celeriac journal check {path}` lists the problems, "
            f"`celeriac journal salvage {path} NEW` copies every intact record to NEW",
        )
        self.problems = problems


class JournalWriteError(JournalError):
    """A commit to the journal at ``path`` failed (``cause``); its operations are kept.

    ``text`` is what callers refused meanwhile are told:
    ``disk full at PATH`` when the disk or a quota is full.
    """

    def __init__(self, path: Path, cause: BaseException) -> None:
        self.cause = cause
        self.disk_full = _is_disk_full(cause)
        text = f"disk full at {path}" if self.disk_full else f"cannot write {path}: {cause}"
        super().__init__(path, text)
        self.text = text


def _is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.Error):
        return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


class Journal:
    """The SQLite journal of durable work at ``path`` (WAL mode; created if missing).

    ``fsync``: ``always`` (every commit reaches the disk before replies go out),
    ``batch`` (the default: WAL with ``synchronous=NORMAL``) or ``never``; see
    docs/reliability.md.  ``owner``: who uses it (the scheduler's address), kept
    in the header of a journal made now.

    Opening reads and checks the whole file (:func:`journal_format.read`):
    a damaged one raises :class:`JournalDamaged`; a 0.1.0 one is upgraded in
    place.  One transaction per loop turn (:meth:`apply`), read back only at
    start (:meth:`load`).
    """

    def __init__(self, path: str | Path, fsync: str = "batch", *, owner: str = "") -> None:
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {', '.join(FSYNC_POLICIES)}, not {fsync!r}")
        self.path = Path(path)
        self.fsync = fsync
        self.writes = 0
        #: Operations of commits that failed, by (table, key): written with the next one.
        self._held: dict[tuple[str, str], Any] = {}
        self._side_failed = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise JournalError(self.path, f"cannot create the journal {self.path}: {exc}") from None
        contents = journal_format.read(self.path)
        if contents.problems:
            raise JournalDamaged(self.path, contents.problems)
        for note in contents.notes:
            log.warning("journal %s: %s", self.path, note)
        self._contents: journal_format.Contents | None = contents
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={FSYNC_POLICIES[fsync]}")
            self._open(contents, owner)
        except (sqlite3.Error, OSError) as exc:
            with contextlib.suppress(Exception):
                self._db.close()
            raise JournalError(self.path, f"cannot open the journal {self.path}: {exc}") from None

    def _open(self, contents: journal_format.Contents, owner: str) -> None:
        if contents.format is None:
            self.identity = _new_identity(self.path, owner)
            self.seq = 0
            self._write_schema(upgrade=False)
            log.info("journal %s created (id %s)", self.path, self.identity["id"])
        elif contents.format == 1:
            self.identity = _new_identity(self.path, owner)
            self.seq = 0
            self._write_schema(upgrade=True)
            counts = contents.counts()
            log.warning(
                "journal %s was written by celeriac 0.1.0 (format 1): upgraded in place to "
                "format %d (a header and a checksum on each of its %d records)",
                self.path,
                FORMAT,
                sum(counts.values()),
            )
        else:
            self.identity, self.seq = contents.identity, contents.seq
        journal_id = bytes.fromhex(self.identity["id"])
        self._side = SequenceFile(sequence_path(self.path), journal_id)
        self._side_synced = 0.0
        # Behind by the commit a crash cut short, or missing: catch up now.
        recorded = contents.sequence
        if recorded is None or recorded.seq != self.seq:
            self._side.write(self.seq)

    def _write_schema(self, *, upgrade: bool) -> None:
        """Create the tables (or add checksums to 0.1.0's) and the header, in one transaction."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            for table in TABLES:
                db.execute(
                    f"CREATE TABLE IF NOT EXISTS {table} (key TEXT PRIMARY KEY, "
                    "record BLOB NOT NULL, seq INTEGER NOT NULL, crc INTEGER NOT NULL)"
                )
                if upgrade:
                    _add_checksums(db, table)
            db.execute(
                "CREATE TABLE meta "
                "(name TEXT PRIMARY KEY, value BLOB NOT NULL, crc INTEGER NOT NULL)"
            )
            for name, value in (("format", FORMAT), ("identity", self.identity), ("seq", 0)):
                blob = pack(value)
                db.execute(_SET_META, (name, blob, checksum(name.encode(), blob)))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        # Into the main file now: the header must not live only in the -wal,
        # whose loss is what the header and the side file are there to notice.
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # -- writing ---------------------------------------------------------------------

    def apply(self, ops: Iterable[tuple[str, str, Any]]) -> None:
        """Write one loop iteration's operations (and any held ones) as a single transaction.

        Raises :class:`JournalWriteError` when the commit fails; the
        operations are then held for the next commit (:meth:`retry`).
        """
        held = self._held
        for table, key, record in ops:
            # Only the final operation per row matters within one transaction;
            # popping first keeps the order of the final writes.
            held.pop((table, key), None)
            held[(table, key)] = record
        self._commit()

    def hold(self, ops: Iterable[tuple[str, str, Any]]) -> None:
        """Keep operations for the next commit without writing (while commits fail)."""
        held = self._held
        for table, key, record in ops:
            held.pop((table, key), None)
            held[(table, key)] = record

    def retry(self) -> None:
        """Try again to commit what is held (at least the commit number: a probe)."""
        self._commit()

    @property
    def held(self) -> int:
        """How many row operations wait for a commit that succeeds."""
        return len(self._held)

    def _commit(self) -> None:
        seq = self.seq + 1
        seed = seq_seed(seq)  # each record's checksum covers the commit's number
        upserts: dict[str, list[tuple[str, bytes, int, int]]] = {t: [] for t in TABLES}
        deletes: dict[str, list[tuple[str]]] = {t: [] for t in TABLES}
        written = False
        for (table, key), record in self._held.items():
            if record is None:
                deletes[table].append((key,))
            else:
                blob = pack(record)
                upserts[table].append(
                    (key, blob, seq, zlib.crc32(blob, zlib.crc32(key.encode(), seed)))
                )
                written = True
        db = self._db
        try:
            db.execute("BEGIN")
            for table in TABLES:
                if upserts[table]:
                    db.executemany(_UPSERT[table], upserts[table])
                if deletes[table]:
                    db.executemany(_DELETE[table], deletes[table])
            if not written:  # no row carries this commit's number: the header does
                blob = pack(seq)
                db.execute(_SET_META, ("seq", blob, checksum(b"seq", blob)))
            db.execute("COMMIT")
        except (sqlite3.Error, OSError) as exc:
            # A failed COMMIT leaves the transaction open (SQLite's rule for
            # SQLITE_FULL): end it, so the next BEGIN can start.
            with contextlib.suppress(sqlite3.Error):
                if db.in_transaction:
                    db.execute("ROLLBACK")
            raise JournalWriteError(self.path, exc) from exc
        self._held.clear()
        self.seq = seq
        self.writes += 1
        self._write_side(seq)

    def _write_side(self, seq: int) -> None:
        try:
            self._side.write(seq)
            if self.fsync == "always" and (now := time.monotonic()) >= self._side_synced:
                self._side.sync()
                self._side_synced = now + SIDE_SYNC_INTERVAL
        except OSError as exc:
            # The commit is in; only the check for a lost -wal is weaker until
            # this works again.  Said once, not per commit.
            if not self._side_failed:
                log.warning("cannot update %s (%s); the journal is written", self._side.path, exc)
                self._side_failed = True
            return
        self._side_failed = False

    # -- reading ---------------------------------------------------------------------

    def load(self) -> tuple[list[dict[str, Any]], dict[str, float], list[dict[str, Any]]]:
        """Tasks (in submission order), revocations and periodic jobs, as checked at opening.

        Only once: what was read at opening is dropped after (it can be large).
        """
        contents, self._contents = self._contents, None
        if contents is None:
            raise RuntimeError("Journal.load() is called once, after opening")
        records = contents.records
        tasks = [record for _, record in records["task"]]
        revoked = dict(records["revoked"])
        jobs = [record for _, record in records["periodic"]]
        return tasks, revoked, jobs

    def close(self) -> None:
        """Write what is held (one last try), close the database (SQLite checkpoints
        the WAL into the file) and the side file."""
        if self._held:
            try:
                self._commit()
            except JournalWriteError as exc:
                log.error("%s: %d operations held since are lost at this stop", exc, self.held)
        with contextlib.suppress(sqlite3.Error):  # a checkpoint on a full disk may fail
            self._db.close()
        with contextlib.suppress(OSError, AttributeError):
            if self.fsync == "always":
                self._side.sync()
            self._side.close()


def _add_checksums(db: sqlite3.Connection, table: str) -> None:
    """A 0.1.0 table gets its ``seq`` (0) and ``crc`` columns, filled from the rows as they are."""
    columns = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
    for column in ("seq", "crc"):
        if column not in columns:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} INTEGER NOT NULL DEFAULT 0")
    rows = db.execute(f"SELECT rowid, CAST(key AS BLOB), record FROM {table}").fetchall()
    db.executemany(
        f"UPDATE {table} SET crc = ? WHERE rowid = ?",
        [(checksum(key, blob), rowid) for rowid, key, blob in rows],
    )


def _new_identity(path: Path, owner: str) -> dict[str, Any]:
    """Who this journal is: a random id (also in the side file), when, where, for whom."""
    return {
        "id": uuid.uuid4().hex,
        "created": time.time(),
        "host": socket.gethostname(),
        "owner": owner,
        "path": str(path.resolve()),
    }


def default_path(port: int) -> Path:
    """Where a scheduler keeps its journal unless told: one file per port."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(Path.home(), ".local", "state")
    return Path(base) / "celeriac" / f"scheduler-{port}.sqlite3"


@dataclass
class SalvageReport:
    """What :func:`salvage` copied (records per table) and what it found wrong in the source."""

    source: journal_format.Contents
    copied: dict[str, int] = field(default_factory=dict)

    @property
    def problems(self) -> list[str]:
        """Everything wrong with the source, each dropped record named."""
        return self.source.problems


def salvage(path: str | Path, new: str | Path) -> SalvageReport:
    """Copy every readable, checksum-valid record of the journal at ``path`` into a new one.

    ``new`` must not exist (nor its side file); it becomes a sound journal of
    this release's format, written with ``fsync always``.  The source is only
    read.  Raises :class:`JournalError` when ``new`` exists or cannot be written.
    """
    source, target = Path(path), Path(new)
    for existing in (target, sequence_path(target)):
        if existing.exists():
            raise JournalError(target, f"{existing} exists: salvage writes a new journal")
    contents = journal_format.read(source, salvaging=True)
    journal = Journal(target, "always", owner=f"salvaged from {source.resolve()}")
    try:
        journal.apply(
            (table, key, record) for table in TABLES for key, record in contents.records[table]
        )
    except JournalWriteError as exc:
        raise JournalError(target, f"cannot write {target}: {exc.cause}") from None
    finally:
        journal.close()
    return SalvageReport(contents, contents.counts())
