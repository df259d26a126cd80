"""The settings of ``celeriac scheduler``: the declaration of its options, what follows.

:class:`SchedulerSettings` is the one place a scheduler option is declared: the
CLI builds ``celeriac scheduler``'s parser, config keys and ``--check`` report
from it, and :class:`~celeriac.scheduler.server.SchedulerServer` runs on it.  The
pure state machine keeps its own, larger :class:`SchedulerConfig`, which
:meth:`SchedulerSettings.scheduler_config` fills from the options it has.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from celeriac.options import BadValue, CommonSettings, option, path
from celeriac.scheduler.records import SchedulerConfig
from celeriac.wire.addresses import DEFAULT_PORT, InsecureBindError, is_loopback

#: How long the loop keeps asking for the next message before it sleeps, while
#: messages come close together (see ``SchedulerServer.serve_forever``).
BUSY_POLL = 0.0003
#: The dashboard's port unless told (with ``--port 0``, a free one).
DASHBOARD_PORT = 8787


#: A dashboard token: URL-safe characters only, so it travels unchanged in a link,
#: a header and a cookie; long enough that guessing is hopeless.
DASHBOARD_TOKEN = re.compile(r"[A-Za-z0-9._~-]{16,256}")


def dashboard_token(text: str) -> str:
    """A token given to ``--dashboard-token``: 16 to 256 of ``A-Z a-z 0-9 . _ ~ -``."""
    if not DASHBOARD_TOKEN.fullmatch(text):
        raise BadValue(
            "a token of 16 to 256 letters, digits or . _ ~ - "
            "(python3 -c 'import secrets; print(secrets.token_urlsafe())' makes one)"
        )
    return text


def busy_poll_seconds(text: str) -> float:
    """Seconds, 0 to 0.01: longer would keep the loop spinning between heartbeats."""
    try:
        seconds = float(text)
    except ValueError:
        raise BadValue(f"{text!r} is not a number of seconds") from None
    if not 0 <= seconds <= 0.01:
        raise BadValue(f"must be 0 to 0.01 s, not {text}")
    return seconds


@dataclass(frozen=True, kw_only=True)
class SchedulerSettings(CommonSettings):
    """The options of ``celeriac scheduler``, with their defaults.

    ``host``, ``port``: the TCP address to bind (port 0: a free one).
    ``ipc``: also listen on a Unix socket at this path; ``no_tcp``: on it alone.
    ``insecure``: allow a non-loopback ``host`` (or dashboard) without ``keys``.
    ``keys``: CURVE key directory (``scheduler.key_secret``, ``authorized``).
    ``worker_timeout``, ``heartbeat_interval``, ``prefetch``, ``allowed_failures``,
    ``max_message_size``: the state machine's, see :meth:`scheduler_config`.
    ``busy_poll``: seconds the loop polls before it sleeps, in a conversation.
    ``journal``, ``no_journal``, ``fsync``: the SQLite journal; see :meth:`journal_path`.
    ``dashboard_port``, ``no_dashboard``, ``dashboard_host``: see :meth:`dashboard_bind`.
    ``dashboard_token``, ``dashboard_no_auth``, ``dashboard_show_errors``: who may read
    the dashboard, and whether it shows failure texts (docs/monitoring.md).
    ``schedule``: TOML file of periodic jobs installed at start.
    ``log_level``: see :class:`~celeriac.options.CommonSettings`.
    """

    host: str = option("127.0.0.1", help="address to bind")
    port: int = option(DEFAULT_PORT, help="port to bind; 0 picks a free one")
    ipc: str | None = option(
        None,
        parse=path,
        metavar="PATH",
        help="also listen on a Unix socket at PATH (made 0660; its directory decides who "
        "can reach it): clients and workers on this machine connect to ipc://PATH, "
        "faster than TCP",
    )
    no_tcp: bool = option(
        False,
        help="listen on the --ipc socket only, no TCP port: then only processes that may "
        "enter the socket's directory reach the scheduler (what Client() does)",
    )
    insecure: bool = option(
        False, help="allow binding a non-loopback address without authentication"
    )
    keys: str | None = option(
        None,
        parse=path,
        metavar="DIR",
        help="CURVE key directory (celeriac keys create): encrypt, and admit only the "
        "public keys in DIR/authorized (default: $CELERIAC_KEYS)",
    )
    worker_timeout: float = option(
        5.0, help="seconds without a heartbeat before a worker is declared lost"
    )
    heartbeat_interval: float = option(0.5, help="seconds between worker heartbeats")
    prefetch: int = option(2, help="tasks queued on a worker beyond its slots")
    allowed_failures: int = option(
        3, help="worker deaths a task may cause before it fails with KilledWorker"
    )
    busy_poll: float = option(
        BUSY_POLL,
        parse=busy_poll_seconds,
        metavar="SECONDS",
        help="while messages come close together, keep asking for the next this long "
        "before sleeping (yielding the CPU to anything else that wants it); 0 never does",
    )
    max_message_size: int = option(1 << 30, help="largest message accepted, in bytes")
    journal: str | None = option(
        None,
        parse=path,
        metavar="PATH",
        exclusive="journal",
        help="SQLite journal of accepted work, recovered on restart "
        "(default: $XDG_STATE_HOME/celeriac/scheduler-PORT.sqlite3)",
    )
    no_journal: bool = option(
        False,
        exclusive="journal",
        help="keep everything in memory only: a restart loses queued work",
    )
    fsync: str = option(
        "batch",
        choices=("always", "batch", "never"),
        help="when journal commits reach the disk (see docs/reliability.md)",
    )
    dashboard_port: int | None = option(
        None,
        exclusive="dashboard",
        help="port of the web dashboard, on --dashboard-host (default: 8787; with --port 0, "
        "a free one)",
    )
    no_dashboard: bool = option(False, exclusive="dashboard", help="serve no dashboard")
    dashboard_host: str = option("127.0.0.1", help="address the dashboard binds")
    dashboard_token: str | None = option(
        None,
        parse=dashboard_token,
        metavar="TOKEN",
        exclusive="dashboard-auth",
        secret=True,
        help="the token every dashboard request must present (16+ URL-safe characters; "
        "a command line is visible in ps: prefer $CELERIAC_DASHBOARD_TOKEN or the config "
        "file); default: a random one, made at start and printed in the dashboard's link",
    )
    dashboard_no_auth: bool = option(
        False,
        exclusive="dashboard-auth",
        help="serve the dashboard, its API and /metrics without a token: whoever can reach "
        "the port reads them; only for a host where a firewall admits no one else",
    )
    dashboard_show_errors: bool = option(
        False,
        help="show failures' exception messages and tracebacks on the dashboard and in "
        "/api/status (they may hold arguments and secrets); default: the exception type only",
    )
    schedule: str | None = option(
        None,
        parse=path,
        metavar="TOML",
        help="file of periodic jobs to install at start (see docs/periodic.md)",
    )

    def scheduler_config(self) -> SchedulerConfig:
        """The state machine's configuration: these settings, its defaults for the rest."""
        return SchedulerConfig(
            worker_timeout=self.worker_timeout,
            heartbeat_interval=self.heartbeat_interval,
            prefetch=self.prefetch,
            allowed_failures=self.allowed_failures,
            max_message_bytes=self.max_message_size,
            journal=self.journal_path() is not None,
        )

    def journal_path(self) -> Path | None:
        """The journal the scheduler opens, or None to keep everything in memory."""
        from celeriac.scheduler.journal import default_path  # sqlite3: only when asked

        if self.no_journal:
            return None
        if self.journal:
            return Path(self.journal)
        # an ephemeral port (0) has no stable identity to recover under
        return default_path(self.port) if self.port else None

    def dashboard_bind(self) -> tuple[str, int] | None:
        """Where the dashboard is served, or None; raises :class:`InsecureBindError`."""
        if self.no_dashboard:
            return None
        if not is_loopback(self.dashboard_host) and not self.insecure:
            raise InsecureBindError(
                f"refusing to serve the dashboard on {self.dashboard_host!r}: it is plain HTTP "
                "(its token and pages readable on the network); keep it on loopback (reach it "
                "through ssh -L) or pass --insecure"
            )
        if self.dashboard_port is not None:
            return self.dashboard_host, self.dashboard_port
        return self.dashboard_host, (0 if self.port == 0 else DASHBOARD_PORT)
