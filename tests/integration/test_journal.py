"""The journal under faults, with real processes: a disk that fills, a journal damaged at rest.

Disk full (issue 14 M7): the journal on a 4 MiB tmpfs mounted for the test
(root only), a real scheduler, durable tasks sent until the disk is full.
Damage (M8): a journal written by a real scheduler, then truncated, bit-flipped
or stripped of its ``-wal``; the scheduler must refuse to start with one line
naming the file and the problem, ``celeriac journal check`` must list it, and
``celeriac journal salvage`` must bring back every intact record.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import tasks_for_tests as t
from celeriac import App, JournalUnavailable
from celeriac.testing import free_port, wait_until
from celeriac.testing.processes import CELERIAC

#: Tasks go to a queue no worker reads until the test says: they stay in the journal.
PARKED = "parked"


class Scheduler:
    """A ``celeriac scheduler`` on a fixed port and journal, its log in a file; restartable."""

    def __init__(self, journal: Path, log: Path) -> None:
        self.journal, self.log = journal, log
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []

    def command(self) -> list[str]:
        """The command line: no dashboard, timeouts for a loaded machine."""
        return [
            *CELERIAC, "scheduler", "--port", str(self.port), "--journal", str(self.journal),
            "--no-dashboard", "--log-level", "WARNING",
        ]  # fmt: skip

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL, stderr=log)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def terminate(self) -> None:
        assert self.process is not None
        self.process.terminate()
        assert self.process.wait(30) == 0

    def start_worker(self, *queues: str) -> None:
        cmd = [*CELERIAC, "worker", self.address, "--nprocs", "1", "--log-level", "WARNING"]
        self.workers.append(subprocess.Popen([*cmd, "--queues", ",".join(queues)]))

    def stop(self) -> None:
        for process in [*self.workers, self.process]:
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self.workers.clear()

    def lines(self, text: str) -> list[str]:
        return [line for line in self.log.read_text().splitlines() if text in line]


def numbers(i: int) -> list[int]:
    """A task's argument: ~25 KB pickled, so a few MiB fill with some 100 tasks."""
    return random.Random(i).choices(range(1 << 30, 1 << 31), k=5000)


def celeriac(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CELERIAC, *args], capture_output=True, text=True, timeout=60)


# -- a disk that fills -------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs, unmounted after the test (after its processes are gone)."""
    if os.geteuid() != 0:
        pytest.skip("needs root: mounts a 4 MiB tmpfs to fill (mount -t tmpfs)")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (no CAP_SYS_ADMIN?): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


@pytest.fixture
def full_disk_scheduler(small_disk: Path, tmp_path: Path) -> Iterator[Scheduler]:
    scheduler = Scheduler(small_disk / "journal.sqlite3", tmp_path / "scheduler.log")
    yield scheduler
    scheduler.stop()  # before the disk is unmounted


