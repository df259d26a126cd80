"""The journal's file format, and reading a journal file back with every check.

A journal is an SQLite database (WAL mode) and a side file beside it:

* ``task``, ``revoked``, ``periodic``: ``(key, record, seq, crc)``: the record
  a msgpack blob, ``seq`` the number of the commit that wrote it, and ``crc``
  the CRC32 of all three (:func:`checksum`), so a flipped bit in a record, its
  key or its number is found when it is read, never loaded.
* ``meta``: the header, ``(name, value, crc)``: ``format`` (:data:`FORMAT`),
  ``identity`` (a random id made at creation, when, on which host, for which
  scheduler, at which path) and ``seq``.
* ``PATH.seq``: the id and the number of the last commit, written after each
  commit (:class:`SequenceFile`).

Commits are numbered 1, 2, ...; the journal's own count is the highest
number it holds: every commit leaves its number on the rows it writes, and a
commit that writes no row (deletes only) sets the header's ``seq`` instead.
Writing the number into the rows a commit writes anyway costs nothing; a
header row updated by every commit dirtied one more page per commit (+20 µs
of 85 µs per commit, measured).

The side file is what tells a journal that lost commits from one that never
had them.  SQLite keeps recent commits only in ``PATH-wal`` until a
checkpoint; delete that file, or truncate ``PATH``, and SQLite opens what is
left as a sound but older (or empty) database: no check inside the database
can see the loss, since the evidence went with it.  The side file is outside
both, and is never behind by more than the commit a crash interrupted (it is
written after the commit): a journal whose count is below the side file's
lost the difference.

Release 0.1.0 wrote format 1: the three tables without ``seq`` and ``crc``, no
``meta`` and no side file; :class:`~celeriac.scheduler.journal.Journal` upgrades it in
place.  :func:`read` checks everything it can and lists what is wrong; it
never writes (the database is opened read-only), and never opens a 0-byte
file with SQLite, which would delete the ``-wal`` beside it.
"""

from __future__ import annotations

import functools
import gc
import os
import sqlite3
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import msgpack

#: The format this release writes; 1 is release 0.1.0's (no header, no checksums).
FORMAT = 2
TABLES = ("task", "revoked", "periodic")
#: What a table's rows are called in messages.
RECORD_NAMES = {"task": "task", "revoked": "revocation", "periodic": "periodic job"}
#: Problems listed per table before the rest are only counted.
MAX_LISTED = 20


def checksum(key: bytes, blob: bytes, seq: int = 0) -> int:
    """The CRC32 stored beside a record: of its commit number (8 bytes, little-endian),
    its key's UTF-8 bytes, then the record (a header row: ``seq`` 0).

    CRC32 finds every single-bit flip and every burst up to 32 bits, which is
    what storage damage looks like; it costs ~0.2 µs per record here.
    """
    return zlib.crc32(blob, zlib.crc32(key, seq_seed(seq)))


def seq_seed(seq: int) -> int:
    """The CRC32 of a commit number: where every record of that commit starts from."""
    return zlib.crc32(seq.to_bytes(8, "little"))


def pack(record: Any) -> bytes:
    """A record as the journal stores it."""
    return msgpack.packb(record, use_bin_type=True)


def unpack(blob: bytes) -> Any:
    """A stored record read back."""
    return msgpack.unpackb(blob, raw=False)


def sequence_path(path: Path) -> Path:
    """The side file of the journal at ``path``: ``PATH.seq``."""
    return path.with_name(path.name + ".seq")


class Sequence(NamedTuple):
    """What the side file holds: the journal's id (16 bytes) and its last commit's number."""

    journal_id: bytes
    seq: int


class SequenceFile:
    """``PATH.seq``: 40 bytes rewritten in place after every commit.

    ``magic`` (8 bytes), the journal id (16), the commit number (8), the CRC32
    of those (4) and 4 spare bytes.  Rewritten with one ``pwrite`` at offset 0
    on a descriptor kept open (about 2 µs): the file never grows, so a full
    disk cannot fail it.  Not synced by :meth:`write`: the journal syncs it
    when its policy says (:meth:`sync`).
    """

    MAGIC = b"CLRCSEQ\x01"
    _LAYOUT = struct.Struct("<8s16sQ")
    SIZE = _LAYOUT.size + 8

    def __init__(self, path: Path, journal_id: bytes) -> None:
        self.path = path
        self._id = journal_id
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)

    @classmethod
    def encode(cls, journal_id: bytes, seq: int) -> bytes:
        """The file's bytes for commit ``seq`` of journal ``journal_id``."""
        body = cls._LAYOUT.pack(cls.MAGIC, journal_id, seq)
        return body + struct.pack("<I", zlib.crc32(body)) + bytes(4)

    @classmethod
    def read(cls, path: Path) -> Sequence | None:
        """The side file at ``path``; None if there is none.

        Raises ``ValueError`` naming what is wrong with a damaged one.
        """
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        if len(data) != cls.SIZE:
            raise ValueError(f"is {len(data)} bytes, not {cls.SIZE}")
        body, (crc,) = data[: cls._LAYOUT.size], struct.unpack_from("<I", data, cls._LAYOUT.size)
        magic, journal_id, seq = cls._LAYOUT.unpack(body)
        if magic != cls.MAGIC:
            raise ValueError("is not a celeriac sequence file (bad magic)")
        if zlib.crc32(body) != crc:
            raise ValueError("fails its checksum")
        return Sequence(journal_id, seq)

    def write(self, seq: int) -> None:
        """Record that commit ``seq`` is in the journal."""
        os.pwrite(self._fd, self.encode(self._id, seq), 0)

    def sync(self) -> None:
        """Make what was written reach the disk."""
        os.fdatasync(self._fd)

    def close(self) -> None:
        """Close the descriptor."""
        os.close(self._fd)


