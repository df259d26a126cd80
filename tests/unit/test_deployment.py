"""The systemd units in scheduler/ and worker/ run commands the real CLI accepts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from support.units import UNITS, parse_unit


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
