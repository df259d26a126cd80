"""``Client.scatter``: data put on workers directly, as futures.  The shapes and keys (pure).

Between hosts the client puts each value straight into a worker's result store
(``put-data`` to its data server), then tells the scheduler where it is
(``scattered``): the bytes never cross the scheduler.  On one host (no worker
serves results: they share ``/dev/shm``) a value travels as the argument of a
task that returns it (:func:`identity`), through shared memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from celeriac.wire.protocol import Message, Payload, buffer_of, nbytes
from celeriac.wire.serialize import dumps

if TYPE_CHECKING:
    from celeriac.client.client import Client


def scatter(client: Client, data: Any, hash: bool) -> Any:
    """:meth:`Client.scatter` (which documents it), minus its checks."""
    shape, values = items(data)
    payloads = [dumps(value) for _, value in values]
    keys = [
        key or (content_key(value, payload) if hash else client.new_key(type(value).__name__))
        for (key, value), payload in zip(values, payloads, strict=True)
    ]
    futures = [client._new_future(key) for key in keys]
    workers = client.scheduler_info()["workers"]
    serving = {w["peer"]: w["kept_bytes"] for w in workers if w.get("peer")}
    if not serving:  # one host: as tasks that return it, through shared memory
        for key, (_, value) in zip(keys, values, strict=True):
            client.submit(identity, value, key=key)
        return shaped(shape, keys, futures)
    by_key = dict(zip(keys, payloads, strict=True))
    for address, placed in spread(list(by_key), serving).items():
        client._futures.put(address, {key: by_key[key] for key in placed})
        for key in placed:
            size = sum(nbytes(frame) for frame in by_key[key])
            client._send(Message("scattered", {"key": key, "at": address, "size": size}))
    return shaped(shape, keys, futures)


def identity(value: Any) -> Any:
    """The task a value is scattered through on one host."""
    return value


def items(data: Any) -> tuple[str, list[tuple[str | None, Any]]]:
    """What ``scatter`` was given: its shape (``one``, ``list``, ``tuple``, ``dict``
    or ``set``) and its values, each with the key asked for (a dict's keys) or None."""
    if isinstance(data, dict):
        return "dict", [(str(key), value) for key, value in data.items()]
    for shape, kind in (("list", list), ("tuple", tuple), ("set", set), ("set", frozenset)):
        if isinstance(data, kind):
            return shape, [(None, value) for value in data]
    return "one", [(None, data)]


def content_key(value: Any, payload: Payload) -> str:
    """The key of a value by its content (Dask's ``hash=True``): equal data, one key."""
    digest = hashlib.sha256()
    for frame in payload:
        digest.update(buffer_of(frame))
    return f"{type(value).__name__}-{digest.hexdigest()[:32]}"


def spread(keys: list[str], kept: dict[str, int]) -> dict[str, list[str]]:
    """Which worker (data server address) each key goes to: round robin, starting
    with those keeping the fewest bytes (``kept``: address -> bytes)."""
    order = sorted(kept, key=lambda address: (kept[address], address))
    placement: dict[str, list[str]] = {}
    for i, key in enumerate(keys):
        placement.setdefault(order[i % len(order)], []).append(key)
    return placement


def shaped(shape: str, keys: Iterable[str], futures: list[Any]) -> Any:
    """The futures in the shape the data had (a dict keyed as it was)."""
    if shape == "one":
        return futures[0]
    if shape == "dict":
        return dict(zip(keys, futures, strict=True))
    return tuple(futures) if shape == "tuple" else futures
