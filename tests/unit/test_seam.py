"""The seam: outside ``celeriac.client``, nothing reaches a private attribute through a client.

The front doors (``celeriac.tasks``) and everything else use the client's public
methods and the :class:`~celeriac.client.engine.Engine` protocol.  This walks
every module's syntax tree and fails on ``client._x``, ``<anything>.client._x``,
``self._client._x`` (and the same through an ``engine``): a private attribute
reached through a client, which is an interface nobody named.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import celeriac

SOURCE = Path(celeriac.__file__).parent
CLIENT_PACKAGE = SOURCE / "client"

#: Names under which code holds a client (or the engine it is seen as).
HOLDERS = frozenset({"client", "_client", "engine", "_engine"})


def private_reaches(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, text) of every private attribute read through a client in ``tree``."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or not _private(node.attr):
            continue
        holder = node.value
        held = (isinstance(holder, ast.Name) and holder.id in HOLDERS) or (
            isinstance(holder, ast.Attribute) and holder.attr in HOLDERS
        )
        if held:
            found.append((node.lineno, ast.unparse(node)))
    return found


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


OUTSIDE = sorted(path for path in SOURCE.rglob("*.py") if CLIENT_PACKAGE not in path.parents)


@pytest.mark.parametrize("path", OUTSIDE, ids=lambda p: str(p.relative_to(SOURCE)))
def test_no_module_outside_the_client_package_reaches_a_client_private(path: Path) -> None:
    reaches = private_reaches(ast.parse(path.read_text(), str(path)))
    assert not reaches, "\n".join(
        f"{path.relative_to(SOURCE.parent)}:{line}: {text} (use the client's public "
        "methods or celeriac.client.engine.Engine)"
        for line, text in reaches
    )


def test_the_walk_covers_the_front_doors() -> None:
    names = {str(p.relative_to(SOURCE)) for p in OUTSIDE}
    assert {"tasks/app.py", "tasks/canvas.py", "tasks/result.py"} <= names
    assert not any(name.startswith("client/") for name in names)


@pytest.mark.parametrize(
    "snippet",
    [
        "client._send(msg)",
        "self.app.client._submit_detached(messages, 1.0)",
        "self._client._wait_until(ready, None)",
        "app.engine._new_key('x')",
        "x = future.client._fire_and_forget",
    ],
)
def test_it_catches_a_private_reached_through_a_client(snippet: str) -> None:
    assert [text for _, text in private_reaches(ast.parse(snippet))] != []


@pytest.mark.parametrize(
    "snippet",
    [
        "self.app.client.status([key])",
        "self._client.close()",
        "self._client = None",
        "client.__class__",
        "result._held",
        "self.app.engine.enqueue(submissions, timeout=1.0)",
    ],
)
def test_it_lets_public_use_and_own_privates_pass(snippet: str) -> None:
    assert private_reaches(ast.parse(snippet)) == []
