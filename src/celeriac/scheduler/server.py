"""The ZeroMQ loop around :class:`SchedulerState`.

It only translates: frames in become events, the state's commands become
frames out, grouped into one multipart message per peer per loop iteration.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import socket
import time
from collections import defaultdict, deque
from typing import Any

import zmq

from celeriac.parent import parent_gone
from celeriac.scheduler.journal import Journal, JournalWriteError
from celeriac.scheduler.settings import SchedulerSettings
from celeriac.scheduler.state import SchedulerState, Send
from celeriac.wire import protocol, sharedmem
from celeriac.wire.addresses import (
    InsecureBindError,
    bind_refusal,
    ipc_address,
    not_a_socket,
    tcp_address,
)
from celeriac.wire.protocol import Exporter, Message, ProtocolError
from celeriac.wire.security import secure_server, worker_key_ids
from celeriac.wire.transport import busy_poll, readable, recv_frames, send_frames

#: What only a worker (or its supervisor) says: with --keys, only from a worker key.
WORKER_ONLY = frozenset(
    {
        "hello-worker",
        "worker-died",
        "workers-alive",
        "started",
        "task-done",
        "task-failed",
        "uploaded",
    }
)

log = logging.getLogger("celeriac.scheduler")

#: Messages read per loop iteration before we act on them and send replies.
MAX_READS_PER_ITERATION = 1000
#: Seconds before the first retry of a journal whose commit failed; each
#: failed retry doubles it, up to the last: a full disk costs one write
#: attempt every 2 s, and space freed is noticed within 2 s.
JOURNAL_RETRY = (0.1, 2.0)


class SchedulerServer:
    """The scheduler process's loop: ZeroMQ frames in and out of a :class:`SchedulerState`.

    ``settings``: the options of ``celeriac scheduler`` (:class:`SchedulerSettings`;
    its defaults when None): where to listen (``host``, ``port``, ``ipc``), who
    may (``keys``, ``insecure``), the journal (``journal``, ``no_journal``,
    ``fsync``), the dashboard, ``busy_poll``, and what the state machine is
    configured with (:meth:`SchedulerSettings.scheduler_config`).
    ``parent_pid``: stop when this process is gone (the embedded cluster names
    itself; if it died before we started, the first check fires).

    The constructor only stores; :meth:`start` binds, loads the journal and
    starts the dashboard, and :meth:`serve_forever` starts first if need be.
    ``state`` exists from the start, restored from the journal by :meth:`start`;
    ``address`` (TCP, or with ``--no-tcp`` the Unix socket), ``ipc_address``
    (a Unix socket beside a TCP ``address``) and ``dashboard`` are known once
    it started.
    """

    def __init__(
        self, settings: SchedulerSettings | None = None, *, parent_pid: int | None = None
    ) -> None:
        self.settings = settings = settings or SchedulerSettings()
        self.state = SchedulerState(settings.scheduler_config())
        self.max_message_bytes = self.state.config.max_message_bytes
        self.busy_poll = settings.busy_poll
        self.journal: Journal | None = None
        self.address: str | None = None
        self.ipc_address: str | None = None
        self.dashboard: Any = None  # a Dashboard (imported only when one is served)
        self._parent = parent_pid
        self._started = False
        self._context: Any = None
        self._socket: Any = None
        self._authenticator: Any = None
        self._worker_keys: frozenset[str] | None = None  # with --keys: who may be a worker
        self._ipc_file: tuple[str, int, int] | None = None
        self._shm_namespace: str | None = None
        self._running = True
        self._next_snapshot = 0.0
        #: What the dashboard shows: rebuilt by the loop once a second and swapped
        #: in whole, so the HTTP thread never reads the state machine itself.
        self.snapshot: dict[str, Any] = {}
        self._history: deque[dict[str, float]] = deque(maxlen=600)  # ten minutes
        #: While journal commits fail: since when, and when to try next (monotonic).
        self._journal_down_since = 0.0
        self._journal_retry_at = 0.0
        self._journal_backoff = JOURNAL_RETRY[0]

    def start(self) -> None:
        """Check the binds are allowed, load the journal, bind, serve the dashboard.

        Raises :class:`InsecureBindError` for a bind the settings do not allow
        (before anything is opened), ``OSError`` or ``zmq.ZMQError`` when it cannot
        listen or serve; whatever it opened by then is closed again.  Once only.
        """
        if self._started:
            return
        settings = self.settings
        dashboard = settings.dashboard_bind()  # first, as the CLI always checked it
        refusal = bind_refusal(settings.host, insecure=settings.insecure, keys=settings.keys)
        if settings.no_tcp and settings.ipc is None:
            refusal = "--no-tcp leaves nothing to listen on: give --ipc PATH too"
        if refusal is not None:
            raise InsecureBindError(refusal)
        self._started = True
        try:
            self._load_journal()
            self._bind()
            if dashboard is not None:
                self._serve_dashboard(*dashboard)
        except BaseException:
            self.close()
            raise

    def _load_journal(self) -> None:
        path = self.settings.journal_path()
        if path is None:
            return
        owner = f"scheduler {self.settings.host}:{self.settings.port}"
        self.journal = Journal(path, self.settings.fsync, owner=owner)
        tasks, revoked, jobs = self.journal.load()
        self.state.restore(tasks, revoked, jobs, time.time())

    def _bind(self) -> None:
        settings = self.settings
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.ROUTER)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a reconnecting peer takes its id back
        # A ROUTER silently drops what it cannot queue for a slow peer; a dropped
        # result or task would hang someone forever.  Queue instead: prefetch
        # bounds what a worker is sent, and a client asked for its results.
        self._socket.setsockopt(zmq.SNDHWM, 0)
        # libzmq drops a peer that sends a larger frame, before we could buffer it
        self._socket.setsockopt(zmq.MAXMSGSIZE, self.max_message_bytes)
        if settings.keys:
            self._authenticator = secure_server(self._socket, self._context, settings.keys)
            self._worker_keys = worker_key_ids(settings.keys)
        if settings.no_tcp:
            assert settings.ipc is not None  # start() refused it
            address = self._listen_locally(settings.ipc)
            self.ipc_address = None  # the Unix socket is the address, not one beside it
        else:
            port = settings.port
            self._socket.bind(tcp_address(settings.host, "*" if port == 0 else port))
            address = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)
            if settings.ipc is not None:
                self._listen_locally(settings.ipc)
        self.address = address
        self.state.about = {"pid": os.getpid(), "address": address}
        if self.ipc_address is not None:
            self.state.about["ipc_address"] = self.ipc_address
        self._shm_namespace = sharedmem.namespace()
        if self._shm_namespace is not None:
            tag = sharedmem.scheduler_tag(address)
            if left := sharedmem.remove_leftovers(tag):
                log.info("deleted %d shared memory segment(s) an earlier run left", left)
            self.state.welcome_fields = {"shm": self._shm_namespace, "shm_tag": tag}

    def _serve_dashboard(self, host: str, port: int) -> None:
        from celeriac.scheduler.dashboard import Dashboard

        self._take_snapshot(time.time())
        try:
            self.dashboard = Dashboard(
                host,
                port,
                lambda: self.snapshot,
                token=self.settings.dashboard_token,
                auth=not self.settings.dashboard_no_auth,
                show_errors=self.settings.dashboard_show_errors,
            )
        except OSError as exc:
            raise OSError(
                f"cannot serve the dashboard on {host}:{port} ({exc}); "
                "choose another --dashboard-port, or --no-dashboard"
            ) from None
        self.dashboard.start()

    def stop(self) -> None:
        """Ask the loop to end; safe from a signal handler."""
        self._running = False

    def serve_forever(self) -> None:
        """Serve until :meth:`stop` (or the parent is gone), then :meth:`close`.

        Calls :meth:`start` first unless it was called.
        """
        self.start()
        # Each task makes a few dozen short-lived containers; at the default
        # threshold (700) young collections ran every ~25 tasks and took 10-18%
        # of the state machine's time.  What exists now (imports, restored
        # work) lives long: keep it out of every full collection.
        gc.freeze()
        gc.set_threshold(50_000, 20, 100)
        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLIN)
        # Wall-clock time: etas and result TTLs are dates, not durations.
        tick_every = min(0.1, self.state.config.heartbeat_interval / 2)
        next_tick = time.time() + tick_every
        # In a conversation (a message came soon after the last batch was
        # handled: a round trip, a stream of .delay() calls), the next one is
        # likely near too, and noticing it at once beats sleeping: -0.13 ms per
        # submit-and-wait round trip here.  Heartbeats alone never start one.
        conversing = False
        try:
            while self._running:
                deadline = min(next_tick, self.state.next_deadline() or next_tick)
                waiting_since = time.perf_counter()
                with sharedmem.deletions_deferred():  # after this turn's replies are out
                    if self._wait(poller, deadline, conversing):
                        conversing = time.perf_counter() - waiting_since <= 2 * self.busy_poll
                        self._send(self._read_available())
                    now = time.time()
                    if now >= deadline:
                        self._send(self._tick(now))
                if now >= next_tick:
                    next_tick = now + tick_every
                    if self.dashboard is not None and now >= self._next_snapshot:
                        self._take_snapshot(now)
                    if parent_gone(self._parent):
                        log.warning("parent process exited; stopping")
                        break
        finally:
            self.close()

    def _wait(self, poller: zmq.Poller, deadline: float, busy: bool) -> bool:
        """Until a message waits (True) or ``deadline`` (``time.time()``) passes."""
        router = self._socket
        if busy and busy_poll(lambda: readable(router), time.perf_counter() + self.busy_poll):
            return True
        return bool(poller.poll(int(max(0.0, deadline - time.time()) * 1000)))

    def _take_snapshot(self, now: float) -> None:
        counters = self.state.counters
        self._history.append({"time": now, "done": counters["done"], "erred": counters["erred"]})
        self.snapshot = {
            "time": now,
            "address": self.address,
            "info": self.state.info(),
            "history": list(self._history),
            "failures": list(self.state.recent_failures),
        }
        self._next_snapshot = now + 1.0

    def _listen_locally(self, path: str) -> str:
        """Also listen on a Unix socket: peers on this machine skip the TCP stack
        (35-80 µs per round trip).  ZeroMQ would replace whatever is at ``path``
        (a file, another scheduler's socket): refuse that instead."""
        address = ipc_address(path)
        if not_a_socket(path):
            raise OSError(f"cannot listen at {address}: {path} exists and is not a socket")
        if _listening_at(path):
            raise OSError(f"cannot listen at {address}: another process listens there")
        try:
            self._socket.bind(address)
        except zmq.ZMQError as exc:
            raise OSError(f"cannot listen at {address}: {exc}") from None
        # Connecting takes write permission: the owner and group may, and the
        # directory it sits in decides who else can even reach it.
        os.chmod(path, 0o660)
        found = os.stat(path)
        self.ipc_address, self._ipc_file = address, (path, found.st_dev, found.st_ino)
        return address

    def close(self) -> None:
        """Stop the dashboard, close the sockets and the journal, remove our Unix socket.

        Safe before :meth:`start`, after a failed one, and twice.
        """
        if self.dashboard is not None:
            self.dashboard.stop()
            self.dashboard = None
        if self._authenticator is not None:  # first: term() waits for it
            self._authenticator.stop()
            self._authenticator = None
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None
        if self._context is not None:
            self._context.term()
            self._context = None
        if self._ipc_file is not None:  # ZeroMQ leaves the file behind
            path, device, inode = self._ipc_file
            self._ipc_file = None
            with contextlib.suppress(OSError):  # unless another process took the path since
                found = os.stat(path)
                if (found.st_dev, found.st_ino) == (device, inode):
                    os.unlink(path)
        if self.journal is not None:
            self.journal.close()
            self.journal = None

    def _tick(self, now: float) -> list[Send]:
        try:
            return self.state.tick(now)
        except Exception:
            log.exception("internal error in the scheduler's timers")
            return []

    def _read_available(self) -> list[Send]:
        out: list[Send] = []
        router = self._socket
        for _ in range(MAX_READS_PER_ITERATION):
            if not readable(router):
                break
            out.extend(self._handle(recv_frames(router)))
        return out

    def _handle(self, frames: list[zmq.Frame]) -> list[Send]:
        sender = frames[0].bytes
        named: list[sharedmem.Segment] = []
        try:
            messages = protocol.decode(
                frames[1:], self.max_message_bytes, lambda *item: self._accept_segment(named, *item)
            )
        except ProtocolError as exc:
            log.error("bad message from peer %s: %s", sender.hex(), exc)
            return [Send(sender, Message("error", {"text": f"bad message: {exc}"}))]
        if named and not self._shares_memory(sender):
            return self._refuse_segments(sender)
        if self._worker_keys is not None and not self._may_send(frames[1], messages):
            return self._refuse_role(sender, messages)
        try:
            return self.state.handle(sender, messages, time.time())
        except Exception:
            # A bug, not bad input (that was rejected above).  Keep serving everyone else.
            log.exception("internal error handling a message from %s", sender.hex())
            return [Send(sender, Message("error", {"text": "internal scheduler error"}))]

    def _may_send(self, frame: zmq.Frame, messages: list[Message]) -> bool:
        """Whether the peer's key allows this batch: speaking as a worker takes a worker key.

        The key is the socket's to know (ZAP names it in each frame's
        ``User-Id``), so the check is here, not in the state machine.
        """
        assert self._worker_keys is not None
        if not any(msg.op in WORKER_ONLY for msg in messages):
            return True
        return frame.get("User-Id") in self._worker_keys

    def _refuse_role(self, sender: bytes, messages: list[Message]) -> list[Send]:
        """The whole batch goes; a worker started with a client key is told to exit."""
        ops = sorted({msg.op for msg in messages if msg.op in WORKER_ONLY})
        log.warning("refused %s from peer %s: not a worker key", ", ".join(ops), sender.hex())
        fields = {"text": f"only a worker key may send {', '.join(ops)}; this is a client key"}
        if "hello-worker" in ops:
            fields["about"] = "hello-worker"
        return [Send(sender, Message("error", fields))]

    @staticmethod
    def _accept_segment(named: list[sharedmem.Segment], name: str, size: int) -> sharedmem.Segment:
        """A segment a peer hands us, checked (``sharedmem.accept``: a regular file of
        ours, the announced size, no link): ours from now on (deleted when we drop it)."""
        segment = sharedmem.accept(name, size)
        named.append(segment)
        return segment

    def _refuse_segments(self, sender: bytes) -> list[Send]:
        """Shared memory from a peer that did not show it shares ours.

        The batch is dropped and its segments with it (they are deleted as
        they go: their sender let go of them).  A peer we do not know at all
        most likely talked to our previous run: it registers again, and
        resends what it still needs, the way it would after any restart.
        """
        if not self.state.knows(sender):
            return [Send(sender, Message("reregister"))]
        text = "bad message: shared memory named by a peer that may not use it"
        log.error("%s (peer %s)", text, sender.hex())
        return [Send(sender, Message("error", {"text": text}))]

    def _shares_memory(self, peer: bytes) -> bool:
        """Large frames travel between us as names (see sharedmem)."""
        namespace = self._shm_namespace
        return namespace is not None and self.state.shm_namespace(peer) == namespace

    def _send(self, commands: list[Send]) -> None:
        commands = self._commit(commands)
        by_peer: dict[bytes, list[Message]] = defaultdict(list)
        for to, msg in commands:
            by_peer[to].append(msg)
        for peer, messages in by_peer.items():
            export = None if self._shares_memory(peer) else sharedmem.inline
            try:
                frames = protocol.encode(messages, export)
            except OSError:  # a segment to inline is gone or shrank: drop that message only
                frames = protocol.encode(_readable(messages, export, peer), export)
            try:
                send_frames(self._socket, [peer, *frames])
            except zmq.ZMQError as exc:  # peer vanished between read and write
                log.warning("could not send to %s: %s", peer.hex(), exc)

    # -- the journal -------------------------------------------------------------------

    def _commit(self, commands: list[Send]) -> list[Send]:
        """Write this turn's journal operations before anything is sent: a reply may
        say "accepted", which must mean "recorded".  Returns what to send.

        A commit that fails keeps its operations in the journal (written with
        the next commit that succeeds) and makes the state refuse durable work;
        the ``accepted`` replies that waited on it become ``refused``.  Later
        turns retry, with a back-off, until a commit succeeds.
        """
        journal, state = self.journal, self.state
        if journal is None:
            return commands
        ops = state.take_journal() if state.journal_ops else None
        if state.journal_unavailable is None:
            if ops is not None:
                try:
                    journal.apply(ops)
                except JournalWriteError as exc:
                    return self._journal_failed(exc, commands)
            return commands
        if ops is not None:
            journal.hold(ops)
        now = time.monotonic()
        if now >= self._journal_retry_at:
            try:
                journal.retry()
            except JournalWriteError:
                self._journal_backoff = min(2 * self._journal_backoff, JOURNAL_RETRY[1])
                self._journal_retry_at = now + self._journal_backoff
            else:
                self._journal_restored(now)
        return commands

    def _journal_failed(self, exc: JournalWriteError, commands: list[Send]) -> list[Send]:
        now = time.monotonic()
        self._journal_down_since = now
        self._journal_backoff = JOURNAL_RETRY[0]
        self._journal_retry_at = now + self._journal_backoff
        log.error(
            "journal write failed: %s (%s); refusing durable work until a write succeeds "
            "(retried every %g s at most); plain futures are served",
            exc.text,
            exc.cause,
            JOURNAL_RETRY[1],
        )
        self.state.about["journal_unavailable"] = exc.text
        refused, more = self.state.journal_failed(exc.text)
        return [*_refuse(commands, set(refused), exc.text), *more]

    def _journal_restored(self, now: float) -> None:
        assert self.journal is not None
        log.warning(
            "journal %s written again after %.1f s; durable work is accepted again",
            self.journal.path,
            now - self._journal_down_since,
        )
        self.state.about.pop("journal_unavailable", None)
        self.state.journal_restored()


def _refuse(commands: list[Send], keys: set[str], text: str) -> list[Send]:
    """The ``accepted`` of ``keys`` turned into ``refused`` (reason ``journal``)."""
    if not keys:
        return commands
    out: list[Send] = []
    for send in commands:
        msg = send.msg
        if msg.op != "accepted" or keys.isdisjoint(msg.fields["keys"]):
            out.append(send)
            continue
        kept = [key for key in msg.fields["keys"] if key not in keys]
        if kept:
            out.append(Send(send.to, Message("accepted", {"keys": kept})))
        refused = {"keys": [key for key in msg.fields["keys"] if key in keys], "text": text}
        out.append(Send(send.to, Message("refused", {**refused, "reason": "journal"})))
    return out


def _listening_at(path: str) -> bool:
    """A live process accepts connections on the Unix socket at ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except OSError:  # no file, or a stale one nobody listens on
            return False
    return True


def _readable(messages: list[Message], export: Exporter | None, peer: bytes) -> list[Message]:
    """The messages that still encode, one by one; the others are logged and dropped."""
    kept = []
    for msg in messages:
        try:
            protocol.encode([msg], export)
        except OSError as exc:
            log.error("could not send %r to %s: %s", msg.op, peer.hex(), exc)
        else:
            kept.append(msg)
    return kept
