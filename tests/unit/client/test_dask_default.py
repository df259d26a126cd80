"""Open clients as Dask's default scheduler: stacked, and undone on close in any order."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

dask = pytest.importorskip("dask")

from celeriac.client.dask_default import become_default, stop_being_default  # noqa: E402


class FakeClient:
    def get(self, dsk: Any, keys: Any, **kwargs: Any) -> Any:
        return ("ran on", self)


@pytest.fixture(autouse=True)
def no_scheduler_set() -> Iterator[None]:
    with dask.config.set(scheduler=None):
        yield


def current() -> Any:
    return getattr(dask.config.get("scheduler", None), "__self__", None)


def test_the_last_opened_is_the_default_and_closing_restores() -> None:
    a, b = FakeClient(), FakeClient()
    assert become_default(a) and current() is a
    assert become_default(b) and current() is b
    stop_being_default(b)
    assert current() is a
    stop_being_default(a)
    assert dask.config.get("scheduler", None) is None


def test_closing_out_of_order_never_restores_a_closed_client() -> None:
    a, b, c = FakeClient(), FakeClient(), FakeClient()
    for client in (a, b, c):
        become_default(client)
    stop_being_default(b)  # in the middle: c stays the default
    assert current() is c
    stop_being_default(c)
    assert current() is a
    stop_being_default(a)
    assert dask.config.get("scheduler", None) is None


def test_a_value_set_since_is_left_alone() -> None:
    a = FakeClient()
    become_default(a)
    dask.config.set(scheduler="sync")
    stop_being_default(a)
    assert dask.config.get("scheduler") == "sync"
    stop_being_default(a)  # twice: nothing to undo


def test_dask_get_scheduler_finds_the_default() -> None:
    from dask.base import get_scheduler

    a = FakeClient()
    become_default(a)
    try:
        assert get_scheduler()({}, []) == ("ran on", a)
    finally:
        stop_being_default(a)
