"""The data plane "between hosts" on one machine: Celeriac beside Dask (issue 15 item 10).

Run from the repository root, as root (it makes mount namespaces)::

    python benchmarks/data_plane.py                          # full sizes, both peers
    python benchmarks/data_plane.py --quick --peers celeriac # small sizes (smoke test)
    python benchmarks/data_plane.py --celeriac-src /tmp/dp-base/src   # another checkout

Each peer gets a scheduler (in this mount namespace), 2 worker processes x 1
slot and the measuring client, each worker and the client started under
``unshare -m`` with a tmpfs of its own mounted on ``/dev/shm``: no two of them
share shared memory, so every byte travels through a socket, as between hosts.
The client runs this file's driver (``--driver PEER``, internal); the task
functions below travel to the workers by value.  Workloads: scheduler RSS while
1 GB of results is held by futures; one task taking those 40 futures (1 GB
fan-in); a 100 MB result fetched to the client; an all-to-all (10 inputs of 10
pieces, 10 outputs each taking one piece of every input).  The table goes to
stdout, every sample to ``benchmarks/results/data-plane-<time>.json``.  Every
process started is killed at the end (process groups, then what is left of the
process tree), on Ctrl-C and errors too; the namespaces and their tmpfs go
with their last process.  See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import datetime as dt
import functools
import gc
import importlib.metadata
import json
import operator
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS_DIR = HERE / "results"
MB = 1_000_000
MIB = 1 << 20
PEERS = ("celeriac", "dask")
N_WORKERS = 2
THREADS_PER_WORKER = 1
SHM = "/dev/shm"

#: The prefix that gives a command a mount namespace and a /dev/shm of its own.
#: ``exec`` keeps the pid: the Popen's pid is the command's own.
PRIVATE_SHM = [
    "unshare", "-m", "--propagation", "private", "sh", "-c",
    'mount -t tmpfs -o size=8g tmpfs /dev/shm && exec "$@"', "sh",
]  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Sizes:
    held_tasks: int = 40  # results held by futures (workloads 1 and 2)
    held_bytes: int = 25 * MB  # each
    result_bytes: int = 100 * MB  # one result fetched to the client (workload 3)
    a2a_inputs: int = 10  # all-to-all: tasks making pieces...
    a2a_outputs: int = 10  # ...one piece per output task
    piece_bytes: int = 10 * MB

    def labels(self) -> dict[str, Any]:
        return {
            "held": self.held_tasks,
            "held_mb": self.held_bytes / MB,
            "held_total": _size(self.held_tasks * self.held_bytes),
            "result_mb": self.result_bytes / MB,
            "inputs": self.a2a_inputs,
            "outputs": self.a2a_outputs,
            "piece_mb": self.piece_bytes / MB,
        }


QUICK = Sizes(held_tasks=8, held_bytes=2 * MB, result_bytes=5 * MB,
              a2a_inputs=4, a2a_outputs=4, piece_bytes=2 * MB)  # fmt: skip


def _size(nbytes: int) -> str:
    return f"{nbytes / 1e9:g} GB" if nbytes >= 1e9 else f"{nbytes / MB:g} MB"


@dataclasses.dataclass(frozen=True)
class Row:
    """One line of the table.

    ``target`` is absolute (Celeriac's value) or, with ``relative``, a ratio
    Celeriac/Dask to reach (for throughput: at least this many times Dask's).
    """

    label: str
    unit: str
    higher_is_better: bool
    target: float | None = None
    relative: bool = False

    def meets(self, ours: float | None, ratio: float | None) -> bool | None:
        value = ratio if self.relative else ours
        if self.target is None or value is None:
            return None
        return value >= self.target if self.higher_is_better else value <= self.target


#: What the table shows, from the driver's figures (targets: issue 15's table).
ROWS: dict[str, Row] = {
    "rss_idle": Row("scheduler RSS, idle after warm-up", "MiB", False),
    "rss_held": Row("scheduler RSS, {held} x {held_mb:g} MB ({held_total}) held",
                    "MiB", False, 100),
    "rss_released": Row("scheduler RSS, after they are released", "MiB", False),
    "fan_in_first": Row("fan-in {held_total} into one task, first", "MB/s", True),
    "fan_in_best": Row("fan-in {held_total}, best, same futures again", "MB/s", True, 1.2, True),
    "fan_in_fresh_best": Row("fan-in {held_total}, best, fresh results each run", "MB/s", True,
                             1.2, True),
    "to_client_first": Row("{result_mb:g} MB result -> client, first", "MB/s", True),
    "to_client_best": Row("{result_mb:g} MB result -> client, best", "MB/s", True, 1.3, True),
    "to_client_direct_best": Row("{result_mb:g} MB -> client, best, Dask direct-to-workers",
                                 "MB/s", True),
    "a2a_first_s": Row("all-to-all {inputs} x {outputs} x {piece_mb:g} MB, first", "s", False),
    "a2a_best_s": Row("all-to-all {inputs} x {outputs} x {piece_mb:g} MB, best", "s", False),
    "a2a_best": Row("all-to-all {inputs} x {outputs} x {piece_mb:g} MB, best", "MB/s", True,
                    1.2, True),
}  # fmt: skip


# -- the task functions (run on the workers; sent by value from the driver's __main__) ------


def warm_up(i: int) -> int:
    """Import numpy on the worker and hold the slot a moment, so both workers get some."""
    time.sleep(0.05)
    return int(np.ones(8)[0]) + i


def make_array(nbytes: int, value: float) -> np.ndarray:
    return np.full(nbytes // 8, value, dtype=np.float64)


def fan_in(*arrays: np.ndarray) -> tuple[int, float]:
    """Every argument arrived (and was unpickled): their bytes and a checksum."""
    return sum(a.nbytes for a in arrays), float(sum(a[-1] for a in arrays))


def make_pieces(n: int, nbytes: int, row: int) -> tuple[np.ndarray, ...]:
    """Input ``row`` of the all-to-all: piece ``j`` is full of ``row * n + j``."""
    return tuple(np.full(nbytes // 8, float(row * n + j)) for j in range(n))


def combine(*pieces: np.ndarray) -> tuple[int, float]:
    return sum(p.nbytes for p in pieces), float(sum(p[-1] for p in pieces))


# -- the driver (runs in a mount namespace of its own) ---------------------------------------


def memory_of(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak) of a process, in MiB, from /proc/PID/status."""
    found: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                found[name] = int(value.split()[0]) * 1024 / MIB
    return found


def rss_mib(pid: int) -> float:
    return memory_of(pid)["VmRSS"]


def process_table() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, process group, state) of every process now."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue  # gone meanwhile
        fields = stat[stat.rindex(")") + 2 :].split()
        table[int(entry)] = (int(fields[1]), int(fields[2]), fields[0])
    return table


def descendants(roots: list[int], table: dict[int, tuple[int, int, str]] | None = None) -> set[int]:
    """The roots and every process below them."""
    table = process_table() if table is None else table
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: set[int] = set()
    todo = [pid for pid in roots if pid in table]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, []))
    return found


