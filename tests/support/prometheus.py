"""Reading the Prometheus text format the dashboard serves."""

from __future__ import annotations

import re


def samples(text: str) -> dict[str, float]:
    """Prometheus text format as {'name{labels}': value}, checking every line's shape."""
    values, helped, typed = {}, set(), set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            helped.add(line.split()[2])
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            assert kind in ("counter", "gauge"), line
            typed.add(name)
        else:
            match = re.fullmatch(r'([a-z_]+)(\{[a-z_]+="(?:[^"\\]|\\.)*"\})? (\S+)', line)
            assert match, f"not a sample line: {line!r}"
            assert match[1] in typed and match[1] in helped, f"no HELP/TYPE before {line!r}"
            values[match[1] + (match[2] or "")] = float(match[3])
    return values
