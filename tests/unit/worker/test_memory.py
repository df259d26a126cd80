"""A worker's memory: the thresholds as a table, and the spill store on a real directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from celeriac.worker.data import ResultStore, remove_leftover_spills, spill_directory
from celeriac.worker.memory import MemoryAction, auto_limit, decide, over_terminate

MB = 1 << 20


@pytest.mark.parametrize(
    ("rss", "managed", "action"),
    [
        (50 * MB, 40 * MB, MemoryAction()),  # under every threshold
        (69 * MB, 60 * MB, MemoryAction()),  # under spill: the store's own target rules
        (75 * MB, 40 * MB, MemoryAction(spill=15 * MB)),  # back to the 60 MB target
        (75 * MB, 5 * MB, MemoryAction(spill=5 * MB)),  # no more than it keeps
        (85 * MB, 40 * MB, MemoryAction(spill=25 * MB, paused=True)),
    ],
)
def test_what_a_worker_does_at_each_threshold(rss: int, managed: int, action: MemoryAction) -> None:
    assert decide(100 * MB, rss, managed) == action


def test_no_limit_means_no_action_and_no_restart() -> None:
    assert decide(0, 10**12, 10**12) == MemoryAction()
    assert not over_terminate(0, 10**12)
    assert over_terminate(100 * MB, 96 * MB) and not over_terminate(100 * MB, 94 * MB)


def test_the_automatic_limit_shares_the_machine_among_the_processes() -> None:
    one, four = auto_limit(1), auto_limit(4)
    assert one > 0 and abs(four - one // 4) <= 1


def test_results_past_the_target_spill_least_recently_used_first(tmp_path: Path) -> None:
    store = ResultStore(target=2 * MB, directory=str(tmp_path / "spill"))
    for key in "abc":
        store.put(key, [key.encode() * MB])
    assert store.get("a") is not None  # "a" is now the most recent: "b" went to disk
    assert (store.in_memory, store.spilled) == (2 * MB, MB)
    assert bytes(store.get("b")[0]) == b"b" * MB  # read back from disk  # type: ignore[index]
    assert store.spill(MB) == MB and store.in_memory == MB  # asked to spill: the oldest goes
    store.drop(["a", "b", "c"])
    assert (len(store), store.in_memory, store.spilled) == (0, 0, 0)
    store.close()
    assert list(tmp_path.iterdir()) == []  # the spill directory is gone


def test_a_payload_of_several_frames_comes_back_whole(tmp_path: Path) -> None:
    store = ResultStore(target=0, directory=str(tmp_path / "spill"))
    store.put("k", [b"head", memoryview(b"x" * 1000), b""])
    assert [bytes(f) for f in store.get("k") or []] == [b"head", b"x" * 1000, b""]
    assert store.spilled == 1004
    store.close()


def test_only_spill_directories_of_processes_that_are_gone_are_deleted(tmp_path: Path) -> None:
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead = spill_directory(str(tmp_path), int(gone.stdout), b"\x01" * 16)
    live = spill_directory(str(tmp_path), os.getpid(), b"\x02" * 16)
    other = tmp_path / "celeriac-spill-not-ours"
    for path in (dead, live, str(other)):
        os.makedirs(path)
    assert remove_leftover_spills(str(tmp_path)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [os.path.basename(live), other.name]
    )