def workers_rss(launchers: list[int]) -> list[float]:
    """RSS (MiB) of every live process under the worker launchers, largest first."""
    values = []
    for pid in descendants(launchers):
        with contextlib.suppress(OSError, KeyError):
            values.append(rss_mib(pid))
    return sorted(values, reverse=True)


def mount_namespace(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


def isolation(scheduler: int, launchers: list[int]) -> dict[str, Any]:
    """The mount namespace of this client, of each worker's processes and of the scheduler.

    Fine when the client and each worker (all its processes) are each in a
    namespace of their own, none of them the scheduler's.
    """
    table = process_table()
    mine = mount_namespace(os.getpid())
    workers = [sorted({ns for pid in descendants([w], table) if (ns := mount_namespace(pid))})
               for w in launchers]  # fmt: skip
    private = [mine, *(w[0] if len(w) == 1 else None for w in workers)]
    theirs = mount_namespace(scheduler)
    ok = None not in private and len(set(private)) == len(private) and theirs not in private
    return {"client": mine, "workers": workers, "scheduler": theirs, "ok": ok}


class Peer:
    """The few calls the workloads need, the same for both clients."""

    def __init__(self, name: str, address: str) -> None:
        self.name = name
        if name == "celeriac":
            import celeriac

            self.client: Any = celeriac.Client(address)
            self.submit: Callable[..., Any] = self.client.submit
            self.wait: Callable[..., Any] = celeriac.wait
            self.version = f"{celeriac.__version__} ({Path(celeriac.__file__).parent})"
        else:
            import logging

            import distributed

            logging.getLogger("distributed").setLevel(logging.WARNING)
            self.client = distributed.Client(address)  # the default: distributed.wait needs one
            # pure=False: a repetition never reuses a key (Dask keys pure calls by arguments)
            self.submit = functools.partial(self.client.submit, pure=False)
            self.wait = distributed.wait
            self.version = distributed.__version__

    def wait_all(self, futures: list[Any], timeout: float) -> None:
        """Until every future is done; TimeoutError past ``timeout`` seconds."""
        try:
            pending = self.wait(futures, timeout=timeout).not_done
        except TimeoutError:  # Dask raises, Celeriac returns what is not done
            pending = [None]
        if pending:
            raise TimeoutError(f"tasks still not done after {timeout:g} s")

    def gather(self, futures: list[Any], timeout: float) -> list[Any]:
        self.wait_all(futures, timeout)
        return list(self.client.gather(futures))

    def close(self) -> None:
        self.client.close()


def placement(peer: Peer, futures: list[Any]) -> list[int] | None:
    """How many of ``futures`` each worker holds (largest first), where the client can tell."""
    try:
        where = peer.client.who_has(futures)
        counts: dict[str, int] = {}
        for workers in where.values():
            for worker in workers:
                counts[str(worker)] = counts.get(str(worker), 0) + 1
    except Exception:  # no who_has (results on the scheduler), or another shape
        return None
    return sorted(counts.values(), reverse=True)


def timed_fan_in(peer: Peer, arrays: list[Any], nbytes: int, timeout: float) -> float:
    """Seconds from submitting one task on ``arrays`` (made by make_array) to its result."""
    start = time.perf_counter()
    outcome = peer.submit(fan_in, *arrays).result(timeout=timeout)
    seconds = time.perf_counter() - start
    expected = (len(arrays) * (nbytes // 8 * 8), float(sum(range(len(arrays)))))
    if tuple(outcome) != expected:
        raise AssertionError(f"fan-in returned {outcome}, expected {expected}")
    return seconds


def settle() -> None:
    """Let released futures reach the scheduler and its memory be returned."""
    gc.collect()
    time.sleep(1.0)


class Driver:
    """The workloads against one peer, one stage after another.

    A stage that fails (or passes ``timeout`` seconds waiting) is recorded in
    ``errors`` and the next one still runs; everything measured is written to
    ``out`` after every stage, so a driver killed on the peer's timeout keeps it.
    """

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.sizes = Sizes(**json.loads(args.sizes_json))
        self.timeout = args.stage_timeout
        self.scheduler, self.launchers = args.scheduler_pid, args.worker_pids
        self.samples: dict[str, list[float]] = {}
        self.details: dict[str, Any] = {}
        self.errors: dict[str, str] = {}
        self.peer: Peer | None = None
        self.kept: list[Any] = []  # the futures of (1), for (2)

    def log(self, text: str) -> None:
        print(f"  [{self.args.driver}] {text}", file=sys.stderr, flush=True)

    def save(self) -> None:
        data = {"samples": self.samples, "details": self.details, "errors": self.errors}
        self.args.driver_out.write_text(json.dumps(data))

    def run(self) -> int:
        stages: list[tuple[str, Callable[[Peer], None]]] = [
            ("held", self.held), ("fan_in", self.fan_in), ("fan_in_fresh", self.fan_in_fresh),
            ("to_client", self.to_client), ("all_to_all", self.all_to_all),
        ]  # fmt: skip
        try:
            here = os.stat(SHM)
            if (here.st_dev, here.st_ino) == tuple(self.args.host_shm):
                raise RuntimeError(
                    "the driver shares /dev/shm with the scheduler: no private tmpfs"
                )
            self.peer = Peer(self.args.driver, self.args.address)
            self.start(self.peer)
        except BaseException:
            self.errors["start"] = traceback.format_exc()
            print(self.errors["start"], file=sys.stderr)
            stages = []
        self.save()
        for name, stage in stages:
            try:
                assert self.peer is not None
                stage(self.peer)
            except Exception:
                self.errors[name] = traceback.format_exc()
                self.log(f"{name} FAILED: {self.errors[name].strip().splitlines()[-1]}")
            self.save()
        if self.peer is not None:
            with contextlib.suppress(OSError, TimeoutError):
                self.details["scheduler_peak_mib"] = memory_of(self.scheduler)["VmHWM"]
                self.details["workers_rss_end_mib"] = workers_rss(self.launchers)
            self.save()
            self.peer.close()
        return 1 if self.errors else 0

    def start(self, peer: Peer) -> None:
        self.details["client_library"] = peer.version
        peer.client.wait_for_workers(N_WORKERS, timeout=120)
        warm = peer.gather([peer.submit(warm_up, i) for i in range(20)], self.timeout)
        assert warm == list(range(1, 21)), warm
        self.details["isolation"] = isolation(self.scheduler, self.launchers)
        if not self.details["isolation"]["ok"]:
            raise RuntimeError(f"processes share a mount namespace: {self.details['isolation']}")
        settle()
        self.samples["rss_idle"] = [rss_mib(self.scheduler)]
        self.details["workers_rss_idle_mib"] = workers_rss(self.launchers)

    def make_held(self, peer: Peer) -> list[Any]:
        """40 tasks making 25 MB each, finished (their results held by the futures)."""
        n, nbytes = self.sizes.held_tasks, self.sizes.held_bytes
        held = [peer.submit(make_array, nbytes, float(i)) for i in range(n)]
        peer.wait_all(held, self.timeout)
        return held

    def held(self, peer: Peer) -> None:
        """(1) the scheduler's RSS while 1 GB of results is held by futures."""
        start = time.perf_counter()
        self.kept = self.make_held(peer)
        self.details["held_make_s"] = time.perf_counter() - start
        settle()
        self.samples["rss_held"] = [rss_mib(self.scheduler)]
        self.details["held_per_worker"] = placement(peer, self.kept)
        self.details["workers_rss_held_mib"] = workers_rss(self.launchers)
        self.log(f"scheduler RSS {self.samples['rss_held'][0]:.0f} MiB with "
                 f"{_size(len(self.kept) * self.sizes.held_bytes)} held")  # fmt: skip

    def fan_in(self, peer: Peer) -> None:
        """(2) one task taking those futures, ``repeat`` times on the same futures.

        What a peer kept from the first run (Dask: the replicas it fetched)
        need not move again.
        """
        held = self.kept or self.make_held(peer)  # made afresh if (1) failed
        self.kept = []
        total = _size(len(held) * self.sizes.held_bytes)
        try:
            for run in range(self.args.repeat):
                seconds = timed_fan_in(peer, held, self.sizes.held_bytes, self.timeout)
                self.samples.setdefault("fan_in_s", []).append(seconds)
                if run == 0:
                    self.samples["fan_in_fresh_s"] = [seconds]
                self.log(f"fan-in {total}, same futures: {seconds:.3f} s")
            self.details["scheduler_peak_after_fan_in_mib"] = memory_of(self.scheduler)["VmHWM"]
        finally:
            del held
            settle()
        self.samples["rss_released"] = [rss_mib(self.scheduler)]

    def fan_in_fresh(self, peer: Peer) -> None:
        """(2b) the same task on results made afresh each time (placed as the first were)."""
        for _ in range(self.args.repeat - 1):
            held = self.make_held(peer)
            time.sleep(0.2)
            seconds = timed_fan_in(peer, held, self.sizes.held_bytes, self.timeout)
            self.samples.setdefault("fan_in_fresh_s", []).append(seconds)
            self.log(f"fan-in {_size(len(held) * self.sizes.held_bytes)}, "
                     f"fresh results: {seconds:.3f} s")  # fmt: skip
            del held
            settle()

    def to_client(self, peer: Peer) -> None:
        """(3) a result fetched to the client; the task finished first, the fetch alone is timed.

        Dask's client fetches through its scheduler unless told to go to the
        workers (``direct_to_workers``): its ``direct=True`` fetch is timed too.
        """
        nbytes = self.sizes.result_bytes
        ways = [("to_client_s", lambda f: f.result(timeout=self.timeout))]
        if peer.name == "dask":
            ways.append(("to_client_direct_s", lambda f: peer.client.gather(f, direct=True)))
        for key, fetch in ways:
            for r in range(self.args.repeat):
                future = peer.submit(make_array, nbytes, float(r))
                peer.wait_all([future], self.timeout)
                start = time.perf_counter()
                array = fetch(future)
                seconds = time.perf_counter() - start
                if array.nbytes != nbytes // 8 * 8 or array[-1] != r:
                    raise AssertionError("the fetched array is not the one made")
                self.samples.setdefault(key, []).append(seconds)
                how = " (direct to the worker)" if key == "to_client_direct_s" else ""
                self.log(f"{_size(nbytes)} result -> client{how}: {seconds:.3f} s")
                del future, array
                gc.collect()

    def all_to_all(self, peer: Peer) -> None:
        """(4) from the first submit to the last output's (small) result."""
        inputs, outputs, piece = (
            self.sizes.a2a_inputs,
            self.sizes.a2a_outputs,
            self.sizes.piece_bytes,
        )
        for _ in range(self.args.repeat):
            settle()
            start = time.perf_counter()
            made = [peer.submit(make_pieces, outputs, piece, i) for i in range(inputs)]
            parts = [[peer.submit(operator.getitem, m, j) for j in range(outputs)] for m in made]
            outs = [peer.submit(combine, *[parts[i][j] for i in range(inputs)])
                    for j in range(outputs)]  # fmt: skip
            del made, parts  # intermediates go once their dependents are done
            results = peer.gather(outs, self.timeout)
            seconds = time.perf_counter() - start
            for j, got in enumerate(results):
                want = (
                    inputs * (piece // 8 * 8),
                    float(sum(i * outputs + j for i in range(inputs))),
                )
                if tuple(got) != want:
                    raise AssertionError(f"all-to-all output {j} is {got}, expected {want}")
            self.samples.setdefault("a2a_s", []).append(seconds)
            self.log(f"all-to-all {inputs} x {outputs} x {_size(piece)}: {seconds:.3f} s")
            del outs, results


def figures(samples: dict[str, list[float]], sizes: Sizes) -> dict[str, float]:
    """The table's values from the raw samples (seconds -> MB/s: 10^6 bytes)."""
    out: dict[str, float] = {}
    for key in ("rss_idle", "rss_held", "rss_released"):
        if samples.get(key):
            out[key] = samples[key][0]
    moved = {
        "fan_in": sizes.held_tasks * sizes.held_bytes,
        "fan_in_fresh": sizes.held_tasks * sizes.held_bytes,
        "to_client": sizes.result_bytes,
        "a2a": sizes.a2a_inputs * sizes.a2a_outputs * sizes.piece_bytes,
    }
    for name, nbytes in moved.items():
        times = samples.get(f"{name}_s")
        if times:
            out[f"{name}_first"] = nbytes / MB / times[0]
            out[f"{name}_best"] = nbytes / MB / min(times)
    if samples.get("to_client_direct_s"):  # Dask only; Celeriac has one way (its own best)
        out["to_client_direct_best"] = sizes.result_bytes / MB / min(samples["to_client_direct_s"])
    elif "to_client_best" in out:
        out["to_client_direct_best"] = out["to_client_best"]
    if samples.get("a2a_s"):
        out["a2a_first_s"] = samples["a2a_s"][0]
        out["a2a_best_s"] = min(samples["a2a_s"])
    return out


# -- starting and stopping the processes -----------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_LIBC = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def _child_setup() -> None:
    """In the child before exec: die with us even if we are killed outright (SIGKILL)."""
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@contextlib.contextmanager
def signals_blocked() -> Iterator[None]:
    """Ctrl-C or SIGTERM during the teardown waits until it is done."""
    blocked = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class Processes:
    """Every process one peer needs, each the leader of its own process group.

    ``close`` (always called: a context manager) sends SIGTERM to each group
    and to each process of their trees, waits up to ``grace`` seconds, then
    SIGKILLs whatever is left, and says which processes (if any) survived.
    """

    def __init__(self, workdir: Path, env: dict[str, str], grace: float = 5.0) -> None:
        self.workdir = workdir
        self.env = env
        self.grace = grace
        self.started: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.names: list[str] = []  # every process ever started, in order
        self.survivors: list[int] = []
        self.killed: list[int] = []  # what SIGTERM did not stop within the grace
        self.teardown_s = 0.0

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self, name: str, argv: list[str], *, private_shm: bool, log: bool = True) -> int:
        command = [*PRIVATE_SHM, *argv] if private_shm else argv
        out: Any = None
        if log:
            out = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 (closed below)
        try:
            popen = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT if log else None, env=self.env, cwd=self.workdir,
                start_new_session=True, preexec_fn=_child_setup,
            )  # fmt: skip
        finally:
            if out is not None:
                out.close()  # the child has its own copy
        self.started.append((name, popen))
        self.names.append(name)
        return popen.pid

    def popen(self, name: str) -> subprocess.Popen[bytes]:
        return dict(self.started)[name]

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.workdir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def warnings(self, name: str, most: int = 10) -> list[str]:
        """The first lines of a process's log that say WARNING or ERROR (or a traceback)."""
        path = self.workdir / f"{name}.log"
        if not path.exists():
            return []
        lines = path.read_text(errors="replace").splitlines()
        said = [ln for ln in lines if any(w in ln for w in ("WARNING", "ERROR", "Traceback"))]
        return said[:most]

    def _ours(self, tree: set[int]) -> set[int]:
        """Live processes that are ours: the trees seen, and anything in our groups."""
        groups = {p.pid for _, p in self.started}
        return {
            pid
            for pid, (_, pgrp, state) in process_table().items()
            if (pid in tree or pgrp in groups) and state not in ("Z", "X")
        }

    def _signal(self, pids: set[int], sig: signal.Signals) -> None:
        for _, popen in self.started:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(popen.pid, sig)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    def _wait_gone(self, tree: set[int], seconds: float) -> set[int]:
        deadline = time.monotonic() + seconds
        while True:
            for _, popen in self.started:
                popen.poll()  # reap our own children
            alive = self._ours(tree)
            if not alive or time.monotonic() > deadline:
                return alive
            time.sleep(0.05)

    def close(self) -> None:
        if not self.started:
            return
        start = time.monotonic()
        with signals_blocked():
            # the whole tree, before anything dies (orphans are reparented and lost from it)
            tree = descendants([p.pid for _, p in self.started])
            self._signal(tree, signal.SIGTERM)
            alive = self._wait_gone(tree, self.grace)
            if alive:
                self.killed = sorted(alive)
                self._signal(alive, signal.SIGKILL)
                alive = self._wait_gone(tree, 10.0)
            for _, popen in self.started:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    popen.wait(1)
            self.survivors = sorted(alive)
            self.started = []
        self.teardown_s = time.monotonic() - start


def wait_for_port(port: int, popen: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            pass
        if popen.poll() is not None:
            raise RuntimeError(f"the scheduler exited ({popen.returncode}) before listening")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the scheduler did not listen on port {port} within {timeout} s")
        time.sleep(0.05)


def peer_commands(peer: str, address: str, port: int, scratch: Path) -> tuple[list[str], list[str]]:
    """The scheduler's command line, and one worker's (1 process x 1 thread)."""
    # fmt: off
    py = sys.executable
    threads = THREADS_PER_WORKER
    if peer == "celeriac":
        scheduler = [py, "-m", "celeriac", "scheduler", *f"--host 127.0.0.1 --port {port} "
                     "--no-journal --no-dashboard --log-level WARNING".split()]
        worker = [py, "-m", "celeriac", "worker", address,
                  *f"--nprocs 1 --nthreads {threads} --log-level WARNING".split()]
    else:
        scheduler = [py, "-m", "distributed.cli.dask_scheduler",
                     *f"--host 127.0.0.1 --port {port} --no-dashboard".split()]
        worker = [py, "-m", "distributed.cli.dask_worker", address,
                  *f"--host 127.0.0.1 --nworkers 1 --nthreads {threads} --no-dashboard".split(),
                  "--local-directory", str(scratch)]
    # fmt: on
    return scheduler, worker


def shm_entries() -> set[str]:
    return set(os.listdir(SHM))


def run_peer(peer: str, args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    """Start one peer's processes, run the driver, stop everything; what it measured."""
    print(f"== {peer}", file=sys.stderr, flush=True)
    before = shm_entries()
    started = time.time()
    result: dict[str, Any] = {"status": "failed", "samples": {}, "details": {}, "error": None}
    tmp = Path(tempfile.mkdtemp(prefix=f"data-plane-{peer}-"))
    keep_logs = interrupted = False
    try:
        with Processes(tmp, env) as procs:
            try:
                port = free_port()
                address = f"tcp://127.0.0.1:{port}"
                scheduler_cmd, worker_cmd = peer_commands(peer, address, port, tmp)
                scheduler = procs.start("scheduler", scheduler_cmd, private_shm=False)
                wait_for_port(port, procs.popen("scheduler"))
                workers = [procs.start(f"worker-{i}", worker_cmd, private_shm=True)
                           for i in range(N_WORKERS)]  # fmt: skip
                out = tmp / "driver.json"
                host_shm = os.stat(SHM)
                driver = [sys.executable, str(Path(__file__).resolve()), "--driver", peer,
                          "--address", address, "--driver-out", str(out),
                          "--repeat", str(args.repeat), "--stage-timeout", str(args.stage_timeout),
                          "--sizes-json", json.dumps(dataclasses.asdict(args.sizes)),
                          "--scheduler-pid", str(scheduler),
                          "--worker-pids", *map(str, workers),
                          "--host-shm", str(host_shm.st_dev), str(host_shm.st_ino)]  # fmt: skip
                procs.start("driver", driver, private_shm=True, log=False)
                code = wait_driver(procs, args.peer_timeout)
                if out.exists():
                    result.update(json.loads(out.read_text()))
                errors = result.get("errors") or {}
                if code == 0 and not errors:
                    result["status"] = "ok"
                else:
                    said = [f"{k}: {v.strip().splitlines()[-1]}" for k, v in errors.items()]
                    result["error"] = "; ".join(said) or f"driver exit {code}"
            except (KeyboardInterrupt, SystemExit):
                interrupted = True
                raise
            except BaseException:
                result["error"] = traceback.format_exc()
                raise
            finally:
                if result["status"] != "ok" and not interrupted:
                    keep_logs = True
                    for name, _ in procs.started:
                        tail = procs.log_tail(name)
                        if tail:
                            print(f"-- {peer} {name} log (last lines):\n{tail}", file=sys.stderr)
        result["log_warnings"] = {name: procs.warnings(name) for name in procs.names}
        result["teardown"] = {
            "seconds": round(procs.teardown_s, 2),
            "killed_after_grace": procs.killed,
            "survivors": procs.survivors,
        }
    finally:
        left = sorted(shm_entries() - before)
        for name in left:  # segments a scheduler of ours left in the shared /dev/shm
            path = Path(SHM, name)
            with contextlib.suppress(OSError):
                if name.startswith("celeriac-") and path.stat().st_mtime >= started - 1:
                    path.unlink()
        result.setdefault("teardown", {})["left_in_dev_shm"] = left
        if keep_logs:
            print(f"{peer} logs kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    result["seconds"] = round(time.time() - started, 1)
    result["figures"] = figures(result.get("samples", {}), args.sizes)
    if result["teardown"].get("survivors") or result["teardown"]["left_in_dev_shm"]:
        print(f"{peer}: teardown left {result['teardown']}", file=sys.stderr)
    return result


def wait_driver(procs: Processes, timeout: float) -> int | str:
    """The driver's exit code; meanwhile, fail fast if the scheduler or a worker died."""
    driver = procs.popen("driver")
    deadline = time.monotonic() + timeout
    while True:
        code = driver.poll()
        if code is not None:
            return code
        for name, popen in procs.started:
            if name != "driver" and popen.poll() is not None:
                return f"{name} exited ({popen.returncode}) during the run"
        if time.monotonic() > deadline:
            return f"timeout after {timeout:g} s"
        time.sleep(0.1)


def run_driver_here(args: argparse.Namespace) -> int:
    """``--driver PEER``: the measuring client, in its own mount namespace."""
    return Driver(args).run()


# -- the table and the JSON ------------------------------------------------------------------


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def ratio(results: dict[str, Any], key: str) -> float | None:
    ours = results.get("celeriac", {}).get("figures", {}).get(key)
    theirs = results.get("dask", {}).get("figures", {}).get(key)
    return ours / theirs if ours and theirs else None


def render_table(results: dict[str, Any], sizes: Sizes) -> str:
    shown = [p for p in PEERS if p in results]
    both = "celeriac" in shown and "dask" in shown
    header = ["workload", "unit", *shown, *(["celeriac/dask"] if both else []), "target", "ok"]
    rows = [header]
    for key, row in ROWS.items():
        values = [results[p].get("figures", {}).get(key) for p in shown]
        r = ratio(results, key)
        ours = results.get("celeriac", {}).get("figures", {}).get(key)
        met = row.meets(ours, r)
        target = ""
        if row.target is not None:
            sign = "≥ " if row.higher_is_better else "≤ "
            target = sign + (f"{row.target:g}x dask" if row.relative else _fmt(row.target))
        rows.append([
            row.label.format(**sizes.labels()),
            row.unit + (" ↑" if row.higher_is_better else " ↓"),
            *(_fmt(v) for v in values),
            *([_fmt(r)] if both else []),
            target,
            "" if met is None else "yes" if met else "NO",
        ])  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        pairs = zip(cells, widths, strict=True)
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(pairs))

    lines = [line(row) for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git(src: Path, *argv: str) -> str | None:
    try:
        proc = subprocess.run(["git", "-C", str(src), *argv], capture_output=True, text=True)
    except OSError:
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def machine_info(celeriac_src: Path) -> dict[str, Any]:
    cpu = platform.processor()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    mem_gib = 0.0
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        mem_gib = int(f.readline().split()[1]) / (1 << 20)
    dirty = _git(celeriac_src, "status", "--porcelain", "--", ".")
    return {
        "host": platform.node(),
        "kernel": platform.release(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_gib, 1),
        "loadavg_at_start": os.getloadavg(),
        "python": platform.python_version(),
        **{
            name: _version(name)
            for name in ("numpy", "pyzmq", "cloudpickle", "dask", "distributed")
        },
        "celeriac_src": str(celeriac_src),
        "celeriac_commit": _git(celeriac_src, "rev-parse", "HEAD"),
        "celeriac_src_modified": None if dirty is None else bool(dirty),
    }


def preflight(peers: list[str], env: dict[str, str]) -> dict[str, str]:
    """Why a peer cannot run here (missing package), by peer; unshare/mount checked once."""
    probe = subprocess.run([*PRIVATE_SHM, "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        raise SystemExit(
            "cannot give a process a private /dev/shm (unshare -m + mount tmpfs; needs root "
            f"or CAP_SYS_ADMIN): {probe.stderr.strip() or probe.returncode}"
        )
    missing = {}
    modules = {"celeriac": "celeriac", "dask": "distributed"}
    for peer in peers:
        check = subprocess.run([sys.executable, "-c", f"import {modules[peer]}"], env=env,
                               capture_output=True, text=True)  # fmt: skip
        if check.returncode != 0:
            missing[peer] = check.stderr.strip().splitlines()[-1]
    return missing


# -- command line ----------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (seconds per peer)")
    parser.add_argument("--peers", default=",".join(PEERS), help="comma-separated subset")
    parser.add_argument(
        "--repeat",
        type=int,
        default=2,
        help="runs of fan-in, fetch and all-to-all (default 2: first, best of 2)",
    )
    parser.add_argument("--json", type=Path, help="results file (benchmarks/results/...)")
    parser.add_argument(
        "--celeriac-src",
        type=Path,
        default=REPO / "src",
        help="the Celeriac sources to run, put first on PYTHONPATH (default: this checkout's src/)",
    )
    parser.add_argument("--peer-timeout", type=float, help="seconds per peer (1800; quick 300)")
    parser.add_argument(
        "--stage-timeout",
        type=float,
        help="seconds one workload may wait for its tasks (300; quick 60)",
    )
    internal = argparse.SUPPRESS
    parser.add_argument("--driver", choices=PEERS, help=internal)
    parser.add_argument("--driver-out", type=Path, help=internal)
    parser.add_argument("--address", help=internal)
    parser.add_argument("--sizes-json", help=internal)
    parser.add_argument("--scheduler-pid", type=int, help=internal)
    parser.add_argument("--worker-pids", type=int, nargs="+", default=[], help=internal)
    parser.add_argument("--host-shm", type=int, nargs=2, help=internal)
    args = parser.parse_args(argv)  # fmt: skip
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    args.peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = set(args.peers) - set(PEERS)
    if unknown:
        parser.error(f"unknown peers {sorted(unknown)}; choose from {','.join(PEERS)}")
    args.sizes = QUICK if args.quick else Sizes()
    args.peer_timeout = args.peer_timeout or (300 if args.quick else 1800)
    args.stage_timeout = args.stage_timeout or (60 if args.quick else 300)
    args.celeriac_src = args.celeriac_src.resolve()
    if args.json is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        args.json = RESULTS_DIR / f"data-plane-{'quick-' if args.quick else ''}{stamp}.json"
    return args


def exit_on_signals() -> None:
    """SIGTERM and SIGHUP unwind like Ctrl-C, so every ``finally`` stops what it started."""

    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(f"stopped by signal {signum}")

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGHUP, handler)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.driver:
        return run_driver_here(args)
    exit_on_signals()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELERIAC_")}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(args.celeriac_src), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    env["PYTHONUNBUFFERED"] = "1"
    missing = preflight(args.peers, env)
    print(
        f"peers {','.join(args.peers)}: {N_WORKERS} worker processes x {THREADS_PER_WORKER} "
        f"slot, each worker and the client with a private /dev/shm; repeat {args.repeat}; "
        f"sizes {dataclasses.asdict(args.sizes)}; celeriac from {args.celeriac_src}",
        file=sys.stderr,
    )
    machine = machine_info(args.celeriac_src)
    results: dict[str, Any] = {}
    for peer in args.peers:
        if peer in missing:
            print(f"skipping {peer}: {missing[peer]}", file=sys.stderr)
            results[peer] = {"status": "skipped", "reason": missing[peer], "figures": {}}
            continue
        try:
            results[peer] = run_peer(peer, args, env)
        except KeyboardInterrupt:
            print("\ninterrupted: every process started was stopped", file=sys.stderr)
            return 130
    data = {
        "benchmark": "celeriac-data-plane",
        "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "config": {
            "quick": args.quick,
            "repeat": args.repeat,
            "peers": args.peers,
            "n_workers": N_WORKERS,
            "slots_per_worker": THREADS_PER_WORKER,
            "private_dev_shm": "each worker process and the client (scheduler: the host's)",
            "sizes": dataclasses.asdict(args.sizes),
        },
        "rows": {
            key: {**dataclasses.asdict(row), "label": row.label.format(**args.sizes.labels())}
            for key, row in ROWS.items()
        },
        "results": results,
        "ratios": {key: ratio(results, key) for key in ROWS},
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(data, indent=2) + "\n")
    print()
    print(render_table(results, args.sizes))
    for peer, result in results.items():
        if result["status"] == "failed":
            print(f"\n{peer}: FAILED ({result.get('error')})")
            for name, lines in result.get("log_warnings", {}).items():
                for line in lines[:3]:
                    print(f"  {name}: {line[:300]}")
        elif result["status"] == "skipped":
            print(f"\n{peer}: skipped ({result['reason']})")
    print(
        f"\nfirst = the first run, best = the best of {args.repeat}; MB/s = 10^6 bytes moved per"
        f" second; ratios above 1 favour Celeriac on ↑ rows, below 1 on ↓ rows.\n"
        f"every sample in {args.json}"
    )
    ok = all(r["status"] != "failed" for r in results.values())
    clean = all(
        not r.get("teardown", {}).get("survivors")
        and not r.get("teardown", {}).get("left_in_dev_shm")
        for r in results.values()
    )
    return 0 if ok and clean else 1


if __name__ == "__main__":
    sys.exit(main())
