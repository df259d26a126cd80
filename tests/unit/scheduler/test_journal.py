"""The journal file: written, read back, upgraded, checked, refused when damaged, salvaged.

Everything here is one process and a temporary directory.  A crash is a copy
of the files taken while the journal is open (its last commits still only in
the ``-wal``); a full disk is SQLite's ``max_page_count``, which fails a
commit with the same ``SQLITE_FULL`` a full file system does.
"""

from __future__ import annotations

import logging
import random
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from celeriac.scheduler import journal_format
from celeriac.scheduler.journal import (
    Journal,
    JournalDamaged,
    JournalError,
    JournalWriteError,
    salvage,
)
from celeriac.scheduler.journal_format import FORMAT, SequenceFile, sequence_path

DATA = Path(__file__).parents[2] / "integration" / "data"


def task(key: str, size: int = 40) -> dict[str, Any]:
    """A task record shaped as the state machine's (only ``key`` is read back here)."""
    return {"key": key, "name": "t", "args": [f"<{key}>".encode() * (size // 8 + 1)]}


def write_tasks(journal: Journal, count: int, start: int = 0) -> dict[str, Any]:
    """One commit per task, as a stream of ``.delay()`` calls makes; the records by key."""
    written = {}
    for i in range(start, start + count):
        record = task(f"t{i:04d}")
        journal.apply([("task", record["key"], record)])
        written[record["key"]] = record
    return written


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "journal.sqlite3"


@pytest.fixture
def closed(path: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """A journal of 60 tasks, a revocation and a job, closed (checkpointed into the file)."""
    journal = Journal(path)
    records = write_tasks(journal, 60)
    journal.apply([("revoked", "r1", 99.0), ("periodic", "job", {"name": "job"})])
    journal.close()
    yield path, records


def crash_copy(journal: Journal, to: Path, *, wal: bool = True) -> Path:
    """The journal's files as a SIGKILL would leave them (``wal=False``: and the -wal deleted)."""
    to.mkdir()
    copy = to / journal.path.name
    shutil.copy(journal.path, copy)
    shutil.copy(sequence_path(journal.path), sequence_path(copy))
    if wal:
        shutil.copy(f"{journal.path}-wal", f"{copy}-wal")
    return copy


def loaded(path: Path) -> tuple[list[dict[str, Any]], dict[str, float], list[dict[str, Any]]]:
    journal = Journal(path)
    try:
        return journal.load()
    finally:
        journal.close()


def refusal(path: Path) -> str:
    with pytest.raises(JournalDamaged) as caught:
        Journal(path)
    message = str(caught.value)
    assert str(path) in message
    return message


def flip_bit(path: Path, offset: int, bit: int = 0) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 1 << bit
    path.write_bytes(bytes(data))


# -- writing and reading back ------------------------------------------------------------


def test_what_is_applied_is_loaded_after_a_reopen(path: Path) -> None:
    journal = Journal(path)
    journal.apply([("task", "a", task("a")), ("task", "b", task("b")), ("revoked", "x", 5.0)])
    journal.apply([("task", "b", None), ("task", "c", task("c")), ("task", "a", task("a", 99))])
    assert journal.seq == 2
    journal.close()
    tasks, revoked, jobs = loaded(path)
    assert tasks == [task("a", 99), task("c")]  # in the order first written
    assert (revoked, jobs) == ({"x": 5.0}, [])
    contents = journal_format.read(path)
    assert contents.sound and contents.format == FORMAT and contents.seq == 2
    assert contents.sequence == (bytes.fromhex(contents.identity["id"]), 2)


def test_a_commit_that_only_deletes_is_counted_too(path: Path) -> None:
    """Rows carry the number of the commit that wrote them; a commit that writes
    none (it only deletes) leaves its number in the header instead."""
    journal = Journal(path)
    write_tasks(journal, 3)
    journal.apply([("task", "t0002", None)])
    journal.retry()  # nothing held: a commit with nothing in it is counted as well
    journal.close()
    contents = journal_format.read(path)
    assert contents.sound and contents.seq == 5 and contents.sequence.seq == 5  # type: ignore[union-attr]


def test_the_header_names_the_journal_and_its_owner(path: Path) -> None:
    Journal(path, owner="scheduler 127.0.0.1:9999").close()
    identity = journal_format.read(path).identity
    assert identity["owner"] == "scheduler 127.0.0.1:9999"
    assert identity["path"] == str(path.resolve())
    assert len(bytes.fromhex(identity["id"])) == 16


def test_every_commit_is_recorded_in_the_side_file(path: Path) -> None:
    journal = Journal(path)
    write_tasks(journal, 3)
    # read while open: the side file is written after each commit, not at close
    assert SequenceFile.read(sequence_path(path)).seq == 3  # type: ignore[union-attr]
    journal.close()


def test_a_crash_loses_nothing_committed(path: Path, tmp_path: Path) -> None:
    journal = Journal(path)
    records = write_tasks(journal, 20)
    copy = crash_copy(journal, tmp_path / "crashed")
    journal.close()
    assert loaded(copy)[0] == list(records.values())


def test_a_side_file_one_commit_behind_is_a_crash_between_commit_and_side_file(
    closed: tuple[Path, dict[str, Any]],
) -> None:
    path, records = closed
    side = sequence_path(path)
    recorded = SequenceFile.read(side)
    assert recorded is not None
    side.write_bytes(SequenceFile.encode(recorded.journal_id, recorded.seq - 1))
    assert loaded(path)[0] == list(records.values())
    assert SequenceFile.read(side) == recorded  # caught up at opening


def test_a_missing_side_file_is_written_anew_with_a_warning(
    closed: tuple[Path, dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    path, records = closed
    sequence_path(path).unlink()
    with caplog.at_level(logging.WARNING, "celeriac.scheduler"):
        assert loaded(path)[0] == list(records.values())
    assert f"{sequence_path(path)} is missing" in caplog.text
    assert journal_format.read(path).notes == []


# -- the 0.1.0 format --------------------------------------------------------------------


def test_a_0_1_0_journal_is_upgraded_in_place(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old = tmp_path / "old.sqlite3"
    shutil.copy(DATA / "journal-0.1.0.sqlite3", old)
    before = journal_format.read(old)
    assert before.format == 1 and before.sound
    with caplog.at_level(logging.WARNING, "celeriac.scheduler"):
        tasks, revoked, jobs = loaded(old)
    assert "written by celeriac 0.1.0 (format 1): upgraded in place" in caplog.text
    assert (len(tasks), len(jobs)) == (6, 1)
    after = journal_format.read(old)
    assert after.sound and after.format == FORMAT
    assert after.records == before.records  # every record kept, now with its checksum
    assert loaded(old) == (tasks, revoked, jobs)


def test_a_0_1_0_journal_with_a_side_file_lost_its_header(tmp_path: Path) -> None:
    old = tmp_path / "old.sqlite3"
    shutil.copy(DATA / "journal-0.1.0.sqlite3", old)
    sequence_path(old).write_bytes(SequenceFile.encode(bytes(16), 7))
    assert "holds no header, but" in refusal(old)


# -- refused at start --------------------------------------------------------------------


def test_a_journal_truncated_to_0_bytes_is_refused(closed: tuple[Path, dict[str, Any]]) -> None:
    path, _ = closed
    path.write_bytes(b"")
    message = refusal(path)
    assert "is empty (0 bytes), but" in message and "records 61 commits" in message


def test_a_0_byte_journal_without_side_file_is_refused_too(path: Path) -> None:
    path.write_bytes(b"")  # never what a scheduler leaves: created files get their tables at once
    assert "is empty (0 bytes)" in refusal(path)


def test_a_journal_deleted_with_its_side_file_left_is_refused(
    closed: tuple[Path, dict[str, Any]],
) -> None:
    path, _ = closed
    path.unlink()
    assert "is missing, but" in refusal(path)


def test_a_journal_truncated_to_half_is_refused(closed: tuple[Path, dict[str, Any]]) -> None:
    path, _ = closed
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.truncate(size // 2)
    message = refusal(path)
    assert "quick_check" in message or "cannot be read" in message


def test_a_deleted_wal_is_noticed_by_the_commit_count(path: Path, tmp_path: Path) -> None:
    journal = Journal(path)
    write_tasks(journal, 20)  # all in the -wal: no checkpoint yet
    copy = crash_copy(journal, tmp_path / "no-wal", wal=False)
    journal.close()
    message = refusal(copy)
    assert "holds commits up to 0, but" in message and "records 20" in message
    assert "the last 20 commits are missing" in message and "-wal" in message


def test_a_deleted_wal_after_a_checkpoint_loses_only_the_later_commits(
    closed: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    path, records = closed
    journal = Journal(path)
    write_tasks(journal, 5, start=100)
    copy = crash_copy(journal, tmp_path / "no-wal", wal=False)
    journal.close()
    assert "the last 5 commits are missing" in refusal(copy)
    report = salvage(copy, tmp_path / "new.sqlite3")
    assert [t["key"] for t in loaded(tmp_path / "new.sqlite3")[0]] == list(records)
    assert any("the last 5 commits are missing" in p for p in report.problems)


def test_a_flipped_bit_in_a_record_is_refused_by_its_checksum(
    closed: tuple[Path, dict[str, Any]],
) -> None:
    path, _ = closed
    offset = path.read_bytes().index(b"<t0042>")
    flip_bit(path, offset + 3)
    assert "task record 't0042' fails its checksum" in refusal(path)


def test_a_flipped_bit_in_a_key_is_refused(closed: tuple[Path, dict[str, Any]]) -> None:
    path, _ = closed
    data = path.read_bytes()
    # the key as stored in the table row (the index holds another copy; flip the row's)
    offset = data.index(b"t0017\x00" if b"t0017\x00" in data else b"t0017")
    flip_bit(path, offset + 4)
    message = refusal(path)
    assert "fails its checksum" in message or "index" in message


def test_a_damaged_side_file_is_refused(closed: tuple[Path, dict[str, Any]]) -> None:
    path, _ = closed
    flip_bit(sequence_path(path), 20)
    assert f"its sequence file {sequence_path(path)} fails its checksum" in refusal(path)


def test_a_side_file_of_another_journal_is_refused(
    closed: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    path, _ = closed
    other = tmp_path / "other.sqlite3"
    Journal(other).close()
    shutil.copy(sequence_path(other), sequence_path(path))
    assert "the file was replaced" in refusal(path)


def test_a_journal_of_a_later_format_is_refused(closed: tuple[Path, dict[str, Any]]) -> None:
    path, _ = closed
    with sqlite3.connect(path) as db:
        blob = journal_format.pack(FORMAT + 1)
        db.execute(
            "UPDATE meta SET value = ?, crc = ? WHERE name = 'format'",
            (blob, journal_format.checksum(b"format", blob)),
        )
    assert f"written by a later celeriac (journal format {FORMAT + 1}" in refusal(path)


def test_a_file_that_is_no_database_is_refused(path: Path) -> None:
    path.write_bytes(b"celeriac " * 1000)
    assert "cannot be read as an SQLite database" in refusal(path)


def test_another_programs_database_is_refused(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE invoices (id INTEGER)")
    assert "is not a celeriac journal (its tables: invoices)" in refusal(path)


def test_the_refusal_is_one_line_that_says_how_to_proceed(
    closed: tuple[Path, dict[str, Any]],
) -> None:
    path, _ = closed
    path.write_bytes(b"")
    message = refusal(path)
    assert "\n" not in message
    assert f"celeriac journal check {path}" in message
    assert f"celeriac journal salvage {path} NEW" in message


@pytest.mark.parametrize("where", ["file", "wal"])
def test_no_single_bit_flip_loses_or_changes_a_record_silently(
    path: Path, tmp_path: Path, where: str
) -> None:
    """Finding M8: every flip is refused by name, or loads exactly what was written.

    ``file``: flips anywhere in a closed (checkpointed) journal; ``wal``: in
    the -wal of a crashed one, where SQLite's own frame checksums end the log
    early, which the commit count then notices.
    """
    journal = Journal(path)
    records = write_tasks(journal, 30)
    journal.apply([("revoked", "r1", 99.0), ("periodic", "job", {"name": "job"})])
    expected = (list(records.values()), {"r1": 99.0}, [{"name": "job"}])
    crashed = crash_copy(journal, tmp_path / "crashed")
    journal.close()
    source = crashed if where == "wal" else path
    target = Path(f"{crashed}-wal") if where == "wal" else source
    size = target.stat().st_size
    rng = random.Random(8)
    outcomes = {"refused": 0, "intact": 0}
    for trial in range(120):
        case = tmp_path / f"flip{trial}"
        case.mkdir()
        copy = case / source.name
        for suffix in ("", "-wal", ".seq"):
            if Path(f"{source}{suffix}").exists():
                shutil.copy(f"{source}{suffix}", f"{copy}{suffix}")
        flipped = Path(f"{copy}-wal") if where == "wal" else copy
        flip_bit(flipped, rng.randrange(size), rng.randrange(8))
        try:
            got = loaded(copy)
        except JournalDamaged as exc:
            assert str(copy) in str(exc)
            outcomes["refused"] += 1
        else:
            assert got == expected, f"flip {trial} changed what was loaded"
            outcomes["intact"] += 1
        shutil.rmtree(case)
    assert outcomes["refused"] > 0  # the flips do reach data that matters


# -- check and salvage -------------------------------------------------------------------


def test_salvage_copies_every_intact_record_and_names_the_dropped(
    closed: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    path, records = closed
    data = path.read_bytes()
    for key in ("t0005", "t0050"):
        flip_bit(path, data.index(f"<{key}>".encode()) + 2)
    before = path.read_bytes()
    new = tmp_path / "new.sqlite3"
    report = salvage(path, new)
    assert path.read_bytes() == before  # the source is only read
    assert "task record 't0005' fails its checksum" in report.problems
    assert "task record 't0050' fails its checksum" in report.problems
    assert report.copied == {"task": 58, "revoked": 1, "periodic": 1}
    assert journal_format.read(new).sound
    tasks, revoked, jobs = loaded(new)
    assert tasks == [r for k, r in records.items() if k not in ("t0005", "t0050")]
    assert (revoked, jobs) == ({"r1": 99.0}, [{"name": "job"}])


def test_salvage_reaches_rows_past_a_damaged_page_through_the_index(
    path: Path, tmp_path: Path
) -> None:
    """A damaged table page stops the scan; keys from the index find the rows past it."""
    journal = Journal(path)
    records = {f"k{i:03d}": task(f"k{i:03d}", size=600) for i in range(200)}
    journal.apply([("task", key, record) for key, record in records.items()])
    journal.close()
    data = bytearray(path.read_bytes())
    page_size = 4096
    page = data.index(b"k100\x83") // page_size  # the table row (key, then its msgpack map)
    data[page * page_size : page * page_size + 8] = b"\xff" * 8  # the leaf's header trashed
    path.write_bytes(bytes(data))
    assert "fails SQLite's quick_check" in refusal(path)
    problems = journal_format.read(path).problems
    assert any("task table cannot be read past row" in p for p in problems)
    new = tmp_path / "new.sqlite3"
    report = salvage(path, new)
    lost = [p for p in report.problems if p.startswith("task record") and "cannot be read" in p]
    assert 0 < len(lost) < 10  # one page of rows: 6 of 600 bytes fit in 4 KiB
    assert "task record 'k100' cannot be read: database disk image is malformed" in lost
    assert report.copied["task"] == 200 - len(lost)
    assert journal_format.read(new).sound
    kept = [t["key"] for t in loaded(new)[0]]
    assert kept == [k for k in records if not any(f"'{k}'" in p for p in lost)]


def test_salvage_writes_only_a_new_journal(
    closed: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    path, _ = closed
    with pytest.raises(JournalError, match="exists: salvage writes a new journal"):
        salvage(path, path)


def test_salvage_of_a_sound_journal_reports_nothing(
    closed: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    path, records = closed
    report = salvage(path, tmp_path / "new.sqlite3")
    assert report.problems == []
    assert loaded(tmp_path / "new.sqlite3")[0] == list(records.values())


# -- a full disk -------------------------------------------------------------------------


def fill(journal: Journal) -> None:
    """No page more: the next commit that needs one fails with SQLITE_FULL."""
    db = journal._db  # what a full file system does, without one
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    db.execute(f"PRAGMA max_page_count = {pages}")


def test_a_full_disk_fails_the_commit_naming_the_file_and_keeps_its_operations(
    path: Path, tmp_path: Path
) -> None:
    journal = Journal(path)
    first = write_tasks(journal, 3)
    fill(journal)
    big = {f"b{i}": task(f"b{i}", size=5000) for i in range(4)}
    with pytest.raises(JournalWriteError) as caught:
        journal.apply([("task", key, record) for key, record in big.items()])
    assert caught.value.disk_full
    assert caught.value.text == f"disk full at {path}"
    assert journal.held == 4 and journal.seq == 3
    journal.hold([("task", "b0", None)])  # later operations collapse onto the held ones
    with pytest.raises(JournalWriteError):
        journal.retry()
    assert journal.held == 4
    journal._db.execute("PRAGMA max_page_count = 1000000")  # space freed
    journal.retry()
    assert journal.held == 0 and journal.seq == 4
    copy = crash_copy(journal, tmp_path / "crashed")
    journal.close()
    expected = [*first.values(), *(r for k, r in big.items() if k != "b0")]
    assert loaded(copy)[0] == expected
    assert loaded(path)[0] == expected


def test_what_is_held_gets_one_last_try_at_close(path: Path) -> None:
    journal = Journal(path)
    fill(journal)
    with pytest.raises(JournalWriteError):
        journal.apply([("task", "late", task("late", size=20000))])
    journal._db.execute("PRAGMA max_page_count = 1000000")
    journal.close()  # a stop while commits failed: written if they work by now
    assert loaded(path)[0] == [task("late", size=20000)]
