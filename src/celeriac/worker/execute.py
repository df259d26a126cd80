"""Running one task: payloads in, an outcome message out.  No sockets here."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from celeriac.context import TaskRequest, set_request
from celeriac.errors import MaxRetriesExceededError, ResultTooLarge, Retry
from celeriac.wire import refs
from celeriac.wire.protocol import DEFAULT_MAX_MESSAGE_BYTES, Message, Payload, nbytes
from celeriac.wire.serialize import (
    LoadedFunctions,
    SerializationError,
    dumps,
    dumps_exception,
    dumps_plain,
    format_traceback,
    loads,
)

log = logging.getLogger("celeriac.worker")


@dataclass(slots=True)
class RunRequest:
    """One task as a worker received it in a ``run`` message: what to call, with what.

    ``key`` and ``name`` identify it (``name`` is the key when the message had
    none); ``function`` is the payload whose first frame is the pickled function,
    ``args`` the payload of the pickled ``(args, kwargs)``, ``deps`` maps each
    dependency's key (what the :class:`~celeriac.wire.refs.TaskRef` objects in
    the arguments name) to the payload of its value.  ``attempt`` counts the
    retries before this run (0 at first); ``time_limit`` and ``soft_time_limit``
    are seconds, ``None`` for no limit (see :mod:`celeriac.worker.limits`).
    ``remote`` names the data server holding each dependency not in ``deps``
    (fetched into ``deps`` before the run); ``keep`` is the size above which
    the result stays in this process (0: it always goes to the scheduler).
    """

    key: str
    name: str
    function: Payload
    args: Payload
    deps: dict[str, Payload]
    attempt: int = 0
    time_limit: float | None = None
    soft_time_limit: float | None = None
    #: Dependencies kept on workers: key -> the data server to fetch it from.
    remote: dict[str, str] = field(default_factory=dict)
    #: Keep a result larger than this many bytes here and report its size (0: never).
    keep: int = 0


def run_task(
    task: RunRequest,
    functions: LoadedFunctions,
    max_result_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> Message:
    """Execute a task; return its ``task-done`` or ``task-failed`` message.

    ``functions`` caches the unpickled functions across tasks.  A failure is the
    message, not an exception: whatever the task raises (any ``BaseException``;
    :class:`~celeriac.errors.Retry` asks to run it again), or a function,
    arguments or result that will not (un)pickle (kind ``serialize``), or a
    result whose pickle is over ``max_result_bytes`` (the scheduler's message
    limit: :class:`~celeriac.errors.ResultTooLarge`, kind ``serialize``, as
    the scheduler would drop the connection on such a message).  Time limits
    are the caller's to enforce.
    """
    try:
        fn = functions.load(task.function[0])
        args, kwargs = loads(task.args)
        if task.deps:
            values = {key: loads(payload) for key, payload in task.deps.items()}
            args, kwargs = refs.resolve((args, kwargs), values)
    except Exception as exc:
        return _failed(task, "serialize", exc, f"could not load task {task.name!r}")
    start = time.perf_counter()
    set_request(TaskRequest(task.key, task.name, task.attempt))
    try:
        result = fn(*args, **kwargs)
    except BaseException as exc:  # SystemExit and KeyboardInterrupt in a task are its failure
        return _raised(task, exc, time.perf_counter() - start)
    finally:
        set_request(None)
    duration = time.perf_counter() - start
    try:
        # The C pickler for a plain result: cloudpickle's Pickler costs ten times more.
        payload = dumps_plain(result) if type(result) in refs.PLAIN_TYPES else dumps(result)
    except SerializationError as exc:
        return _failed(task, "serialize", exc, f"the result of task {task.name!r} cannot be sent")
    size = sum(nbytes(frame) for frame in payload)
    if size > max_result_bytes:
        return _too_large(task, size, max_result_bytes)
    return Message("task-done", {"key": task.key, "duration": duration}, [payload])


def _too_large(task: RunRequest, size: int, limit: int) -> Message:
    error = ResultTooLarge(
        f"the result of task {task.name!r} takes {size} bytes pickled, over the scheduler's "
        f"message limit of {limit} bytes (--max-message-size); return a smaller value, or "
        "write it to storage and return its location"
    )
    log.error("task %s: %s", task.key, error)
    return Message(
        "task-failed", _failure_fields(task, "serialize", error), [dumps_exception(error)]
    )


def _raised(task: RunRequest, exc: BaseException, duration: float) -> Message:
    """The task raised: a failure, or (``Retry``) a request to run again."""
    if isinstance(exc, Retry):
        log.info(
            "task asks to retry%s: %r", f" in {exc.countdown} s" if exc.countdown else "", exc.exc
        )
        fields = _failure_fields(task, "retry", exc)
        if exc.countdown is not None:
            fields["countdown"] = float(exc.countdown)
        reported: BaseException = exc.exc or MaxRetriesExceededError(
            f"task {task.name!r} asked to retry, but it has no retries left"
        )
    else:
        log.info("task %s (%s) raised %s: %s", task.key, task.name, type(exc).__name__, exc)
        fields = _failure_fields(task, "remote", exc)
        reported = exc
    fields["duration"] = duration
    return Message("task-failed", fields, [dumps_exception(reported)])


def _failed(task: RunRequest, kind: str, exc: BaseException, context: str) -> Message:
    error = SerializationError(f"{context}: {exc}")
    error.__cause__ = exc
    log.error("task %s: %s", task.key, error)
    return Message("task-failed", _failure_fields(task, kind, error), [dumps_exception(error)])


def _failure_fields(task: RunRequest, kind: str, exc: BaseException) -> dict[str, Any]:
    return {"key": task.key, "kind": kind, "text": format_traceback(exc)[-4000:]}
