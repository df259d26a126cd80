"""Several "hosts" on one machine, for tests of what moves between them.

Two things make processes on one machine look like different hosts to
Celeriac: a ``/dev/shm`` of their own (a mount namespace with a fresh tmpfs:
nothing can travel through shared memory, so results must cross a socket),
and a network of their own (network namespaces joined by a veth pair, with
addresses that exist only inside them).  Both need root (or user namespaces);
:func:`unshare_problem` and :func:`netns_problem` say why not, for a skip.

:class:`Hosts` starts the real CLI (``python -m celeriac``) in them and ends
every process it started, by process group, whatever happens; the tmpfs of a
mount namespace goes with its last process, and :class:`NetworkPair` deletes
its namespaces (and so the veth pair and addresses) on exit.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import uuid
from collections.abc import Sequence
from typing import IO

#: ``python -m celeriac``: the real command line.
CELERIAC = (sys.executable, "-m", "celeriac")


def private_shm(command: Sequence[str], size: str = "2g") -> list[str]:
    """``command`` run in a mount namespace of its own with a fresh, empty ``/dev/shm``."""
    inner = f"mount -t tmpfs -o size={size},mode=1777 tmpfs /dev/shm && exec {shlex.join(command)}"
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", inner]


def unshare_problem() -> str | None:
    """Why :func:`private_shm` cannot work here (``None`` if it can)."""
    try:
        done = subprocess.run(private_shm(["true"]), capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run unshare: {exc}"
    if done.returncode != 0:
        return f"cannot make a private /dev/shm: {done.stderr.decode().strip()}"
    return None


def netns_problem() -> str | None:
    """Why :class:`NetworkPair` cannot work here (``None`` if it can)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    try:
        done = subprocess.run(["ip", "netns", "list"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run ip: {exc}"
    return None if done.returncode == 0 else f"ip netns: {done.stderr.decode().strip()}"


class NetworkPair:
    """Two network namespaces joined by a veth pair: two hosts, ``10.X.Y.1`` and ``.2``.

    The addresses exist only inside the two namespaces; nothing here routes
    anywhere else.  Use as a context manager: the namespaces (and with them
    the veth pair) are deleted on exit.  ``run_in(i, command)`` prefixes a
    command to run it on host ``i`` (0 or 1).
    """

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:8]
        self.names = (f"celeriac-a-{tag}", f"celeriac-b-{tag}")
        subnet = int(tag[:4], 16) % 250 + 1
        self.addresses = (f"10.231.{subnet}.1", f"10.231.{subnet}.2")
        self._made: list[str] = []

    def __enter__(self) -> NetworkPair:
        try:
            for name in self.names:
                _ip("netns", "add", name)
                self._made.append(name)
                _ip("-n", name, "link", "set", "lo", "up")
            a, b = self.names
            _ip(
                "-n", a, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1", "netns", b
            )
            devices = ("veth0", "veth1")
            for name, device, address in zip(self.names, devices, self.addresses, strict=True):
                _ip("-n", name, "addr", "add", f"{address}/24", "dev", device)
                _ip("-n", name, "link", "set", device, "up")
        except BaseException:
            self.close()
            raise
        return self

    def run_in(self, host: int, command: Sequence[str]) -> list[str]:
        """``command`` run inside host ``host``'s network namespace."""
        return ["ip", "netns", "exec", self.names[host], *command]

    def close(self) -> None:
        """Delete the namespaces made (their veth ends and addresses go with them)."""
        while self._made:
            subprocess.run(["ip", "netns", "delete", self._made.pop()], check=False)

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


class Hosts:
    """Processes started for a test, each in its own process group, all ended at :meth:`close`.

    ``logs``: a directory for each process's output (``NAME.log``), read by
    tests when something fails.
    """

    def __init__(self, logs: str) -> None:
        self.logs = logs
        self.started: list[subprocess.Popen[bytes]] = []
        self._files: list[IO[bytes]] = []

    def start(
        self, name: str, command: Sequence[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``command`` (its output to ``LOGS/NAME.log``, ``env`` its
        environment if given); returns at once."""
        log = open(os.path.join(self.logs, f"{name}.log"), "wb")  # noqa: SIM115 (closed at close)
        self._files.append(log)
        popen = subprocess.Popen(
            list(command), stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
        self.started.append(popen)
        return popen

    def log(self, name: str) -> str:
        """What process ``name`` wrote so far."""
        with open(os.path.join(self.logs, f"{name}.log"), errors="replace") as f:
            return f.read()

    def close(self) -> None:
        """SIGTERM every process group (SIGKILL after 10 s) and reap it."""
        for popen in self.started:
            _signal_group(popen, signal.SIGTERM)
        for popen in self.started:
            try:
                popen.wait(10)
            except subprocess.TimeoutExpired:
                _signal_group(popen, signal.SIGKILL)
                popen.wait()
            _signal_group(popen, signal.SIGKILL)  # anything its leader left behind
        self.started.clear()
        for log in self._files:
            log.close()
        self._files.clear()

    def __enter__(self) -> Hosts:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _signal_group(popen: subprocess.Popen[bytes], signum: int) -> None:
    try:
        os.killpg(popen.pid, signum)
    except ProcessLookupError:
        pass
