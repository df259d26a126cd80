"""``celeriac inspect`` (alias ``status``): what the scheduler sees, as text tables or JSON."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from celeriac.cli.settings import InspectSettings, Invocation

log = logging.getLogger("celeriac")

#: Exit status of ``inspect`` when no scheduler answers: health checks key on it.
UNREACHABLE = 2


def run_inspect(settings: InspectSettings, invocation: Invocation) -> int:
    """Print what the scheduler at ``settings.address`` sees; :data:`UNREACHABLE` if it does
    not answer within ``settings.timeout``.  ``invocation`` is unused (every command takes it)."""
    from celeriac.client import Client
    from celeriac.errors import SchedulerUnavailable

    try:
        with Client(settings.address, timeout=settings.timeout, keys=settings.keys) as client:
            info = client.scheduler_info(timeout=settings.timeout)
    except SchedulerUnavailable as exc:
        log.error("%s", exc)
        return UNREACHABLE
    except ValueError as exc:  # a malformed address
        log.error("%s", exc)
        return UNREACHABLE
    if settings.json:
        print(json.dumps(info, indent=2, sort_keys=True, default=str))
    else:
        print(format_info(info, time.time()))
    return 0


def format_info(info: dict[str, Any], now: float) -> str:
    """The ``inspect`` report: one titled table per part of the scheduler's info."""
    workers = _worker_rows(info, now)
    parts = [
        _headline(info),
        _section(f"workers ({len(workers)})", workers),
        _section("queues", _queue_rows(info, now)),
        _section("tasks by state", _state_rows(info)),
        _section("periodic jobs", _periodic_rows(info)),
    ]
    if "failures" in info:
        parts.append(_section("recent failures", _failure_rows(info, now)))
    return "\n\n".join(parts)


def table(rows: list[dict[str, object]], columns: list[str]) -> str:
    """``rows`` as left-aligned columns under a header line, two spaces apart."""
    cells = [columns] + [[str(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    return "\n".join(
        "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells
    )


def _headline(info: dict[str, Any]) -> str:
    about = info.get("scheduler", {})
    head = (
        f"scheduler {about.get('address', '?')}{_also(about)}  pid {about.get('pid', '?')}  "
        f"tasks {info.get('tasks', 0)}  clients {info.get('clients', 0)}"
    )
    counters = info.get("counters", {})
    if counters:
        head += "\n" + "  ".join(f"{k} {v}" for k, v in sorted(counters.items()))
    return head


def _worker_rows(info: dict[str, Any], now: float) -> list[dict[str, Any]]:
    return [
        {
            "name": w.get("name"),
            "pid": w.get("pid"),
            "slots": w.get("slots"),
            "running": w.get("running", "-"),
            "assigned": w.get("assigned"),
            "memory": _mib(w.get("memory")),
            # kept results in memory / spilled to disk (between hosts), and the rest of its RSS
            "kept": f"{_mib(w.get('managed'))} / {_mib(w.get('spilled'))}",
            "unmanaged": _mib(max(0, (w.get("memory") or 0) - (w.get("managed") or 0))),
            "paused": "yes" if w.get("paused") else "",
            "heartbeat": _ago(w.get("last_seen"), now),
            "queues": ",".join(w.get("queues", [])),
        }
        for w in info.get("workers", [])
    ]


def _queue_rows(info: dict[str, Any], now: float) -> list[dict[str, Any]]:
    oldest = info.get("queue_oldest", {})
    return [
        {"queue": name, "depth": depth, "oldest waiting": _ago(oldest.get(name), now)}
        for name, depth in sorted(info.get("queues", {}).items())
    ]


def _state_rows(info: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"state": k, "count": v} for k, v in sorted(info.get("by_state", {}).items())]


def _periodic_rows(info: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {k: job.get(k) for k in ("name", "schedule", "next_run", "last_run", "last_status")}
        | {"paused": "yes" if job.get("paused") else ""}
        for job in info.get("periodic", [])
    ]


def _failure_rows(info: dict[str, Any], now: float) -> list[dict[str, Any]]:
    return [
        {
            "when": _ago(f.get("time"), now),
            "name": f.get("name"),
            "id": f.get("key"),
            "error": _last_line(f.get("text", "")),
        }
        for f in reversed(info["failures"][-10:])
    ]


def _section(title: str, rows: list[dict[str, Any]]) -> str:
    if not rows:
        return f"{title}: none"
    return f"{title}:\n" + table([{k: _cell(v) for k, v in r.items()} for r in rows], list(rows[0]))


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def _mib(value: Any) -> str:
    return f"{value / (1 << 20):.0f} MiB" if isinstance(value, int | float) and value else "-"


def _ago(when: Any, now: float) -> str:
    if not isinstance(when, int | float):
        return "-"
    return f"{max(0.0, now - when):.1f}s ago"


def _last_line(text: str) -> str:
    lines = [line for line in str(text).strip().splitlines() if line.strip()]
    return lines[-1][:120] if lines else ""


def _also(about: dict[str, Any]) -> str:
    return f" and {about['ipc_address']}" if "ipc_address" in about else ""
