"""Every call that waits honours its timeout, and what it waited for still arrives after."""

from __future__ import annotations

from pathlib import Path

import pytest

import tasks_for_tests as t
from celeriac import App, Client, TimeoutError, as_completed, wait

#: Long enough that a timeout cannot be mistaken for the task finishing.
SHORT = 0.3


@pytest.mark.timeout(60)
def test_waiting_calls_time_out_then_the_results_arrive(client: Client, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    blocked = client.submit(t.wait_for_file, str(gate))
    done_one = client.submit(t.inc, 1)
    assert done_one.result(timeout=10) == 2

    with pytest.raises(TimeoutError):
        blocked.result(timeout=SHORT)
    with pytest.raises(TimeoutError):
        blocked.exception(timeout=SHORT)
    with pytest.raises(TimeoutError):
        client.gather([done_one, blocked], timeout=SHORT)
    with pytest.raises(TimeoutError):
        list(as_completed([blocked], timeout=SHORT))
    # like concurrent.futures.wait: what is done by then, no exception
    done, not_done = wait([done_one, blocked], timeout=SHORT)
    assert (done, not_done) == ({done_one}, {blocked})

    gate.touch()
    assert isinstance(blocked.result(timeout=20), int)  # the task was never disturbed
    done, not_done = wait([done_one, blocked], timeout=10)
    assert (done, not_done) == ({done_one, blocked}, set())


@pytest.mark.timeout(60)
def test_async_result_get_times_out_then_arrives(client: Client, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    with App(client.address) as app:
        result = app.task(t.wait_for_file).delay(str(gate))
        with pytest.raises(TimeoutError):
            result.get(timeout=SHORT)
        assert not result.ready()
        gate.touch()
        assert isinstance(result.get(timeout=20), int)
