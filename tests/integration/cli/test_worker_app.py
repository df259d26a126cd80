"""``celeriac worker -A`` that cannot load, run as a user would: it stops at once with the error
and exit 78 (EX_CONFIG), from the supervisor before any worker process starts, or when a worker
process fails to load as it starts; it never restarts processes that would fail the same way."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from celeriac.worker.settings import EX_CONFIG

CELERIAC = [sys.executable, "-m", "celeriac"]
NOWHERE = "tcp://127.0.0.1:9"  # nothing listens: these workers never get to connect


def worker(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CELERIAC, "worker", NOWHERE, *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.timeout(40)
def test_a_module_that_raises_stops_the_worker_with_its_traceback(tmp_path: Path) -> None:
    (tmp_path / "broken_tasks.py").write_text("x = 1\nraise RuntimeError('no database here')\n")
    done = worker(tmp_path, "-c", "2", "-A", "broken_tasks")
    assert done.returncode == EX_CONFIG, done.stderr
    assert "-A broken_tasks: RuntimeError: no database here" in done.stderr
    assert 'broken_tasks.py", line 2, in <module>' in done.stderr  # the user's frame
    assert "started" not in done.stderr  # no worker process was started


@pytest.mark.timeout(40)
def test_a_missing_module_is_one_line_saying_where_it_was_looked_for(tmp_path: Path) -> None:
    done = subprocess.run(
        [*CELERIAC, "-A", "no_such_proj", "worker", NOWHERE],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == EX_CONFIG
    assert "-A no_such_proj: no module named 'no_such_proj' (looked in the current" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.timeout(40)
def test_an_app_whose_include_fails_stops_the_worker(tmp_path: Path) -> None:
    (tmp_path / "proj_a").mkdir()
    (tmp_path / "proj_a" / "__init__.py").write_text("")
    (tmp_path / "proj_a" / "celery.py").write_text(
        "from celeriac import Celery\napp = Celery('proj', include=['proj_a.gone'])\n"
    )
    done = worker(tmp_path, "-A", "proj_a")
    assert done.returncode == EX_CONFIG
    assert "-A proj_a: ModuleNotFoundError: No module named 'proj_a.gone'" in done.stderr


@pytest.mark.timeout(40)
def test_a_worker_process_that_cannot_load_stops_the_supervisor_instead_of_a_restart_loop(
    tmp_path: Path,
) -> None:
    # Loads in the supervisor (the first import writes the marker), fails in every worker
    # process after it: what a module that depends on its process would do.
    (tmp_path / "flaky_tasks.py").write_text(
        "import pathlib\n"
        "marker = pathlib.Path(__file__).with_name('imported-once')\n"
        "if marker.exists():\n"
        "    raise RuntimeError('fails in a worker process')\n"
        "marker.touch()\n"
    )
    done = worker(tmp_path, "-A", "flaky_tasks")
    assert done.returncode == EX_CONFIG, done.stderr
    assert "RuntimeError: fails in a worker process" in done.stderr
    assert "cannot load its -A modules; exiting 78" in done.stderr
    assert "stopping the worker instead of restarting it" in done.stderr
    assert "restarting in" not in done.stderr
    assert done.stderr.count("RuntimeError: fails in a worker process") == 1  # started once
