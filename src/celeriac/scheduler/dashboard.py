"""The scheduler's web dashboard: a page, a JSON API and Prometheus metrics.

Served from a thread of the scheduler process.  It never touches the state
machine: it reads the snapshot the scheduler loop rebuilds once a second, so
serving it costs the task path nothing but that snapshot.

Routes:

* ``/`` -- the page (``dashboard.html``, package data: vanilla JS and inline
  SVG, no network); it polls ``/api/status`` every second;
* ``/api/status`` -- the snapshot as JSON (see docs/monitoring.md);
* ``/metrics`` -- the snapshot in the Prometheus text exposition format.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import importlib.resources
import json
import logging
import re
import threading
from collections.abc import Callable, Iterable
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from celeriac.states import TaskState
from celeriac.wire.addresses import is_loopback

log = logging.getLogger("celeriac.dashboard")

Snapshot = Callable[[], dict[str, Any]]


class Dashboard:
    """The web page, JSON status and ``/metrics``, served on ``host``:``port`` from a thread.

    ``snapshot`` returns the data to show (the server refreshes it each loop
    turn); the server never waits on a request.  Nothing binds until made;
    nothing is served until :meth:`start`.
    """

    def __init__(self, host: str, port: int, snapshot: Snapshot) -> None:
        handler = type(
            "Handler",
            (_Handler,),
            {"snapshot": staticmethod(snapshot), "check_host": is_loopback(host)},
        )
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        bound_host, bound_port = self._server.server_address[:2]
        host_text = bound_host.decode() if isinstance(bound_host, bytes | bytearray) else bound_host
        self.address = f"http://{_url_host(host_text)}:{bound_port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="celeriac-dashboard", daemon=True
        )

    def start(self) -> None:
        """Serve from a daemon thread."""
        self._thread.start()
        log.info("dashboard at %s", self.address)

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()


class _Handler(BaseHTTPRequestHandler):
    snapshot: Snapshot
    #: Bound to loopback: answer only requests addressed to a loopback name, so
    #: a web page elsewhere cannot read the dashboard through DNS rebinding.
    check_host: bool

    def do_GET(self) -> None:
        if self.check_host and not _loopback_host_header(self.headers.get("Host", "")):
            self._reply(403, "text/plain", b"forbidden: use a loopback address\n")
            return
        path = self.path.split("?", 1)[0]
        if path == "/api/status":
            self._reply(200, "application/json", json.dumps(self.snapshot()).encode())
        elif path == "/metrics":
            self._reply(200, "text/plain; version=0.0.4", prometheus(self.snapshot()).encode())
        elif path == "/":
            try:
                body, policy = page()
            except OSError as exc:  # an installation without its package data
                log.error("cannot load the dashboard page: %s", exc)
                self._reply(500, "text/plain", b"dashboard.html is missing from this install\n")
                return
            self._reply(200, "text/html; charset=utf-8", body, {"Content-Security-Policy": policy})
        else:
            self._reply(404, "text/plain", b"not found\n")

    def _reply(
        self, status: int, content_type: str, body: bytes, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _loopback_host_header(value: str) -> bool:
    host = value.strip()
    if host.startswith("["):  # [::1]:8787
        host = host[1 : host.find("]")] if "]" in host else host
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    return is_loopback(host)


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