@pytest.mark.timeout(180)
def test_a_full_disk_refuses_durable_work_at_once_and_loses_nothing_acknowledged(
    full_disk_scheduler: Scheduler, small_disk: Path
) -> None:
    scheduler = full_disk_scheduler
    ballast = small_disk / "ballast"
    ballast.write_bytes(bytes(1 << 20))  # freed later: the operator making room
    scheduler.start()
    scheduler.start_worker("default")  # for plain futures; the durable tasks wait in PARKED
    acked: dict[str, int] = {}
    with App(scheduler.address, timeout=20, result_ttl=3600) as app:
        task = app.task(t.total_of, queue=PARKED)
        app.client.wait_for_workers(1, timeout=30)
        refusal = None
        for i in range(1000):
            started = time.monotonic()
            try:
                acked[task.delay(numbers(i)).id] = sum(numbers(i))
            except JournalUnavailable as exc:
                refusal, waited = exc, time.monotonic() - started
                break
        assert refusal is not None, "the disk never filled"
        assert str(refusal) == f"disk full at {scheduler.journal}"
        assert waited < 1.0  # at once, not after a timeout (it was 3 s and a crash)
        assert len(acked) > 20
        print(f"JOURNAL disk full after {len(acked)} tasks; refused in {waited * 1000:.1f} ms")

        # refused from now on, still at once; the scheduler lives and serves plain futures
        started = time.monotonic()
        with pytest.raises(JournalUnavailable, match="disk full at"):
            task.delay([1, 2, 3])
        assert time.monotonic() - started < 1.0
        assert app.client.submit(t.inc, 41).result(timeout=20) == 42
        assert scheduler.process is not None and scheduler.process.poll() is None
        info = app.client.scheduler_info()
        assert info["scheduler"]["journal_unavailable"] == f"disk full at {scheduler.journal}"

        ballast.unlink()  # room again: accepted within the retry back-off

        def accepted_again() -> bool:
            try:
                acked[task.delay([7, 8]).id] = 15
            except JournalUnavailable:
                return False
            return True

        wait_until(accepted_again, timeout=15, interval=0.2)

    # one line when writes began to fail, one when they worked again; none per message
    assert len(scheduler.lines("journal write failed: disk full at")) == 1
    assert len(scheduler.lines("written again after")) == 1
    assert scheduler.lines("Traceback") == []

    scheduler.kill()  # SIGKILL: only what is in the journal survives
    scheduler.start()
    scheduler.start_worker(PARKED)
    with App(scheduler.address, timeout=20) as app:
        got = {task_id: app.AsyncResult(task_id).get(timeout=60) for task_id in acked}
    assert got == acked  # every acknowledged task, its arguments intact


# -- damage at rest ----------------------------------------------------------------------


@pytest.fixture
def written(tmp_path: Path) -> Iterator[tuple[Scheduler, dict[str, int]]]:
    """A scheduler that accepted 30 durable tasks (parked: none ran), still running."""
    scheduler = Scheduler(tmp_path / "journal.sqlite3", tmp_path / "scheduler.log")
    scheduler.start()
    with App(scheduler.address, timeout=20, result_ttl=3600) as app:
        task = app.task(t.total_of, queue=PARKED)
        tasks = {task.delay([i, i]).id: 2 * i for i in range(30)}
    yield scheduler, tasks
    scheduler.stop()


