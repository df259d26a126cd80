"""Sending after the database commits: ``delay_on_commit`` and ``apply_async_on_commit``.

A web view that writes a row and sends a task about it must not let the task
run before the row is committed.  With Django importable and configured
(:func:`~celeriac.tasks.discovery.django_settings`), :func:`on_commit` hands
the send to Django's ``transaction.on_commit``: it happens when the current
transaction commits (at once outside one, in autocommit), and never if it
rolls back.  Without Django there is no transaction to wait for, so the send
happens now.  Django stays optional: nothing here imports it unless asked.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from celeriac.tasks.discovery import django_settings


def on_commit(send: Callable[[], object]) -> None:
    """Call ``send`` once the current Django transaction commits, or now without Django.

    Parameters:
        send: what to do (a ``functools.partial`` of ``delay``/``apply_async``).
    """
    if django_settings() is None:
        send()
        return
    importlib.import_module("django.db.transaction").on_commit(send)


__all__ = ["on_commit"]