@dataclass
class Contents:
    """A journal file as :func:`read` found it.

    ``format``: 2 (this release's), 1 (0.1.0's: no header, no checksums) or
    None (no journal there yet: no file, or an SQLite file with no tables).
    ``identity``: the header's (format 2).  ``seq``: the journal's commit count,
    the highest commit number it holds.  ``sequence``: the side file's, if
    there is one.  ``records``: per table, ``(key, record)`` in the
    order they were first written, every one whose checksum held.
    ``problems``: what is wrong, each naming the part (empty: sound);
    ``notes``: what is worth saying but not wrong.
    """

    path: Path
    format: int | None = None
    identity: dict[str, Any] = field(default_factory=dict)
    seq: int = 0
    sequence: Sequence | None = None
    records: dict[str, list[tuple[str, Any]]] = field(
        default_factory=lambda: {table: [] for table in TABLES}
    )
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def sound(self) -> bool:
        """Nothing is wrong."""
        return not self.problems

    def counts(self) -> dict[str, int]:
        """Readable records per table."""
        return {table: len(rows) for table, rows in self.records.items()}


def read(path: str | Path, *, salvaging: bool = False) -> Contents:
    """Read the journal at ``path`` and check all of it; never writes to it.

    Checks, in order: the side file; that the file exists and is not empty;
    SQLite's ``quick_check``; the tables; the header's checksums and format;
    the commit number against the side file; every record's checksum and
    encoding; and that each table's key index and its rows agree (a row lost
    from the table would otherwise go unseen, as ``quick_check`` does not
    compare them).  ``salvaging``: also look up, one by one, keys the index
    holds whose rows the scan could not reach.
    """
    contents = Contents(Path(path))
    side = sequence_path(contents.path)
    try:
        contents.sequence = SequenceFile.read(side)
    except (ValueError, OSError) as exc:
        contents.problems.append(f"its sequence file {side} {exc}")
    size = _size(contents.path)
    if size is None or size == 0:
        _missing_or_empty(contents, size, side)
        return contents
    try:
        db = sqlite3.connect(f"{contents.path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        contents.problems.append(f"cannot be opened: {exc}")
        return contents
    collecting = gc.isenabled()
    # Every record read stays: a collection of the young generation while the
    # heap of them grows only walks them again (0.8 s instead of 0.4 s for
    # 100,000 tasks, measured; the server freezes them once loaded).
    gc.disable()
    try:
        _read_database(db, contents, side, salvaging)
    except sqlite3.DatabaseError as exc:  # past the checks: a page that cannot be read
        contents.problems.append(f"cannot be read as an SQLite database: {exc}")
    finally:
        if collecting:
            gc.enable()
        db.close()
    return contents


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None


def _missing_or_empty(contents: Contents, size: int | None, side: Path) -> None:
    # SQLite would open a 0-byte file as an empty database, and delete the
    # -wal beside it: report it without opening it.
    recorded = contents.sequence
    if size is None:
        if recorded is not None:
            contents.problems.append(
                f"is missing, but {side} records {recorded.seq} commits: "
                "the journal was deleted or moved"
            )
        return
    lost = f", but {side} records {recorded.seq} commits" if recorded is not None else ""
    contents.problems.append(f"is empty (0 bytes){lost}: it was truncated or replaced")


def _read_database(db: sqlite3.Connection, contents: Contents, side: Path, salvaging: bool) -> None:
    if not _quick_check(db, contents):
        return
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "meta" in tables:
        _read_header(db, contents)
    elif tables & set(TABLES):
        contents.format = 1
    elif tables:
        listed = ", ".join(sorted(tables))
        contents.problems.append(f"is not a celeriac journal (its tables: {listed})")
        return
    if contents.format is not None and contents.format <= FORMAT:
        for table in TABLES:
            if table in tables:
                _read_table(db, contents, table, salvaging)
    _check_sequence(contents, side)  # after the rows: their numbers count


def _quick_check(db: sqlite3.Connection, contents: Contents) -> bool:
    """SQLite's own check of every page; what it finds, one problem a line.

    False when the file is no SQLite database at all (nothing more to read).
    """
    try:
        # One row per problem, or several in one text, led by "*** in database main ***".
        rows = [text for (text,) in db.execute(f"PRAGMA quick_check({MAX_LISTED})")]
    except sqlite3.DatabaseError as exc:
        if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_NOTADB:
            contents.problems.append(f"cannot be read as an SQLite database: {exc}")
            return False
        contents.problems.append(f"fails SQLite's quick_check: {exc}")  # it stopped on a page
        return True
    if rows != ["ok"]:
        lines = [line for text in rows for line in str(text).splitlines()]
        contents.problems.extend(
            f"fails SQLite's quick_check: {line}" for line in lines if not line.startswith("***")
        )
    return True


def _read_header(db: sqlite3.Connection, contents: Contents) -> None:
    header: dict[str, Any] = {}
    for name, value, crc in db.execute("SELECT CAST(name AS BLOB), value, crc FROM meta"):
        label = name.decode("utf-8", "replace")
        if checksum(name, value) != crc:
            contents.problems.append(f"header record {label!r} fails its checksum")
            continue
        try:
            header[label] = unpack(value)
        except ValueError as exc:
            contents.problems.append(f"header record {label!r} cannot be decoded: {exc}")
    missing = [name for name in ("format", "identity", "seq") if name not in header]
    if missing:
        contents.problems.append(f"header lacks {', '.join(missing)}")
    version = header.get("format")
    contents.format = version if isinstance(version, int) else FORMAT
    if isinstance(version, int) and version > FORMAT:
        contents.problems.append(
            f"was written by a later celeriac (journal format {version}; "
            f"this one reads formats 1 to {FORMAT})"
        )
    identity = header.get("identity")
    contents.identity = identity if isinstance(identity, dict) else {}
    seq = header.get("seq")
    contents.seq = max(contents.seq, seq if isinstance(seq, int) else 0)


def _check_sequence(contents: Contents, side: Path) -> None:
    recorded = contents.sequence
    if contents.format != FORMAT:
        if recorded is not None:
            what = "no tables" if contents.format is None else "no header"
            contents.problems.append(
                f"holds {what}, but {side} records {recorded.seq} commits: "
                "its contents were lost (a deleted -wal file, or the file replaced)"
            )
        return
    if recorded is None:
        contents.notes.append(
            f"{side} is missing: a lost -wal file could not be noticed; it is written anew"
        )
        return
    journal_id = _journal_id(contents)
    if journal_id is not None and recorded.journal_id != journal_id:
        contents.problems.append(
            f"is journal {journal_id.hex()}, but {side} belongs to journal "
            f"{recorded.journal_id.hex()}: the file was replaced"
        )
    elif recorded.seq > contents.seq:
        contents.problems.append(
            f"holds commits up to {contents.seq}, but {side} records {recorded.seq}: "
            f"the last {recorded.seq - contents.seq} commits are missing "
            "(a deleted or damaged -wal file, or an older copy of the journal)"
        )


def _journal_id(contents: Contents) -> bytes | None:
    try:
        return bytes.fromhex(contents.identity["id"])
    except (KeyError, TypeError, ValueError):
        return None


def _read_table(db: sqlite3.Connection, contents: Contents, table: str, salvaging: bool) -> None:
    checked = contents.format == FORMAT
    problems: list[str] = []
    rows = _scan(db, table, checked, problems, contents)
    indexed = _indexed_keys(db, table, problems)
    if indexed is not None:
        unreached = [key for key in indexed if key not in rows]
        if unreached:
            name = RECORD_NAMES[table]
            problems.append(
                f"{table} table: {len(unreached)} {name} key(s) in its index have no readable "
                f"row (first: {_show(unreached[0])})"
            )
            if salvaging:
                _look_up(db, table, unreached, checked, rows, problems, contents)
        unindexed = set(rows).difference(indexed)
        if unindexed or len(set(indexed)) != len(indexed):
            # The rows are sound, but the next write of such a key would add a second row.
            first = f" (first: {_show(min(unindexed))})" if unindexed else ""
            problems.append(
                f"{table} table: its key index disagrees with its rows: {len(unindexed)} "
                f"key(s) missing from it{first}, {len(indexed) - len(set(indexed))} repeated"
            )
    _report(contents, table, problems)
    contents.records[table].extend(rows.values())


def _columns(checked: bool) -> str:
    """What a row is read as: key, record, commit number, checksum (format 1: no last two)."""
    return "CAST(key AS BLOB), record, " + ("seq, crc" if checked else "0, NULL")


def _scan(
    db: sqlite3.Connection, table: str, checked: bool, problems: list[str], contents: Contents
) -> dict[bytes, tuple[str, Any]]:
    """Every verified row by stored key, in the order written; a scan that breaks off says where.

    The loop every start runs once per record: the checks of :func:`_verified`
    inline for the common case, about 1 µs a record on top of decoding it.
    """
    sql = f"SELECT rowid, {_columns(checked)} FROM {table} NOT INDEXED ORDER BY rowid"
    rows: dict[bytes, tuple[str, Any]] = {}
    highest = last = 0
    crc32, seed, is_task = zlib.crc32, _seed, table == "task"
    try:
        for last, key, blob, seq, crc in db.execute(sql):  # noqa: B007 (where a scan broke off)
            try:
                if checked and crc32(blob, crc32(key, seed(seq))) != crc:
                    raise ValueError
                text, record = key.decode(), unpack(blob)
                if is_task and record["key"] != text:
                    raise ValueError
            except Exception:  # any damage: _verified names it
                found = _verified(table, key, blob, seq, crc, checked, problems)
                if found is None:
                    rows.pop(key, None)  # a duplicate key with a bad copy: keep neither
                    continue
                text, record = found
            rows[key] = (text, record)
            highest = max(highest, seq)
    except sqlite3.DatabaseError as exc:
        problems.append(f"{table} table cannot be read past row {last}: {exc}")
    contents.seq = max(contents.seq, highest)
    return rows


def _verified(
    table: str,
    key: bytes,
    blob: Any,
    seq: Any,
    crc: int | None,
    checked: bool,
    problems: list[str],
) -> tuple[str, Any] | None:
    """The key and record, or None with the problem noted."""
    if type(key) is not bytes or type(blob) is not bytes or type(seq) is not int:
        problems.append(f"{RECORD_NAMES[table]} record {_show(key)} is not a key, a blob, a number")
        return None
    if checked and zlib.crc32(blob, zlib.crc32(key, _seed(seq))) != crc:
        problems.append(f"{RECORD_NAMES[table]} record {_show(key)} fails its checksum")
        return None
    try:
        text = key.decode("utf-8")
        record = unpack(blob)
    except ValueError as exc:  # UnicodeDecodeError, msgpack's errors
        problems.append(f"{RECORD_NAMES[table]} record {_show(key)} cannot be decoded: {exc}")
        return None
    if table == "task" and (type(record) is not dict or record.get("key") != text):
        problems.append(f"{RECORD_NAMES[table]} record {_show(key)} does not hold that task")
        return None
    return text, record


#: Rows of one commit share its number: read back, most seeds are found here.
_seed = functools.lru_cache(maxsize=4096)(seq_seed)


def _indexed_keys(db: sqlite3.Connection, table: str, problems: list[str]) -> list[bytes] | None:
    """The keys the table's primary-key index holds, read from the index alone."""
    index = f"sqlite_autoindex_{table}_1"
    if db.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (index,)).fetchone() is None:
        return None
    try:
        sql = f"SELECT CAST(key AS BLOB) FROM {table} INDEXED BY {index}"
        keys = [key for (key,) in db.execute(sql)]
    except sqlite3.DatabaseError as exc:
        problems.append(f"{table} table's key index cannot be read: {exc}")
        return None
    damaged = sum(1 for key in keys if not isinstance(key, bytes))
    if damaged:
        problems.append(f"{table} table's key index holds {damaged} entries that are no key")
    return [key for key in keys if isinstance(key, bytes)]


def _look_up(
    db: sqlite3.Connection,
    table: str,
    keys: list[bytes],
    checked: bool,
    rows: dict[bytes, tuple[str, Any]],
    problems: list[str],
    contents: Contents,
) -> None:
    """Salvage: fetch rows the scan missed by key, through the index, one at a time."""
    sql = f"SELECT {_columns(checked)} FROM {table} WHERE key = ?"
    for key in keys:
        try:
            found = db.execute(sql, (key.decode("utf-8"),)).fetchone()
        except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:
            problems.append(f"{RECORD_NAMES[table]} record {_show(key)} cannot be read: {exc}")
            continue
        if found is not None:
            stored, blob, seq, crc = found
            verified = _verified(table, stored, blob, seq, crc, checked, problems)
            if verified is not None:
                rows[key] = verified
                contents.seq = max(contents.seq, seq)


def _report(contents: Contents, table: str, problems: list[str]) -> None:
    contents.problems.extend(problems[:MAX_LISTED])
    if len(problems) > MAX_LISTED:
        contents.problems.append(f"{table} table: {len(problems) - MAX_LISTED} more problems")


def _show(key: Any) -> str:
    if isinstance(key, bytes):
        return repr(key.decode("utf-8", "replace"))
    return repr(key)
