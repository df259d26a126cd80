"""An open client as Dask's default scheduler, the way ``distributed.Client`` becomes one.

Dask's ``get_scheduler`` uses the ``scheduler`` config value when it is set,
and calls it when it is callable: a client's bound ``get`` is such a value, so
``x.compute()`` runs on the client without patching Dask, and ``dask.persist``
finds the client behind it (``get.__self__``) and calls its ``persist``.
Clients stack: the one opened last is the default, and closing any of them
(in any order) leaves the config as if it had never been opened.

Imports dask only when dask is installed and a client asks to be the default.
"""

from __future__ import annotations

import importlib.util
import threading
from typing import Any

#: (client, the config value it replaced), oldest first.
_stack: list[tuple[Any, Any]] = []
_lock = threading.Lock()


def become_default(client: Any) -> bool:
    """Make ``client.get`` Dask's default scheduler; False when dask is not installed.

    Parameters:
        client: a client with ``get``; :func:`stop_being_default` undoes this.
    """
    if importlib.util.find_spec("dask") is None:
        return False
    import dask.config

    with _lock:
        _stack.append((client, dask.config.get("scheduler", None)))
        dask.config.set(scheduler=client.get)
    return True


def stop_being_default(client: Any) -> None:
    """Undo :func:`become_default` for ``client`` (once it closes).

    The config goes back to what it was before this client, or to the client
    opened before it that is still open; a value someone set since is left alone.

    Parameters:
        client: a client :func:`become_default` was called for.
    """
    import dask.config

    with _lock:
        place = next((i for i, (c, _) in enumerate(_stack) if c is client), None)
        if place is None:
            return
        _, replaced = _stack.pop(place)
        if place < len(_stack):  # the client opened after it now replaces what it replaced
            above, _ = _stack[place]
            _stack[place] = (above, replaced)
            return
        if getattr(dask.config.get("scheduler", None), "__self__", None) is client:
            dask.config.set(scheduler=replaced)
