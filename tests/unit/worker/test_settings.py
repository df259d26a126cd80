"""What a worker process is handed: the supervisor's settings and its own, round-tripped."""

from __future__ import annotations

import sys

import pytest

from celeriac.options import BadValue
from celeriac.worker.settings import (
    ChildSettings,
    WorkerSettings,
    child_command,
    memory_size,
    read_child_command,
)

EVERYTHING = WorkerSettings(
    log_level="DEBUG",
    address="ipc:///run/celeriac/s.sock",
    nprocs=3,
    nthreads=4,
    queues=("default", "emails"),
    name="web",
    imports=("json", "os.path"),
    keys="/etc/celeriac/keys",
    max_tasks_per_child=100,
    max_memory_per_child=1 << 30,
    stop_timeout=2.5,
)


@pytest.mark.parametrize("settings", [WorkerSettings(), EVERYTHING], ids=["defaults", "all-set"])
def test_the_child_gets_the_same_settings(settings: WorkerSettings) -> None:
    child = ChildSettings(b"\x00\xffid", control_fd=7, index=2, parent_pid=1234)
    command = child_command(settings, child)
    assert command[:3] == [sys.executable, "-m", "celeriac.worker"]
    assert read_child_command(command[3:]) == (settings, child)


def test_a_child_without_its_own_settings_gets_the_defaults() -> None:
    assert read_child_command(child_command(EVERYTHING)[3:]) == (EVERYTHING, ChildSettings())


@pytest.mark.parametrize(
    "argv",
    [[], ["{}", "{}", "{}"], ["not json"], ['{"nprocs": 2, "nproc": 3}'], ["{}", '{"x": 1}']],
)
def test_garbled_arguments_are_a_value_error(argv: list[str]) -> None:
    with pytest.raises(ValueError):
        read_child_command(argv)


@pytest.mark.parametrize(
    ("prefix", "index", "name"),
    [("web", 2, "web-2"), ("web", None, "web"), (None, 2, None), ("", 0, "")],
)
def test_a_process_is_named_after_the_prefix_and_its_index(
    prefix: str | None, index: int | None, name: str | None
) -> None:
    assert ChildSettings(index=index).name(WorkerSettings(name=prefix)) == name


@pytest.mark.parametrize(
    ("text", "size"),
    [("1024", 1024), ("500MB", 500 << 20), ("500mib", 500 << 20), ("2G", 2 << 30),
     ("1.5 KB", 1536), (" 3 M ", 3 << 20)],
)  # fmt: skip
def test_memory_sizes_are_binary_units(text: str, size: int) -> None:
    assert memory_size(text) == size


@pytest.mark.parametrize("text", ["lots", "5TB", "-1MB", ""])
def test_a_bad_memory_size_says_what_it_expects(text: str) -> None:
    with pytest.raises(BadValue, match="is not a size like 500MB or 2GB"):
        memory_size(text)
