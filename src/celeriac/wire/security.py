"""CURVE encryption and authentication for every connection to the scheduler.

``celeriac keys create DIR`` writes one key pair per role::

    DIR/scheduler.key_secret   the scheduler's pair (keep on the scheduler host)
    DIR/scheduler.key          its public key (give to workers and clients)
    DIR/worker.key_secret      workers' pair
    DIR/client.key_secret      clients' pair
    DIR/authorized/*.key       public keys the scheduler admits

CURVE alone encrypts but admits *any* client key; the scheduler therefore
also runs a ZAP authenticator that admits only the public keys in
``DIR/authorized``.  An unlisted peer's handshake fails: none of its bytes
reach the scheduler, let alone an unpickler.

Keys have roles: an allowed key whose file name starts with ``worker``
(``worker.key``, ``worker-gpu1.key``) is a worker key, any other a client
key.  Only a worker key may register as a worker or speak for one (a
supervisor's ``worker-died``): a client key could otherwise take other
clients' tasks, read their arguments and send them results (issue 13, H7).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import zmq
import zmq.auth

if TYPE_CHECKING:  # imported when used: it pulls in asyncio, 30 ms of every start-up
    from zmq.auth.thread import ThreadAuthenticator

log = logging.getLogger("celeriac.security")

ROLES = ("scheduler", "worker", "client")


class KeysError(ValueError):
    """A key directory that is missing or incomplete."""


def create_keys(directory: str | Path) -> list[Path]:
    """Create the key pairs and the allowlist; refuse to overwrite existing keys.

    Makes ``directory`` (and its parents) if needed; the workers' and clients'
    public keys go into ``authorized``.  Returns every file written; raises
    :class:`KeysError` if any role's secret key already exists there.  A new
    directory is made 0700 and secret files 0600 as they are created, never
    made first and narrowed after (another user read a secret key in the gap
    19 times in 20: issue 13, M2); an existing directory keeps its mode.
    """
    directory = Path(directory)
    if any((directory / f"{role}.key_secret").exists() for role in ROLES):
        raise KeysError(f"{directory} already holds keys; remove them first to make new ones")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    authorized = directory / "authorized"
    authorized.mkdir(mode=0o700, exist_ok=True)
    written = []
    for role in ROLES:
        public_key, secret_key = zmq.curve_keypair()
        public = _write_certificate(directory / f"{role}.key", public_key, None)
        secret = _write_certificate(directory / f"{role}.key_secret", public_key, secret_key)
        written += [public, secret]
        if role != "scheduler":
            _write_certificate(authorized / public.name, public_key, None)
    return written


def _write_certificate(path: Path, public: bytes, secret: bytes | None) -> Path:
    """A certificate in ZeroMQ's format (what ``zmq.auth.load_certificate`` reads).

    Created exclusively (``O_EXCL``: never through a file or link already
    there) with its final mode: 0600 for a secret, 0644 for a public key.
    """
    kind = "Secret" if secret is not None else "Public"
    lines = [f"#   ZeroMQ CURVE **{kind}** Certificate (celeriac keys create)", "metadata", "curve"]
    lines.append(f'    public-key = "{public.decode()}"')
    if secret is not None:
        lines.append(f'    secret-key = "{secret.decode()}"')
    mode = 0o600 if secret is not None else 0o644
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return path


def secure_server(
    socket: zmq.Socket, context: zmq.Context, directory: str | Path
) -> ThreadAuthenticator:
    """Make ``socket`` a CURVE server admitting only ``DIR/authorized`` keys.  Before bind.

    ``directory`` is the key directory (``DIR``), holding the scheduler's pair.
    ``context`` is ``socket``'s: the ZAP authenticator thread started on it
    answers its handshakes.  Returns that authenticator, running: stop it when
    the socket closes.  Raises :class:`KeysError` when the allowlist is empty or
    the scheduler's pair is missing.
    """
    directory = Path(directory)
    problem = allowlist_problem(directory)
    if problem is not None:
        raise KeysError(problem)
    authorized = directory / "authorized"
    public, secret = _load(directory, "scheduler")
    from zmq.auth.thread import ThreadAuthenticator

    authenticator = ThreadAuthenticator(context, log=logging.getLogger("celeriac.security.zap"))
    authenticator.start()
    authenticator.configure_curve(domain="*", location=str(authorized))
    socket.curve_secretkey = secret
    socket.curve_publickey = public
    socket.curve_server = True
    return authenticator


def worker_key_ids(directory: str | Path) -> frozenset[str]:
    """The worker keys of the allowlist, as the scheduler's socket names its peers.

    That name is a message's ``User-Id`` property: ZAP sets it to the z85 text
    of the peer's public key (pyzmq's default).  Worker keys are the
    ``DIR/authorized/worker*.key`` files.
    """
    authorized = Path(directory) / "authorized"
    keys = []
    for path in sorted(authorized.glob("worker*.key")):
        public, _ = zmq.auth.load_certificate(path)
        keys.append(public.decode("ascii"))
    return frozenset(keys)


def allowlist_problem(directory: str | Path) -> str | None:
    """Why the scheduler could admit nobody with these keys, or ``None``."""
    authorized = Path(directory) / "authorized"
    if not authorized.is_dir() or not any(authorized.glob("*.key")):
        return f"{authorized} lists no public keys: nobody could connect"
    return None


def secure_client(socket: zmq.Socket, directory: str | Path, role: str) -> None:
    """Make ``socket`` a CURVE client with ``role``'s key pair.  Before connect.

    ``role`` is ``"worker"`` or ``"client"``; ``directory`` must hold
    ``ROLE.key_secret`` and the scheduler's public ``scheduler.key``
    (:class:`KeysError` otherwise).
    """
    directory = Path(directory)
    public, secret = _load(directory, role)
    server_public, _ = zmq.auth.load_certificate(_existing(directory / "scheduler.key"))
    socket.curve_secretkey = secret
    socket.curve_publickey = public
    socket.curve_serverkey = server_public


def secure_peer_server(
    socket: zmq.Socket, context: zmq.Context, directory: str | Path
) -> ThreadAuthenticator:
    """Make a worker's data server a CURVE server, as :func:`secure_server` does the
    scheduler's: the worker's own key pair, the same allowlist (``DIR/authorized``).

    So only the cluster's workers and clients may read results from it.  Raises
    :class:`KeysError` when the worker's key pair or the allowlist is missing
    from ``directory`` (then the worker serves no results: they go through the
    scheduler).
    """
    directory = Path(directory)
    problem = allowlist_problem(directory)
    if problem is not None:
        raise KeysError(f"{problem}; results will travel through the scheduler")
    public, secret = _load(directory, "worker")
    from zmq.auth.thread import ThreadAuthenticator

    authenticator = ThreadAuthenticator(context, log=logging.getLogger("celeriac.security.zap"))
    authenticator.start()
    authenticator.configure_curve(domain="*", location=str(directory / "authorized"))
    socket.curve_secretkey = secret
    socket.curve_publickey = public
    socket.curve_server = True
    return authenticator


def secure_peer_client(socket: zmq.Socket, directory: str | Path, role: str) -> None:
    """Make ``socket`` a CURVE client of a worker's data server.  Before connect.

    ``role`` is this process's (``worker`` or ``client``); the server's public
    key is the workers' (``DIR/worker.key``, or the public half of
    ``DIR/worker.key_secret`` on a worker).  :class:`KeysError` when either is missing.
    """
    directory = Path(directory)
    public, secret = _load(directory, role)
    server = directory / "worker.key"
    if not server.exists():
        server = directory / "worker.key_secret"
    server_public, _ = zmq.auth.load_certificate(_existing(server))
    socket.curve_secretkey = secret
    socket.curve_publickey = public
    socket.curve_serverkey = server_public


def keys_from_env(explicit: str | Path | None) -> Path | None:
    """The key directory: given explicitly, or ``$CELERIAC_KEYS``.

    ``explicit`` other than ``None`` wins, even an empty one; an empty value
    means no keys (``None``).
    """
    value = explicit if explicit is not None else os.environ.get("CELERIAC_KEYS")
    return Path(value) if value else None


def _load(directory: Path, role: str) -> tuple[bytes, bytes]:
    public, secret = zmq.auth.load_certificate(_existing(directory / f"{role}.key_secret"))
    if secret is None:
        raise KeysError(f"{directory / f'{role}.key_secret'} holds no secret key")
    return public, secret


def _existing(path: Path) -> Path:
    if not path.exists():
        raise KeysError(f"{path} does not exist; create keys with `celeriac keys create DIR`")
    return path
