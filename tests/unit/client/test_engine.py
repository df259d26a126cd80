"""The engine seam: ``Client`` offers every method of the ``Engine`` protocol, as declared."""

from __future__ import annotations

import inspect

import pytest

from celeriac.client import Client
from celeriac.client.engine import Engine, RunOptions, Submission

ENGINE_METHODS = sorted(
    name for name, value in vars(Engine).items() if inspect.isfunction(value) and name[0] != "_"
)


def test_the_engine_is_small() -> None:
    assert ENGINE_METHODS == [
        "close",
        "enqueue",
        "forget",
        "future_for",
        "new_key",
        "revoke",
        "set_periodic",
        "status",
    ]


@pytest.mark.parametrize("name", ENGINE_METHODS)
def test_client_implements_the_engine_method_with_its_signature(name: str) -> None:
    def shape(fn: object) -> list[tuple[str, object, object]]:
        params = inspect.signature(fn).parameters.values()  # type: ignore[arg-type]
        return [(p.name, p.kind, p.default) for p in params]

    assert shape(getattr(Client, name)) == shape(getattr(Engine, name))
    assert getattr(Client, name).__doc__, f"Client.{name} needs a docstring"


def test_a_submission_defaults_to_the_schedulers_defaults() -> None:
    submission = Submission(fn=print, key="k", name="print")
    assert (submission.args, submission.kwargs) == ((), {})
    assert submission.eta is None and submission.expires is None
    options = submission.options
    assert options == RunOptions()
    assert (options.queue, options.priority, options.retries) == ("default", 0, 0)
    unset = ("retry_on_error", "retry_jitter", "backoff_max", "result_ttl", "time_limit")
    assert all(getattr(options, name) is None for name in unset)
    assert not options.retry_backoff and not options.ignore_result
