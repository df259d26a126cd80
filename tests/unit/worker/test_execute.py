"""run_task: payloads in, one outcome message out (no sockets, no processes)."""

from __future__ import annotations

import pytest

from celeriac.errors import ResultTooLarge
from celeriac.wire.serialize import LoadedFunctions, dumps, dumps_plain, loads, loads_exception
from celeriac.worker.execute import RunRequest, run_task


def _request(fn, *args) -> RunRequest:
    return RunRequest(
        key="k-1", name="k", function=[dumps(fn)[0]], args=dumps_plain((args, {})), deps={}
    )


def test_a_result_within_the_limit_is_done() -> None:
    out = run_task(_request(bytes, 1000), LoadedFunctions(), max_result_bytes=2000)
    assert out.op == "task-done" and loads(out.payloads[0]) == bytes(1000)


def test_a_result_over_the_limit_fails_with_both_sizes() -> None:
    out = run_task(_request(bytes, 5000), LoadedFunctions(), max_result_bytes=2000)
    assert (out.op, out["key"], out["kind"]) == ("task-failed", "k-1", "serialize")
    error = loads_exception(out.payloads[0])
    assert isinstance(error, ResultTooLarge)
    assert "takes 50" in str(error) and "limit of 2000 bytes" in str(error)
    with pytest.raises(ResultTooLarge):
        raise error
