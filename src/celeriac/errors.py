"""Exceptions users catch."""

from __future__ import annotations

from concurrent.futures import CancelledError, TimeoutError

__all__ = [
    "CancelledError",
    "FutureLostError",
    "KilledWorker",
    "SchedulerUnavailable",
    "TimeoutError",
]


class KilledWorker(Exception):
    """The task was running on workers that died too often; it is not retried again."""


class FutureLostError(Exception):
    """The scheduler no longer knows this key (released, or lost in a restart)."""


class SchedulerUnavailable(ConnectionError):
    """No scheduler answered at the address within the timeout."""
