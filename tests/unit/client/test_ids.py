"""Task ids: 128 random bits each, nothing shared between them, none a forked child repeats.

A task id is a capability (whoever knows it may ask for its result), so an id
must tell nothing about the others: issue 13 M3 read 5 of 5 of a victim's
other results from one failure id when ids were a per-process prefix plus a
counter.
"""

from __future__ import annotations

import os
import re
import threading

from celeriac.client import forks
from celeriac.client.client import Client
from celeriac.client.forks import BATCH, RandomIds

KEY = re.compile(r"inc-([0-9a-f]{32})")


def keys(n: int) -> list[str]:
    """``n`` keys from ``Client.new_key``, on a client that never connected."""
    client = Client.__new__(Client)  # new_key needs no connection, only the pid it was made in
    client._pid = forks.process.pid
    return [client.new_key("inc") for _ in range(n)]


def test_keys_are_the_name_and_32_hex_digits() -> None:
    for key in keys(100):
        assert KEY.fullmatch(key), key


def test_ten_thousand_keys_share_nothing() -> None:
    drawn = keys(10_000)
    randoms = [KEY.fullmatch(key)[1] for key in drawn]  # type: ignore[index]
    assert len(set(drawn)) == 10_000
    # No common prefix (the old ids shared 16 hex digits) and no counter at the end:
    # with 128 random bits, 10,000 ids collide in their first or last 8 digits
    # (32 bits) with probability about 1 in 86.
    assert len({r[:8] for r in randoms}) >= 9_990
    assert len({r[-8:] for r in randoms}) >= 9_990
    # every bit is a coin: 1.28 million of them, the share of ones within 5 sigma
    ones = sum(bin(int(r, 16)).count("1") for r in randoms)
    assert abs(ones / (128 * 10_000) - 0.5) < 5 * 0.5 / (128 * 10_000) ** 0.5


def test_threads_never_draw_the_same_id() -> None:
    ids = RandomIds()
    drawn: list[list[str]] = [[] for _ in range(8)]

    def draw(into: list[str]) -> None:
        for _ in range(3 * BATCH):  # every thread crosses a few batch refills
            into.append(ids.draw())

    threads = [threading.Thread(target=draw, args=(into,)) for into in drawn]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [i for into in drawn for i in into]
    assert len(set(everything)) == len(everything) == 8 * 3 * BATCH


def test_a_forked_child_never_draws_its_parents_ids() -> None:
    ids = RandomIds()
    ids.draw()  # the batch is filled: the child inherits 1,023 ids the parent has not used
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: send 100 ids, leave at once
        try:
            os.write(writer, "".join(ids.draw() for _ in range(100)).encode())
        finally:
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader) as pipe:
        text = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    child = {text[i : i + 32] for i in range(0, len(text), 32)}
    parent = {ids.draw() for _ in range(100)}
    assert len(child) == 100 and not child & parent
