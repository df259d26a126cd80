"""Configuration: TOML file, CELERIAC_* variables and flags, in that order of strength."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

CELERIAC = [sys.executable, "-m", "celeriac"]


def write(tmp_path: Path, text: str, name: str = "celeriac.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    environ = {k: v for k, v in os.environ.items() if not k.startswith("CELERIAC_")}
    environ.update(env or {})
    return subprocess.run(
        [*CELERIAC, *args], capture_output=True, text=True, timeout=30, env=environ
    )


# -- precedence: flag > environment > file > default ------------------------------------------


# -- the real command line -------------------------------------------------------------------


def test_config_on_every_command(tmp_path: Path) -> None:
    """Every command accepts --config and refuses a bad file before doing anything."""
    bad = write(tmp_path, "[worker]\nnproc = 2\n", "bad.toml")
    commands = [
        ["scheduler", "--check"],
        ["worker", "--check"],
        ["periodic", "list"],
        ["inspect"],
        ["status"],
        ["keys", "create", str(tmp_path / "keys")],
    ]
    for command in commands:
        result = run(*command, "--config", bad)
        assert result.returncode == 2, (command, result.stderr)
        assert "unknown key 'nproc' in section [worker]" in result.stderr, command
    assert not (tmp_path / "keys").exists()

    good = write(
        tmp_path,
        """
        [scheduler]
        port = 0
        worker-timeout = 3.0
        [worker]
        address = "tcp://127.0.0.1:1"
        nprocs = 3
        [client]
        address = "tcp://127.0.0.1:1"
        timeout = 0.2
        """.replace("        ", ""),
    )
    result = run("scheduler", "--check", "--config", good)
    assert result.returncode == 0, result.stderr
    # keys are padded to the longest key of the command, values to 30 characters
    line = rf"^worker-timeout + = 3\.0 {{28}}# {re.escape(good)} \[scheduler\] worker-timeout$"
    assert re.search(line, result.stdout, re.M), result.stdout
    result = run("worker", "--check", "--config", good, env={"CELERIAC_NPROCS": "5"})
    assert result.returncode == 0, result.stderr
    assert "CELERIAC_NPROCS" in result.stdout and "nprocs               = 5" in result.stdout
    for command in (["periodic", "list"], ["inspect"]):  # the [client] address is used
        result = run(*command, "--config", good)
        assert result.returncode != 0
        assert "tcp://127.0.0.1:1 within 0.2 s" in result.stderr, result.stderr
    result = run("keys", "create", str(tmp_path / "keys"), "--config", good)
    assert result.returncode == 0, result.stderr


def test_check_reports_problems_without_starting(tmp_path: Path) -> None:
    schedule = write(tmp_path, "[[job]]\nname = 1\n", "jobs.toml")
    result = run(
        "scheduler", "--check", "--host", "0.0.0.0", "--port", "70000", "--schedule", schedule,
        "--keys", str(tmp_path / "nokeys"), "--heartbeat-interval", "9",
    )  # fmt: skip
    assert result.returncode == 2
    for message in (
        "--port 70000 is out of range",
        "nokeys is not a directory",
        "--schedule:",
        "--heartbeat-interval must be shorter than --worker-timeout",
    ):
        assert message in result.stderr, message
    result = run("scheduler", "--check", "--busy-poll", "inf")
    assert result.returncode == 2 and "--busy-poll: must be 0 to 0.01 s, not inf" in result.stderr
    result = run("scheduler", "--check", "--host", "0.0.0.0", "--port", "0")
    assert result.returncode == 2 and "--insecure" in result.stderr
    result = run("worker", "--check", "http://x", "--nprocs", "0", "-A", "no_such_module_here")
    assert result.returncode == 2
    for message in ("use tcp:// or ipc://", "--nprocs must be positive", "no such module"):
        assert message in result.stderr, message


def test_check_validates_the_journal_directory(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    journal = str(tmp_path / "state" / "j.sqlite3")
    result = run("scheduler", "--check", "--journal", journal)
    assert result.returncode == 0, result.stderr
    assert f"# journal file: {journal}" in result.stdout
    assert not (tmp_path / "state").exists()  # nothing created
    result = run("scheduler", "--check", "--journal", str(blocker / "j.sqlite3"))
    assert result.returncode == 2 and "cannot create it" in result.stderr


def test_check_validates_the_unix_socket_path(tmp_path: Path) -> None:
    assert run("scheduler", "--check", "--ipc", str(tmp_path / "s.sock")).returncode == 0
    result = run("scheduler", "--check", "--ipc", str(tmp_path / "missing" / "s.sock"))
    assert result.returncode == 2 and "--ipc: cannot create" in result.stderr
    result = run("scheduler", "--check", "--ipc", "/" + "x" * 120)
    assert result.returncode == 2 and "longer than 107 bytes" in result.stderr
    result = run("scheduler", "--check", "--ipc", str(tmp_path))
    assert result.returncode == 2 and "exists and is not a socket" in result.stderr
