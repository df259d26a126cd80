"""The systemd units in scheduler/ and worker/ run commands the real CLI accepts."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support.units import INSTANCE, ROOT, UNITS, parse_unit, specifiers


def repo_file(path: str, unit: Path) -> Path:
    """/etc/celeriac/NAME as shipped next to the unit in this repository."""
    assert path.startswith("/etc/celeriac/"), path
    return unit.parent / path.removeprefix("/etc/celeriac/")


def read_env_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip().strip("\"'")
    return env


def unit_environment(service: list[tuple[str, str]], unit: Path, state: Path) -> dict[str, str]:
    env = {}
    for key, value in service:
        value = specifiers(value, state)
        if key == "Environment":
            for assignment in shlex.split(value):
                name, _, val = assignment.partition("=")
                env[name] = val
        elif key == "EnvironmentFile":
            optional = value.startswith("-")
            path = repo_file(value.lstrip("-"), unit)
            if path.exists():
                env.update(read_env_file(path))
            else:
                assert optional, f"{unit.name}: {value} is required but not in the repository"
    return env


def command(value: str, unit: Path, state: Path) -> list[str]:
    """An Exec line as run here: no /usr/bin/env, the repository's config files, --check."""
    argv = shlex.split(specifiers(value.lstrip("-@:+!"), state))
    if argv[0] == "/usr/bin/env":
        argv = argv[1:]
    assert argv[0] == "celeriac", argv
    argv = [sys.executable, "-m", "celeriac", *argv[1:]]
    argv = [str(repo_file(a, unit)) if a.startswith("/etc/celeriac/") else a for a in argv]
    if "--check" not in argv:
        argv.append("--check")
    return argv


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_exec_lines_are_accepted_by_the_cli(unit: Path, tmp_path: Path) -> None:
    service = parse_unit(unit)["Service"]
    execs = [value for key, value in service if key in ("ExecStart", "ExecStartPre")]
    assert any(key == "ExecStart" for key, _ in service)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELERIAC_")}
    env.update(unit_environment(service, unit, tmp_path / "state"))
    for line in execs:
        argv = command(line, unit, tmp_path / "state")
        result = subprocess.run(
            argv, capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path
        )
        assert result.returncode == 0, f"{line}\n{result.stdout}\n{result.stderr}"
        assert "configuration OK" in result.stderr
        assert "/etc/celeriac/" not in result.stdout
        # the example config is what got used, not the defaults
        assert f"# config file: {unit.parent}" in result.stdout
    assert not (tmp_path / "state").exists()  # --check created nothing


def test_example_configs_use_only_known_keys(tmp_path: Path) -> None:
    """Every example file, commented-out keys included, is a valid configuration."""
    for example in (ROOT / "scheduler" / "scheduler.toml", ROOT / "worker" / "worker.toml"):
        text = re.sub(r"^# ?(\w[\w-]* = )", r"\1", example.read_text(), flags=re.M)
        text = text.replace("no-dashboard = true", "")  # excludes dashboard-port, shown set
        text = text.replace('journal = "', 'journal = "' + str(tmp_path))
        uncommented = tmp_path / example.name
        uncommented.write_text(text)
        section = example.stem
        result = subprocess.run(
            [sys.executable, "-m", "celeriac", section, "--config", str(uncommented), "--check"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        # Files named in the commented examples (keys, schedule, modules) need not exist
        # here; what matters is that no key or value is refused by the parser.
        assert "celeriac: error" not in result.stderr, result.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not found")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    paths = []
    for unit in UNITS:
        copy = tmp_path / unit.name
        shutil.copy(unit, copy)
        if "@." in unit.name:  # a template is verified through an instance
            instance = tmp_path / unit.name.replace("@.", f"@{INSTANCE}.")
            instance.symlink_to(copy)
            paths.append(instance)
        else:
            paths.append(copy)
    result = subprocess.run(
        ["systemd-analyze", "verify", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    output = result.stdout + result.stderr
    ours = [line for line in output.splitlines() if "celeriac" in line]
    if result.returncode != 0 and not ours and "Failed to" in output:
        pytest.skip(f"systemd-analyze cannot run here: {output.strip()[:200]}")
    assert result.returncode == 0 and not ours, output
