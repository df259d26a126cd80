"""Scheduler addresses: parsing, validation and the loopback check."""

from __future__ import annotations

import ipaddress
import os
import re
import stat

DEFAULT_PORT = 8786
DEFAULT_ADDRESS = f"tcp://127.0.0.1:{DEFAULT_PORT}"

#: The longest path a Unix socket address holds (sun_path, less its NUL).
MAX_IPC_PATH = 107

_TCP = re.compile(r"^tcp://(?P<host>\[[^\]]+\]|[^:/\s]+):(?P<port>\d{1,5})$")


def tcp_address(host: str, port: int | str) -> str:
    """``tcp://host:port``, with an IPv6 literal ``host`` put in brackets.

    ``port`` may be ``"*"``: ZeroMQ's "any free port" when binding.  Nothing
    is validated here (see :func:`normalize`).
    """
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # IPv6 literal
    return f"tcp://{host}:{port}"


def ipc_address(path: str) -> str:
    """``ipc://PATH`` for a Unix socket path, or a clear :class:`ValueError`."""
    if not path:
        raise ValueError("an ipc:// address needs a path: ipc:///run/celeriac/scheduler.sock")
    if len(path.encode()) > MAX_IPC_PATH:
        raise ValueError(f"Unix socket path {path!r} is longer than {MAX_IPC_PATH} bytes")
    return f"ipc://{path}"


def not_a_socket(path: str) -> bool:
    """Something other than a Unix socket sits at ``path`` (nothing there: False)."""
    try:
        return not stat.S_ISSOCK(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def normalize(address: str) -> str:
    """A ``tcp://host:port`` or ``ipc://PATH`` address, or a clear :class:`ValueError`.

    Accepts the forms people type: ``host:port``, ``host`` (default port) and
    full ``tcp://host:port``; ``ipc://PATH`` is a scheduler's Unix socket on
    this machine (``celeriac scheduler --ipc PATH``).
    """
    if not isinstance(address, str) or not address.strip():
        raise ValueError(f"scheduler address must be a non-empty string, not {address!r}")
    text = address.strip()
    if text.startswith("ipc://"):
        return ipc_address(text.removeprefix("ipc://"))
    if "://" not in text:
        text = f"tcp://{text}"
    if not text.startswith("tcp://"):
        raise ValueError(f"unsupported scheduler address {address!r}: use tcp:// or ipc://")
    if not _TCP.match(text):
        text = f"{text}:{DEFAULT_PORT}"
    match = _TCP.match(text)
    if match is None:
        raise ValueError(f"malformed scheduler address {address!r}; expected tcp://HOST:PORT")
    port = int(match["port"])
    if not 0 < port < 65536:
        raise ValueError(f"port {port} in {address!r} is out of range 1-65535")
    return text


class InsecureBindError(ValueError):
    """Refusal to expose the scheduler or its dashboard without authentication."""


def bind_refusal(host: str, *, insecure: bool, keys: object) -> str | None:
    """Why the scheduler must not bind ``host`` as configured, or ``None`` if it may.

    It may bind a loopback ``host`` always; any other only with ``insecure``
    (``--insecure``: the network is trusted) or ``keys`` (the CURVE key
    directory; any truthy value counts as "authentication is on").
    """
    if is_loopback(host) or insecure or keys:
        return None
    return (
        f"refusing to bind {host!r} without authentication: anyone who can reach this "
        "port could run code on every worker. Create keys with `celeriac keys create "
        "DIR` and pass --keys DIR, or pass --insecure on a network you trust."
    )


def is_loopback(host: str) -> bool:
    """``host`` is ``localhost`` or a loopback IP literal (brackets allowed).

    Any other name is not, even one that resolves to loopback: nothing is
    looked up.
    """
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
