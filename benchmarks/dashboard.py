"""Does the dashboard slow the task path?  Submit + gather with it off, on, and polled.

    python benchmarks/dashboard.py [--tasks 10000] [--repeat 3]

Three embedded clusters (2 worker processes each): ``--no-dashboard``; the
dashboard on but unread; the dashboard on with a browser-like poller fetching
``/api/status`` and ``/metrics`` every 100 ms (ten times what the page does).
Prints tasks/s medians and each as a share of dashboard-off.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
import urllib.request

from celeriac import Client, LocalCluster


def inc(x: int) -> int:
    return x + 1


def poll(link: str, stop: threading.Event) -> None:
    """Fetch the API and the metrics every 100 ms, with the token in the printed ``link``."""
    url, token = link.split("/?token=")
    headers = {"Authorization": f"Bearer {token}"}
    while not stop.wait(0.1):
        for path in ("/api/status", "/metrics"):
            request = urllib.request.Request(url + path, headers=headers)
            with urllib.request.urlopen(request, timeout=5) as response:
                response.read()


def measure(scheduler_args: tuple[str, ...], polled: bool, tasks: int, repeat: int) -> float:
    with LocalCluster(2, scheduler_args=scheduler_args) as cluster, Client(cluster.address) as c:
        c.wait_for_workers(2)
        c.gather(c.map(inc, range(1000)))  # warm up
        stop = threading.Event()
        if polled:
            assert cluster.dashboard_address is not None
            threading.Thread(target=poll, args=(cluster.dashboard_address, stop)).start()
        rates = []
        try:
            for _ in range(repeat):
                started = time.perf_counter()
                c.gather(c.map(inc, range(tasks)))
                rates.append(tasks / (time.perf_counter() - started))
        finally:
            stop.set()
        return statistics.median(rates)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    modes = {
        "dashboard off": (("--no-dashboard",), False),
        "dashboard on, unread": ((), False),
        "dashboard on, polled 10/s": ((), True),
    }
    results = {
        name: measure(sa, polled, args.tasks, args.repeat) for name, (sa, polled) in modes.items()
    }
    base = results["dashboard off"]
    for name, rate in results.items():
        print(f"{name:28} {rate:9,.0f} tasks/s  {rate / base:6.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
