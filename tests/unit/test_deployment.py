"""The systemd units in scheduler/ and worker/ run commands the real CLI accepts."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNITS = [
    ROOT / "scheduler" / "celeriac-scheduler.service",
    ROOT / "worker" / "celeriac-worker@.service",
]
INSTANCE = "default"
HOST = "testhost"


def parse_unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Sections of a unit file as lists of (key, value): keys like Environment repeat."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"{path}: {line!r} outside a section"
        key, _, value = line.partition("=")
        current.append((key.strip(), value.strip()))
    return sections


def specifiers(value: str, state: Path) -> str:
    """The systemd specifiers these units use (systemd.unit(5))."""
    table = {"i": INSTANCE, "I": INSTANCE, "H": HOST, "S": str(state), "%": "%"}

    def replace(match: re.Match[str]) -> str:
        assert match[1] in table, f"unexpected specifier %{match[1]}"
        return table[match[1]]

    return re.sub(r"%(.)", replace, value)


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_units_have_the_operational_settings(unit: Path) -> None:
    service = dict(parse_unit(unit)["Service"])
    assert service["Type"] == "simple"
    assert service["Restart"] == "on-failure"
    assert service["KillSignal"] == "SIGTERM"
    assert service["User"] == "celeriac"
    if "worker" in unit.name:  # time for running tasks: above the default --stop-timeout
        assert int(service["TimeoutStopSec"]) > 30
    assert service["KillMode"] == "mixed"
    assert service["NoNewPrivileges"] == "yes" and service["ProtectSystem"] == "strict"
    assert "--config /etc/celeriac/" in service["ExecStart"]


def test_log_lines_written_during_a_task_name_it() -> None:
    import logging

    from celeriac.context import TaskRequest, set_request
    from celeriac.logs import FORMAT, TaskContextFilter

    formatter = logging.Formatter(FORMAT)
    task_filter = TaskContextFilter()

    def line(message: str) -> str:
        record = logging.LogRecord("myapp", logging.INFO, __file__, 1, message, None, None)
        task_filter.filter(record)
        return formatter.format(record)

    assert line("outside").endswith(f"INFO    myapp[{os.getpid()}]: outside")
    set_request(TaskRequest("resize-7f3a", "tasks.resize", 0))
    try:
        assert line("inside").endswith(f"myapp[{os.getpid()}] [tasks.resize resize-7f3a]: inside")
    finally:
        set_request(None)
