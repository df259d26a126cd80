"""The settings only the command line has: those of ``periodic``, ``inspect``, ``keys`` and
``journal``, and :class:`Invocation`, what every command takes about one run.

The daemons' settings are declared beside what runs them:
:class:`~celeriac.scheduler.settings.SchedulerSettings` and
:class:`~celeriac.worker.settings.WorkerSettings`.
"""

from __future__ import annotations

from dataclasses import dataclass

from celeriac.options import CommonSettings, option, path
from celeriac.wire.addresses import DEFAULT_ADDRESS


@dataclass(frozen=True, kw_only=True)
class Invocation:
    """What every command takes about this one run; never read from a file or the environment.

    ``config``: the TOML file to read (else ``$CELERIAC_CONFIG``).  ``parent_pid``:
    exit when this process is gone; the embedded cluster passes it, and a command
    started with it reads no file and, of the environment, only ``$CELERIAC_KEYS``.
    ``check``: ``scheduler --check`` and ``worker --check`` validate and report only.
    """

    config: str | None = option(
        None,
        metavar="PATH",
        configurable=False,
        help="TOML configuration file (default: $CELERIAC_CONFIG); see docs/deployment.md",
    )
    parent_pid: int | None = option(None, configurable=False, hidden=True, help="")
    check: bool = option(
        False,
        configurable=False,
        help="validate the configuration, print the effective settings and exit "
        "(0 when valid), binding and starting nothing",
    )


_ADDRESS_HELP = "scheduler address (default: $CELERIAC_ADDRESS, [client] address, or %(default)s)"


@dataclass(frozen=True, kw_only=True)
class ClientSettings(CommonSettings):
    """The options of the commands that connect to a scheduler as a client (``[client]``).

    ``address``: the scheduler's.  ``json``: print JSON.  ``timeout``: seconds to
    wait for the scheduler.  ``keys``: CURVE key directory with ``client.key_secret``
    and ``scheduler.key``.
    """

    address: str = option(DEFAULT_ADDRESS, positional=True, help=_ADDRESS_HELP)
    json: bool = option(False, configurable=False, help="print JSON, for scripts")
    timeout: float = option(5.0, help="seconds to wait for the scheduler")
    keys: str | None = option(
        None,
        parse=path,
        metavar="DIR",
        help="CURVE key directory with client.key_secret and scheduler.key "
        "(default: $CELERIAC_KEYS)",
    )


@dataclass(frozen=True, kw_only=True)
class InspectSettings(ClientSettings):
    """The options of ``celeriac inspect`` (alias ``status``): those of :class:`ClientSettings`."""


@dataclass(frozen=True, kw_only=True)
class PeriodicSettings(ClientSettings):
    """The options of ``celeriac periodic``: :class:`ClientSettings` and the job.

    ``action``: list, pause, resume, remove or run-now.  ``name``: the job (all
    actions but list).  ``address`` is given as ``--scheduler`` (or ``--address``).
    """

    # Redeclared as a flag; a dataclass keeps a redeclared field where its base
    # had it, so --help lists it before --json, as it always has.
    address: str = option(DEFAULT_ADDRESS, flags=("--scheduler", "--address"), help=_ADDRESS_HELP)
    action: str = option(
        positional=True,
        configurable=False,
        choices=("list", "pause", "resume", "remove", "run-now"),
        help="what to do",
    )
    name: str | None = option(
        None, positional=True, configurable=False, help="the job (all actions but list)"
    )


@dataclass(frozen=True, kw_only=True)
class KeysSettings(CommonSettings):
    """The options of ``celeriac keys``: ``action`` (create) and ``directory``."""

    action: str = option(
        positional=True, configurable=False, choices=("create",), help="what to do"
    )
    directory: str = option(
        positional=True, configurable=False, metavar="DIR", help="where to write the keys"
    )


@dataclass(frozen=True, kw_only=True)
class JournalSettings(CommonSettings):
    """The options of ``celeriac journal``: ``action`` (check or salvage), ``journal``
    (the scheduler's journal file) and ``new`` (where salvage writes; must not exist)."""

    action: str = option(
        positional=True,
        configurable=False,
        choices=("check", "salvage"),
        help="check: verify every part of the journal, list what is wrong; "
        "salvage: copy every intact record into NEW",
    )
    journal: str = option(
        positional=True, configurable=False, parse=path, metavar="PATH", help="the journal file"
    )
    new: str | None = option(
        None,
        positional=True,
        configurable=False,
        parse=path,
        metavar="NEW",
        help="salvage: the new journal to write (must not exist)",
    )
