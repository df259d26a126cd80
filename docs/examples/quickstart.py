"""Celeriac in one page: run with ``python docs/examples/quickstart.py``.

With no address, ``Client()`` starts a scheduler and one worker process per
CPU on this machine, and stops them when the ``with`` block ends.
"""

from __future__ import annotations

import time

from celeriac import Client, as_completed


def inc(x: int) -> int:
    return x + 1


def add(a: int, b: int) -> int:
    return a + b


def main() -> None:
    started = time.perf_counter()
    with Client() as client:
        x = client.submit(inc, 1)
        y = client.submit(add, x, 10)  # a future as an argument is a dependency
        print(f"add(inc(1), 10) = {y.result(timeout=10)}")

        futures = client.map(inc, range(10_000))
        results = client.gather(futures)
        assert results == list(range(1, 10_001))
        print(f"10,000 tasks gathered, sum = {sum(results)}")

        level = client.map(inc, range(1024))
        while len(level) > 1:  # a tree reduction built from futures
            pairs = zip(level[::2], level[1::2], strict=True)
            level = [client.submit(add, a, b) for a, b in pairs]
        print(f"tree reduction of 1,024 leaves = {level[0].result()}")

        first = next(as_completed(client.map(inc, range(10))))
        print(f"first of ten to finish: {first.result()}")
    print(f"done in {time.perf_counter() - started:.2f} s")


if __name__ == "__main__":
    main()
