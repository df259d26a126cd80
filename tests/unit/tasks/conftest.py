"""Shared by the front door's unit tests: an app on a fake engine; no current app left behind."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from celeriac import App
from celeriac.client.engine import Submission
from celeriac.tasks import current


class SendingEngine:
    """Just enough of an ``Engine`` for sending: keys, and every batch enqueued."""

    def __init__(self) -> None:
        self.sent: list[Submission] = []
        self._counter = itertools.count()

    def new_key(self, name: str) -> str:
        return f"{name}-{next(self._counter)}"

    def enqueue(
        self, submissions: Sequence[Submission], *, timeout: float | None = None, hold: bool = False
    ) -> list[Any]:
        self.sent.extend(submissions)
        return []

    def close(self) -> None:
        pass


@pytest.fixture(autouse=True)
def no_current_app_left_behind() -> Iterator[None]:
    """Each test starts with no current app and leaves none (apps become current when made)."""
    current.set_current_app(None)
    yield
    current.set_current_app(None)


@pytest.fixture
def sending() -> SendingEngine:
    return SendingEngine()


@pytest.fixture
def make_app(sending: SendingEngine) -> Any:
    """``make_app(**settings)``: an app whose sends land in ``sending.sent``."""

    def make(*args: Any, **settings: Any) -> App:
        app = App(*args or ("tcp://127.0.0.1:1",), **settings)
        app._client = sending  # type: ignore[assignment]  # the seam: anything with Engine's methods
        return app

    return make
