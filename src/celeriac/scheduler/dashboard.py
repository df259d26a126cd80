"""The scheduler's web dashboard: a page, a JSON API and Prometheus metrics.

Served by a bounded server on one thread of the scheduler process
(:mod:`~celeriac.scheduler.webserver`).  It never touches the state machine:
it reads the snapshot the scheduler loop rebuilds once a second, so serving
it costs the task path nothing but that snapshot (and each snapshot is
encoded once, however many viewers ask).

Routes, each behind the token (see :class:`Site`):

* ``/`` -- the page (``dashboard.html``, package data: vanilla JS and inline
  SVG, no network); it polls ``/api/status`` every second;
* ``/api/status`` -- the snapshot as JSON (see docs/monitoring.md), failure
  texts left out unless ``show_errors``;
* ``/metrics`` -- the snapshot in the Prometheus text exposition format.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import html
import importlib.resources
import json
import logging
import re
import secrets
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from celeriac.scheduler.webserver import Limits, Request, Response, WebServer
from celeriac.states import TaskState
from celeriac.wire.addresses import is_loopback

log = logging.getLogger("celeriac.dashboard")

Snapshot = Callable[[], dict[str, Any]]

#: What a failure keeps on a dashboard that hides failure texts.
FAILURE_FIELDS = ("key", "name", "kind", "type", "time")


class Dashboard:
    """The web page, JSON status and ``/metrics``, served on ``host``:``port`` from a thread.

    ``snapshot`` returns the data to show (the server refreshes it each loop
    turn); the server never waits on a request.  ``token``: what every request
    must present (see :class:`Site`); None makes a random one (printed in
    :attr:`link`).  ``auth=False`` serves without any.  ``show_errors``: show
    failures' texts (tracebacks, exception messages).  ``limits``: what one
    connection may cost.  Binds when made (``OSError`` if it cannot); nothing
    is served until :meth:`start`.
    """

    def __init__(
        self,
        host: str,
        port: int,
        snapshot: Snapshot,
        *,
        token: str | None = None,
        auth: bool = True,
        show_errors: bool = False,
        limits: Limits | None = None,
    ) -> None:
        token = token or None  # an empty one is none
        self.token_generated = auth and token is None
        self.token = (token or secrets.token_urlsafe(24)) if auth else None
        self._server = WebServer(host, port, self._respond, limits or Limits())
        bound_host, bound_port = self._server.address
        self.address = f"http://{_url_host(bound_host)}:{bound_port}"
        self.site = Site(
            snapshot,
            token=self.token,
            cookie=f"celeriac-dashboard-{bound_port}",
            check_host=is_loopback(host),
            show_errors=show_errors,
        )

    @property
    def link(self) -> str:
        """The page's address to print: with the token when it was made here, else
        ``?token=...`` (as Jupyter prints a token it was given)."""
        if self.token is None:
            return f"{self.address}/"
        return f"{self.address}/?token={self.token if self.token_generated else '...'}"

    def _respond(self, request: Request) -> Response:
        return self.site.respond(request)

    def start(self) -> None:
        """Serve from a daemon thread."""
        self._server.start()
        log.info("dashboard at %s", self.link)
        if self.token is None:
            log.warning(
                "dashboard without a token (--dashboard-no-auth): whoever reaches %s reads it",
                self.address,
            )

    def stop(self) -> None:
        """Stop serving, close the socket and every connection."""
        self._server.stop()


class Site:
    """What the dashboard answers to each request; no sockets (a pure function of the
    request and the latest snapshot, save for the encoding it caches per snapshot).

    A request must name a loopback ``Host`` when ``check_host`` (DNS rebinding),
    then present ``token`` (unless None) in one of three ways: an
    ``Authorization: Bearer TOKEN`` header (scrapers, scripts), a ``token``
    query parameter, or the ``cookie`` the page sets.  ``/?token=TOKEN`` sets
    that cookie (HttpOnly, SameSite=Strict, named after the port, so two
    dashboards on one host do not overwrite each other's) and redirects to
    ``/``, so the token leaves the address bar.  Tokens are compared with
    :func:`hmac.compare_digest`.  Without it: ``401`` (the page: a form asking
    for the token).  ``show_errors``: failures keep their ``text``.
    """

    def __init__(
        self,
        snapshot: Snapshot,
        *,
        token: str | None,
        cookie: str,
        check_host: bool,
        show_errors: bool,
    ) -> None:
        self.snapshot = snapshot
        self.token = token
        self.cookie = cookie
        self.check_host = check_host
        self.show_errors = show_errors
        self._encoded_for: dict[str, Any] | None = None
        self._encoded: dict[str, bytes] = {}

    def respond(self, request: Request) -> Response:
        """The response to ``request`` (a ``GET``; a ``HEAD`` gets its headers)."""
        if self.check_host and not _loopback_host_header(request.headers.get("host", "")):
            return Response(403, b"forbidden: use a loopback address\n")
        if self.token is not None:
            if not self.authorized(request):
                return self._unauthorized(request)
            if request.path == "/" and "token" in request.query:
                cookie = f"{self.cookie}={self.token}; Path=/; HttpOnly; SameSite=Strict"
                return Response(303, headers={"Location": "/", "Set-Cookie": cookie})
        if request.path == "/api/status":
            return Response(200, self._encode("status"), "application/json")
        if request.path == "/metrics":
            return Response(200, self._encode("metrics"), "text/plain; version=0.0.4")
        if request.path == "/":
            try:
                body, policy = page()
            except OSError as exc:  # an installation without its package data
                log.error("cannot load the dashboard page: %s", exc)
                return Response(500, b"dashboard.html is missing from this install\n")
            headers = {"Content-Security-Policy": policy}
            return Response(200, body, "text/html; charset=utf-8", headers)
        return Response(404, b"not found\n")

    def authorized(self, request: Request) -> bool:
        """Whether ``request`` presents the token (always, when there is none)."""
        if self.token is None:
            return True
        token = self.token.encode()
        return any(
            hmac.compare_digest(given.encode(), token) for given in presented(request, self.cookie)
        )

    def _unauthorized(self, request: Request) -> Response:
        tried = bool(presented(request, self.cookie))
        challenge = 'Bearer realm="celeriac dashboard"' + (
            ', error="invalid_token"' if tried else ""
        )
        headers = {"WWW-Authenticate": challenge}
        if request.path == "/":
            headers["Content-Security-Policy"] = LOGIN_POLICY
            return Response(401, login_page(tried), "text/html; charset=utf-8", headers)
        text = "wrong token" if tried else "this dashboard needs its token"
        hint = ": send Authorization: Bearer TOKEN, or ?token=TOKEN\n"
        return Response(401, (text + hint).encode(), headers=headers)

    def _encode(self, what: str) -> bytes:
        """The latest snapshot as ``status`` JSON or ``metrics`` text, made once per snapshot."""
        snapshot = self.snapshot()
        if snapshot is not self._encoded_for:
            self._encoded_for, self._encoded = snapshot, {}
        if what not in self._encoded:
            if what == "status":
                shown = for_viewers(snapshot, show_errors=self.show_errors)
                self._encoded[what] = json.dumps(shown).encode()
            else:
                self._encoded[what] = prometheus(snapshot).encode()
        return self._encoded[what]


def presented(request: Request, cookie: str) -> list[str]:
    """The tokens ``request`` offers: a bearer token, ``?token=``, the ``cookie``."""
    found = []
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        found.append(credentials.strip())
    if request.query.get("token"):
        found.append(request.query["token"])
    for pair in request.headers.get("cookie", "").split(";"):
        name, _, value = pair.strip().partition("=")
        if name == cookie and value:
            found.append(value)
    return found


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _loopback_host_header(value: str) -> bool:
    host = value.strip()
    if host.startswith("["):  # [::1]:8787
        host = host[1 : host.find("]")] if "]" in host else host
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    return is_loopback(host)


# -- what viewers see of failures ------------------------------------------------


def for_viewers(snapshot: dict[str, Any], *, show_errors: bool) -> dict[str, Any]:
    """The snapshot as ``/api/status`` serves it: each failure with its exception ``type``;
    unless ``show_errors``, only the :data:`FAILURE_FIELDS` of each (no ``text``: an
    exception's message and traceback may hold arguments, paths, secrets)."""
    shown = {**snapshot, "errors_shown": show_errors}
    if "failures" in snapshot:
        shown["failures"] = [_failure(f, show_errors) for f in snapshot["failures"]]
    info = snapshot.get("info")
    if isinstance(info, dict) and "failures" in info:
        shown["info"] = {**info, "failures": [_failure(f, show_errors) for f in info["failures"]]}
    return shown


def _failure(failure: dict[str, Any], show_errors: bool) -> dict[str, Any]:
    typed = {**failure, "type": exception_type(str(failure.get("text", "")))}
    return typed if show_errors else {k: typed[k] for k in FAILURE_FIELDS if k in typed}


#: The line that starts a formatted traceback.
_TRACEBACK = "Traceback (most recent call last):"
_EXCEPTION_NAME = re.compile(r"[A-Za-z_][\w.]*")


def exception_type(text: str) -> str | None:
    """The exception's (qualified) class in a formatted traceback, or None.

    The line after the frames of the last ``Traceback`` block starts with it
    (``ValueError: ...``); what follows on that line and after it is the
    message, which this never returns.  None for a text without a traceback
    (the scheduler's own ``killed-worker``, ``time-limit`` texts).
    """
    lines = text.splitlines()
    try:
        start = len(lines) - 1 - lines[::-1].index(_TRACEBACK)
    except ValueError:
        return None
    for line in lines[start + 1 :]:
        if line.startswith((" ", "\t")):  # a frame, its code, its ^^^ markers
            continue
        match = _EXCEPTION_NAME.match(line)
        if match and line[match.end() :][:1] in ("", ":"):
            return match[0]
        return None
    return None


# -- the login page ------------------------------------------------------------

LOGIN_POLICY = "default-src 'none'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"


def login_page(tried: bool) -> bytes:
    """What ``/`` shows without the token: why, and a form to give it (a ``GET`` to ``/``)."""
    problem = (
        "That token is not this dashboard's (a scheduler started without --dashboard-token "
        "makes a new one each time)."
        if tried
        else "This dashboard needs its token."
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Celeriac dashboard: token</title></head>
<body>
<h1>Celeriac dashboard</h1>
<p data-testid="login-problem">{html.escape(problem)}</p>
<p>The scheduler printed a link with it when it started
(<code>celeriac dashboard at http://&hellip;/?token=&hellip;</code>): open that link,
or paste the token here.</p>
<form method="get" action="/">
<label>Token <input type="password" name="token" autocomplete="off" required></label>
<button type="submit">Open</button>
</form>
</body></html>
""".encode()


# -- the page ------------------------------------------------------------------


@functools.cache
def page() -> tuple[bytes, str]:
    """The page and its Content-Security-Policy, which admits only its own inline code."""
    text = (
        importlib.resources.files("celeriac.scheduler")
        .joinpath("dashboard.html")
        .read_text("utf-8")
    )
    sources = {
        kind: " ".join(f"'sha256-{_digest(code)}'" for code in re.findall(pattern, text, re.S))
        for kind, pattern in (
            ("script", r"<script>(.*?)</script>"),
            ("style", r"<style>(.*?)</style>"),
        )
    }
    policy = (
        f"default-src 'none'; script-src {sources['script']}; style-src {sources['style']}; "
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )
    return text.encode(), policy


def _digest(code: str) -> str:
    return base64.b64encode(hashlib.sha256(code.encode()).digest()).decode()


# -- Prometheus ------------------------------------------------------------------


def prometheus(snapshot: dict[str, Any]) -> str:
    """The snapshot as Prometheus text exposition format (version 0.0.4)."""
    info = snapshot.get("info", {})
    counters = info.get("counters", {})
    by_state = info.get("by_state", {})
    workers = info.get("workers", [])
    jobs = info.get("periodic", [])
    lines: list[str] = []

    def metric(name: str, kind: str, help: str, samples: Iterable[tuple[str, Any]]) -> None:
        lines.append(f"# HELP {name} {help}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(f"{name}{labels} {_number(value)}" for labels, value in samples)

    metric(
        "celeriac_tasks_total",
        "counter",
        "Tasks since the scheduler started: submitted, and finished by outcome (done, erred).",
        ((_labels(outcome=name), value) for name, value in sorted(counters.items())),
    )
    states = [s.value for s in TaskState] + sorted(set(by_state) - {s.value for s in TaskState})
    metric(
        "celeriac_tasks",
        "gauge",
        "Tasks the scheduler holds, by state.",
        ((_labels(state=s), by_state.get(s, 0)) for s in states),
    )
    metric(
        "celeriac_queue_depth",
        "gauge",
        "Tasks ready in each queue, waiting for a worker.",
        ((_labels(queue=q), n) for q, n in sorted(info.get("queues", {}).items())),
    )
    metric("celeriac_workers", "gauge", "Connected workers.", [("", len(workers))])
    metric(
        "celeriac_worker_slots",
        "gauge",
        "Tasks each worker runs at once.",
        ((_labels(worker=w["name"]), w["slots"]) for w in workers),
    )
    metric(
        "celeriac_worker_assigned",
        "gauge",
        "Tasks given to each worker (running or prefetched).",
        ((_labels(worker=w["name"]), w["assigned"]) for w in workers),
    )
    metric(
        "celeriac_worker_memory_bytes",
        "gauge",
        "Resident memory of each worker process, from its last heartbeat.",
        ((_labels(worker=w["name"]), w["memory"] or 0) for w in workers),
    )
    metric("celeriac_clients", "gauge", "Connected clients.", [("", info.get("clients", 0))])
    metric(
        "celeriac_periodic_runs_total",
        "counter",
        "Runs each periodic job has started.",
        ((_labels(job=j["name"]), j["runs"]) for j in jobs),
    )
    metric(
        "celeriac_periodic_skipped_total",
        "counter",
        "Runs each periodic job has skipped (misfired or overlapping).",
        ((_labels(job=j["name"]), j["skipped"]) for j in jobs),
    )
    metric(
        "celeriac_periodic_next_run_timestamp_seconds",
        "gauge",
        "When each periodic job runs next (Unix time); absent while paused or finished.",
        (
            (_labels(job=j["name"]), _timestamp(j["next_run"]))
            for j in jobs
            if j.get("next_run") and not j.get("paused")
        ),
    )
    metric(
        "celeriac_snapshot_timestamp_seconds",
        "gauge",
        "When the scheduler took the snapshot these metrics come from (Unix time).",
        [("", snapshot.get("time", 0))],
    )
    return "\n".join(lines) + "\n"


def _labels(**labels: Any) -> str:
    def escape(value: Any) -> str:
        return str(value).replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")

    return "{" + ",".join(f'{k}="{escape(v)}"' for k, v in labels.items()) + "}"


def _number(value: Any) -> str:
    return repr(float(value)) if isinstance(value, float) else str(int(value))


def _timestamp(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()
