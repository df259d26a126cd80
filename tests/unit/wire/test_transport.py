"""Socket helpers every process uses: multipart send/receive and the busy poll."""

from __future__ import annotations

import time

import pytest

from celeriac.wire.transport import busy_poll

pytestmark = pytest.mark.timeout(10)


def test_busy_poll_sees_readiness_without_sleeping() -> None:
    answers = iter([False, False, True])
    assert busy_poll(lambda: next(answers), time.perf_counter() + 60)
    assert next(answers, "used up") == "used up"  # asked exactly until it came true


def test_busy_poll_gives_up_at_its_deadline() -> None:
    asked = []
    assert not busy_poll(lambda: asked.append(1) is not None, time.perf_counter() + 0.001)
    assert len(asked) >= 1
    assert busy_poll(lambda: True, time.perf_counter() - 1)  # ready beats an expired deadline
