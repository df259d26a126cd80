"""The package's layers: every import inside ``celeriac`` points down, never up or sideways.

Walks each module's syntax tree, so imports inside functions and under
``TYPE_CHECKING`` count too: a cycle hidden behind either is still a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import celeriac

SOURCE = Path(celeriac.__file__).parent

#: Each unit's rank; a module may import its own unit or a unit of lower rank.
#: Equal ranks are peers that must not know each other (scheduler and worker).
RANK = {
    "celeriac.errors": 0,
    "celeriac.context": 0,
    "celeriac.schedules": 0,
    "celeriac.states": 0,
    "celeriac.options": 0,
    "celeriac.parent": 0,
    "celeriac._moved": 0,
    "celeriac.logs": 1,
    "celeriac.wire": 2,
    "celeriac.scheduler": 3,
    "celeriac.worker": 3,
    "celeriac.client": 4,
    "celeriac.tasks": 5,
    "celeriac.cli": 6,
    "celeriac.testing": 6,
    "celeriac": 7,  # the public namespace (__init__) and __main__
    "celeriac.__main__": 7,
}


def unit(module: str) -> str:
    """``celeriac.wire.protocol`` -> ``celeriac.wire``; ``celeriac.errors`` stays."""
    parts = module.split(".")
    for length in (2, 1):
        candidate = ".".join(parts[:length])
        if candidate in RANK:
            return candidate
    raise AssertionError(f"{module} belongs to no layer: add it to RANK and the architecture map")


def module_name(path: Path) -> str:
    relative = path.relative_to(SOURCE.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, module) for every import of a celeriac module in ``tree``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "celeriac":  # `from celeriac import x`: x may be a module
                found += [(node.lineno, f"celeriac.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, node.module))
    return [(line, name) for line, name in found if name.split(".")[0] == "celeriac"]


def target_unit(name: str) -> str:
    """The unit an import reaches; a name the package re-exports is the public namespace."""
    try:
        return unit(name)
    except AssertionError:
        return "celeriac"  # e.g. `from celeriac import Client`: the top of the tree


MODULES = sorted(SOURCE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_imports_point_down(path: Path) -> None:
    source = module_name(path)
    own = unit(source)
    upward = []
    for line, name in imported(ast.parse(path.read_text(), str(path))):
        target = target_unit(name)
        if target != own and RANK[target] >= RANK[own]:
            upward.append(f"{path.name}:{line} imports {name} ({own} -> {target})")
    assert not upward, "imports that do not point down a layer:\n" + "\n".join(upward)


def test_checker_catches_an_upward_import(tmp_path: Path) -> None:
    tree = ast.parse("def f():\n    from celeriac.client.client import Client\n")
    ((line, name),) = imported(tree)
    assert (line, target_unit(name)) == (2, "celeriac.client")
    assert RANK[target_unit(name)] > RANK[unit("celeriac.wire.protocol")]
    assert target_unit("celeriac.Client") == "celeriac"
