"""The README's two commands: the quickstart runs on the embedded default, and CI runs
exactly the README's test command."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def readme_commands() -> list[str]:
    """The one-line shell blocks of the README, in order."""
    return re.findall(r"```(?:sh|bash|console)?\n([^\n`]+)\n```", README)


def test_readme_names_an_install_and_run_command_and_a_test_command() -> None:
    commands = readme_commands()
    assert "pip install -e . && python docs/examples/quickstart.py" in commands
    assert "bash scripts/test" in commands


def test_ci_runs_exactly_the_readme_test_command() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[-1] == "bash scripts/test"
