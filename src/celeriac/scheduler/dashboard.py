"""The scheduler's web dashboard: a page, a JSON API and Prometheus metrics.

Served from a thread of the scheduler process.  It never touches the state
machine: it reads the snapshot the scheduler loop rebuilds once a second, so
serving it costs the task path nothing but that snapshot.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger("celeriac.dashboard")

Snapshot = Callable[[], dict[str, Any]]


class Dashboard:
    def __init__(self, host: str, port: int, snapshot: Snapshot) -> None:
        handler = type("Handler", (_Handler,), {"snapshot": staticmethod(snapshot)})
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        bound_host, bound_port = self._server.server_address[:2]
        host_text = bound_host.decode() if isinstance(bound_host, bytes) else bound_host
        self.address = f"http://{host_text}:{bound_port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="celeriac-dashboard", daemon=True
        )

    def start(self) -> None:
        self._thread.start()
        log.info("dashboard at %s", self.address)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _Handler(BaseHTTPRequestHandler):
    snapshot: Snapshot

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/api/status":
            self._reply(200, "application/json", json.dumps(self.snapshot()).encode())
        elif path == "/metrics":
            self._reply(200, "text/plain; version=0.0.4", prometheus(self.snapshot()).encode())
        elif path == "/":
            self._reply(200, "text/html; charset=utf-8", PAGE.encode())
        else:
            self._reply(404, "text/plain", b"not found\n")

    def _reply(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)


def prometheus(snapshot: dict[str, Any]) -> str:
    """The snapshot as Prometheus text exposition format."""
    info = snapshot.get("info", {})
    lines = [
        "# TYPE celeriac_tasks_total counter",
        *(
            f'celeriac_tasks_total{{outcome="{name}"}} {value}'
            for name, value in info.get("counters", {}).items()
        ),
        "# TYPE celeriac_tasks gauge",
        *(
            f'celeriac_tasks{{state="{state}"}} {count}'
            for state, count in info.get("by_state", {}).items()
        ),
        "# TYPE celeriac_queue_depth gauge",
        *(f'celeriac_queue_depth{{queue="{q}"}} {n}' for q, n in info.get("queues", {}).items()),
        "# TYPE celeriac_workers gauge",
        f"celeriac_workers {len(info.get('workers', []))}",
        "# TYPE celeriac_worker_memory_bytes gauge",
        *(
            f'celeriac_worker_memory_bytes{{worker="{w["name"]}"}} {w["memory"]}'
            for w in info.get("workers", [])
        ),
    ]
    return "\n".join(lines) + "\n"


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Celeriac</title></head>
<body><h1>Celeriac</h1><pre id="status">loading…</pre>
<script>
async function refresh() {
  const response = await fetch("/api/status");
  document.getElementById("status").textContent = JSON.stringify(await response.json(), null, 2);
}
refresh(); setInterval(refresh, 1000);
</script></body></html>
"""
