"""An embedded cluster: a scheduler and workers on this machine, as subprocesses.

What ``Client()`` starts when no address is given (Dask's ``LocalCluster``).
Every process it starts watches its parent and exits with it, so a crashed
user process leaves nothing behind.
"""

from __future__ import annotations

import logging
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from typing import IO

from celeriac.wire.addresses import ipc_address

log = logging.getLogger("celeriac.cluster")

LISTENING = "celeriac scheduler listening at "
DASHBOARD_AT = "celeriac dashboard at "


#: Tries at a free port before giving up (another process may take it first).
START_ATTEMPTS = 3


class ClusterStartError(RuntimeError):
    """The embedded scheduler or workers did not start; the message says how they ended."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class LocalCluster:
    """A scheduler and worker processes on this machine, what ``Client()`` starts.

    ``n_workers``: worker processes (``None``: one per core; ``0``: the
    scheduler alone, workers may join later); ``threads_per_worker``: slots in
    each; ``timeout``: seconds to wait for the scheduler to be listening;
    ``log_level`` of both; ``scheduler_args`` and ``worker_args``: more
    ``celeriac scheduler``/``worker`` flags.  Clients and workers meet on a
    Unix socket in a private (0700) temporary directory (:attr:`address`), and
    nowhere else: no other local user can reach the scheduler (and run code as
    this one).  ``tcp=True`` also opens a loopback port (:attr:`tcp_address`,
    ``None`` without), which every local user can reach: for tools that need
    TCP, best with ``--keys``.  The scheduler serves its dashboard
    (:attr:`dashboard_address`: the page's link, with its token).  The
    processes are told this process's pid and exit when it does; :meth:`close`
    stops them (also a context manager).  Retries with another port if one is
    taken meanwhile.
    """

    def __init__(
        self,
        n_workers: int | None = None,
        threads_per_worker: int = 1,
        *,
        timeout: float = 10.0,
        log_level: str = "WARNING",
        scheduler_args: tuple[str, ...] = (),
        worker_args: tuple[str, ...] = (),
        tcp: bool = False,
    ) -> None:
        # None: one worker process per core; 0: the scheduler alone (workers join later)
        if n_workers is not None and n_workers < 0:
            raise ValueError(f"n_workers must be 0 or more, not {n_workers}")
        self.n_workers = (os.cpu_count() or 1) if n_workers is None else n_workers
        level = ("--log-level", log_level)
        self._scheduler_options = (*level, *scheduler_args)
        self._worker_options = (
            *level, "--nprocs", str(self.n_workers), "--nthreads", str(threads_per_worker),
            *worker_args,
        )  # fmt: skip
        # A --port or --host of the caller's asks for TCP as surely as tcp=True.
        self._tcp = tcp or _has_option(scheduler_args, "--port", "--host")
        self.tcp_address: str | None = None
        self._scheduler: subprocess.Popen[bytes] | None = None
        self._workers: subprocess.Popen[bytes] | None = None
        self._socket_dir: weakref.finalize | None = None
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                self._start(timeout)
                return
            except ClusterStartError:
                self.close()
                # Port taken between our probe and the scheduler's bind: try another.
                exit_code = self._scheduler.returncode if self._scheduler else None
                if attempt == START_ATTEMPTS or exit_code != 1:
                    raise
            except BaseException:
                self.close()
                raise

    def _start(self, timeout: float) -> None:
        """Scheduler and workers at once, on addresses chosen here.

        The workers' Python start-up then overlaps the scheduler's (a
        DEALER may connect before its peer binds; it retries), which takes a
        third off the time to the first result.

        ``address`` is a Unix socket in a directory only this user may enter:
        faster than TCP loopback, and closed to other local users.  TCP only
        when asked (``tcp``), or when no such socket can be made.
        """
        celeriac = (sys.executable, "-m", "celeriac")
        parent = ("--parent-pid", str(os.getpid()))
        local = self._local_address()
        listen: tuple[str, ...] = ()
        if local is not None:
            listen += ("--ipc", local.removeprefix("ipc://"))
        if local is not None and not self._tcp:
            address = ready = local
            listen += ("--no-tcp",)
        else:
            port = _free_port()
            address = local or f"tcp://127.0.0.1:{port}"
            ready = "tcp://"
            listen += ("--port", str(port))
        self._scheduler = subprocess.Popen(
            [*celeriac, "scheduler", *listen, *self._scheduler_defaults(), *parent],
            stdout=subprocess.PIPE,
        )
        if self.n_workers > 0:
            self._workers = subprocess.Popen(
                [*celeriac, "worker", address, *self._worker_options, *parent]
            )
        listening, dashboard = _read_addresses(self._scheduler, ready, timeout)
        self.tcp_address = listening if listening.startswith("tcp://") else None
        self.dashboard_address = _with_token(dashboard, self._scheduler_options)
        self.address = address

    def _local_address(self) -> str | None:
        """The scheduler's Unix socket: the caller's ``--ipc``, else one in a fresh
        directory only this user may enter (gone at close, or at exit)."""
        for i, arg in enumerate(self._scheduler_options):
            if arg.startswith("--ipc="):
                return ipc_address(arg.split("=", 1)[1])
            if arg == "--ipc" and i + 1 < len(self._scheduler_options):
                return ipc_address(self._scheduler_options[i + 1])
        try:
            directory = tempfile.mkdtemp(prefix="celeriac-")
        except OSError as exc:
            log.warning("no directory for a Unix socket (%s); using TCP only", exc)
            return None
        self._socket_dir = weakref.finalize(self, shutil.rmtree, directory, True)
        try:
            return ipc_address(os.path.join(directory, "scheduler.sock"))
        except ValueError:  # a $TMPDIR too long for a socket path: TCP only
            return None

    def _scheduler_defaults(self) -> tuple[str, ...]:
        options = self._scheduler_options
        if not _has_option(options, "--dashboard-port", "--no-dashboard"):
            # The dashboard on a random port too: several embedded clusters may run at once.
            options += ("--dashboard-port", "0")
        if not _has_option(options, "--journal", "--no-journal"):
            # Work lives as long as this process (Dask's LocalCluster): a journal
            # named after a random port would only litter, or resurrect stale
            # work in a later cluster that happens to draw the same port.
            options += ("--no-journal",)
        return options

    @property
    def scheduler_pid(self) -> int:
        """The scheduler process's pid."""
        assert self._scheduler is not None
        return self._scheduler.pid

    def close(self, timeout: float = 10.0) -> None:
        """Stop workers first (they finish or hand back), then the scheduler."""
        for popen in (self._workers, self._scheduler):
            if popen is not None and popen.poll() is None:
                popen.send_signal(signal.SIGTERM)
                try:
                    popen.wait(timeout)
                except subprocess.TimeoutExpired:
                    log.warning("pid %d did not stop in %g s; killing it", popen.pid, timeout)
                    popen.kill()
                    popen.wait()
        if self._scheduler is not None and self._scheduler.stdout is not None:
            self._scheduler.stdout.close()
        if self._socket_dir is not None:
            self._socket_dir()

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _with_token(link: str | None, options: tuple[str, ...]) -> str | None:
    """The dashboard's link as printed, with a token it was given put back in.

    The scheduler prints a token it made, but a token it was given as
    ``?token=...`` (as Jupyter does): here it comes from our own
    ``--dashboard-token`` argument or the ``CELERIAC_DASHBOARD_TOKEN`` it inherited.
    """
    if link is None or not link.endswith("?token=..."):
        return link
    given = os.environ.get("CELERIAC_DASHBOARD_TOKEN")
    for i, arg in enumerate(options):
        if arg.startswith("--dashboard-token="):
            given = arg.split("=", 1)[1]
        elif arg == "--dashboard-token" and i + 1 < len(options):
            given = options[i + 1]
    return link if given is None else link.removesuffix("...") + given


def _has_option(args: tuple[str, ...], *names: str) -> bool:
    return any(a.split("=", 1)[0] in names for a in args)


def _read_addresses(
    popen: subprocess.Popen[bytes], ready: str, timeout: float
) -> tuple[str, str | None]:
    """The scheduler's address (and dashboard's, if any), as it prints them once bound.

    ``ready``: how the last listening line (its address) starts.
    """
    stream: IO[bytes] | None = popen.stdout
    assert stream is not None
    deadline = time.monotonic() + timeout
    dashboard, pending = None, b""
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        # Raw reads: a buffered readline could hide a second line from select().
        while time.monotonic() < deadline:
            if not selector.select(max(0.0, deadline - time.monotonic())):
                continue
            chunk = os.read(stream.fileno(), 4096)
            if not chunk:
                break
            *lines, pending = (pending + chunk).split(b"\n")
            for line in (raw.decode() for raw in lines):
                if line.startswith(DASHBOARD_AT):
                    dashboard = line[len(DASHBOARD_AT) :].strip()  # the page, with its token
                elif line.startswith(LISTENING + ready):  # the last line: ready
                    return line[len(LISTENING) :].strip(), dashboard
    try:  # stdout closes a moment before the process is gone: wait for its exit code
        code: int | None = popen.wait(max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        code = None
    raise ClusterStartError(
        f"the embedded scheduler did not start within {timeout:g} s"
        + (f" (it exited with code {code})" if code is not None else "")
    )
