"""A journal written by release 0.1.0 (before the package layout changed) still restores.

``data/journal-0.1.0.sqlite3`` was written by ``data/make_journal_0_1_0.py`` at
that release: its payloads name the old module paths (``celeriac.app``,
``celeriac.refs``), which ``celeriac._moved`` maps to where the code lives now.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from celeriac import App, TaskRevokedError

DATA = Path(__file__).parent / "data"
IDS = json.loads((DATA / "journal-0.1.0.json").read_text())


@pytest.fixture
def address(tmp_path: Path) -> Iterator[str]:
    """A scheduler restored from a copy of the old journal, with one worker process."""
    journal = tmp_path / "journal.sqlite3"
    shutil.copy(DATA / "journal-0.1.0.sqlite3", journal)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    celeriac = [sys.executable, "-m", "celeriac"]
    address = f"tcp://127.0.0.1:{port}"
    scheduler = subprocess.Popen(
        [*celeriac, "scheduler", f"--port={port}", f"--journal={journal}", "--dashboard-port=0"]
    )
    worker = subprocess.Popen([*celeriac, "worker", address, "--nprocs", "1"])
    yield address
    for process in (worker, scheduler):
        process.send_signal(signal.SIGTERM)
        process.wait(30)


@pytest.mark.timeout(60)
def test_old_journal_restores_results_queued_work_and_jobs(address: str) -> None:
    with App(address, timeout=20) as app:
        assert app.AsyncResult(IDS["ok"]).get(timeout=20) == 42
        with pytest.raises(ValueError, match="old-release"):
            app.AsyncResult(IDS["bad"]).get(timeout=20)
        assert app.AsyncResult(IDS["bound"]).get(timeout=20) == [IDS["bound"], 7]
        # queued before the restart; its argument is a celeriac.refs.TaskRef of 0.1.0
        assert app.AsyncResult(IDS["chain"]).get(timeout=20) == 20
        with pytest.raises(TaskRevokedError):
            app.AsyncResult(IDS["revoked"]).get(timeout=20)
        jobs = {job["name"]: job for job in app.client.periodic()}
        assert IDS["job"] in jobs