def refused_to_start(journal: Path) -> str:
    """Start a scheduler on ``journal``: it must exit 2 with one log line; that line."""
    done = celeriac(
        "scheduler", "--port", str(free_port()), "--journal", str(journal), "--no-dashboard"
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, done.stderr
    assert f"journal {journal} is damaged: " in errors[0]
    return errors[0]


def checked(journal: Path) -> str:
    done = celeriac("journal", "check", str(journal))
    assert done.returncode == 1, done.stdout + done.stderr
    return done.stdout


def salvaged(journal: Path, new: Path, status: int = 1) -> str:
    done = celeriac("journal", "salvage", str(journal), str(new))
    assert done.returncode == status, done.stdout + done.stderr
    assert celeriac("journal", "check", str(new)).returncode == 0
    return done.stdout


def results_on(journal: Path, log: Path, ids: list[str]) -> dict[str, Any]:
    """Start a scheduler on ``journal`` and a worker for the parked tasks; each id's result
    (its status instead, for one that is not known)."""
    scheduler = Scheduler(journal, log)
    scheduler.start()
    scheduler.start_worker(PARKED)
    try:
        with App(scheduler.address, timeout=20) as app:
            out: dict[str, Any] = {}
            for task_id in ids:
                result = app.AsyncResult(task_id)
                status = result.status
                out[task_id] = result.get(timeout=60) if status != "UNKNOWN" else status
            return out
    finally:
        scheduler.stop()


@pytest.mark.timeout(120)
def test_a_journal_is_checked_sound_while_its_scheduler_runs(
    written: tuple[Scheduler, dict[str, int]],
) -> None:
    scheduler, _ = written
    done = celeriac("journal", "check", str(scheduler.journal))
    assert done.returncode == 0, done.stdout
    assert f"{scheduler.journal}: sound (format 2" in done.stdout
    assert "30 tasks, 0 revocations, 0 periodic jobs" in done.stdout
    scheduler.terminate()  # a clean stop leaves a sound journal too
    assert celeriac("journal", "check", str(scheduler.journal)).returncode == 0


@pytest.mark.timeout(120)
def test_a_deleted_wal_after_a_crash_is_refused_not_silently_emptied(
    written: tuple[Scheduler, dict[str, int]], tmp_path: Path
) -> None:
    scheduler, tasks = written
    scheduler.kill()  # the 30 commits are in the -wal only
    Path(f"{scheduler.journal}-wal").unlink()
    line = refused_to_start(scheduler.journal)
    assert f"the last {len(tasks)} commits are missing" in line and "-wal" in line
    assert "commits are missing" in checked(scheduler.journal)
    # what the file itself holds is saved, and the loss said, not hidden
    report = salvaged(scheduler.journal, tmp_path / "new.sqlite3")
    assert "0 tasks" in report and "commits are missing" in report


@pytest.mark.timeout(120)
def test_a_journal_truncated_to_0_bytes_is_refused(
    written: tuple[Scheduler, dict[str, int]],
) -> None:
    scheduler, _ = written
    scheduler.kill()
    os.truncate(scheduler.journal, 0)
    line = refused_to_start(scheduler.journal)
    assert "is empty (0 bytes), but" in line and ".seq records" in line
    assert "is empty (0 bytes)" in checked(scheduler.journal)


@pytest.mark.timeout(120)
def test_a_journal_truncated_to_half_is_refused_and_salvaged(
    written: tuple[Scheduler, dict[str, int]], tmp_path: Path
) -> None:
    scheduler, tasks = written
    scheduler.terminate()  # checkpointed: everything is in the file itself
    os.truncate(scheduler.journal, scheduler.journal.stat().st_size // 2)
    line = refused_to_start(scheduler.journal)
    assert "quick_check" in line or "cannot be read" in line
    checked(scheduler.journal)
    salvaged(scheduler.journal, tmp_path / "new.sqlite3")
    results = results_on(tmp_path / "new.sqlite3", tmp_path / "new.log", list(tasks))
    # what salvage kept ran and is right; whatever it lost is unknown, never wrong
    assert all(results[i] in (tasks[i], "UNKNOWN") for i in tasks)


@pytest.mark.timeout(120)
def test_a_flipped_bit_in_a_record_is_refused_and_salvage_keeps_the_rest(
    written: tuple[Scheduler, dict[str, int]], tmp_path: Path
) -> None:
    scheduler, tasks = written
    scheduler.terminate()
    victim = list(tasks)[17]
    data = bytearray(scheduler.journal.read_bytes())
    # inside its record: the key as a msgpack string (str 8: 0xd9, length)
    where = data.index(bytes([0xD9, len(victim)]) + victim.encode())
    data[where + len(victim)] ^= 0x01
    scheduler.journal.write_bytes(bytes(data))
    line = refused_to_start(scheduler.journal)
    assert f"task record '{victim}' fails its checksum" in line
    assert f"task record '{victim}' fails its checksum" in checked(scheduler.journal)
    new = tmp_path / "new.sqlite3"
    report = salvaged(scheduler.journal, new)
    assert "29 tasks" in report and f"task record '{victim}' fails its checksum" in report
    results = results_on(new, tmp_path / "new.log", list(tasks))
    assert results == {i: "UNKNOWN" if i == victim else r for i, r in tasks.items()}


@pytest.mark.timeout(300)
def test_bit_flips_anywhere_in_the_file_are_refused_by_name_or_harmless(
    written: tuple[Scheduler, dict[str, int]], tmp_path: Path
) -> None:
    """M8's experiment again: single-bit flips at random places of a stopped journal."""
    scheduler, tasks = written
    scheduler.terminate()
    original = scheduler.journal.read_bytes()
    rng = random.Random(14)
    outcomes = []
    for trial in range(6):
        case = tmp_path / f"flip{trial}"
        case.mkdir()
        journal = case / "journal.sqlite3"
        data = bytearray(original)
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        journal.write_bytes(bytes(data))
        shutil.copy(f"{scheduler.journal}.seq", f"{journal}.seq")
        if celeriac("journal", "check", str(journal)).returncode == 1:
            refused_to_start(journal)
            outcomes.append("refused")
        else:  # a flip in free space: everything is there, and right
            assert results_on(journal, case / "log", list(tasks)) == tasks
            outcomes.append("harmless")
    print("flips:", outcomes)
