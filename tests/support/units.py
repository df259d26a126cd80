"""The systemd units in scheduler/ and worker/, read as systemd would."""

from __future__ import annotations

import re
from pathlib import Path

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
