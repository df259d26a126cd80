"""Chains, groups and chords, built on the engine's dependency graph.

Every step is submitted at once, with references (``TaskRef``) to the
results it needs: the scheduler starts each one when its inputs exist.
Nothing polls, and no worker waits for another task.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from celeriac.tasks.result import AsyncResult, GroupResult
from celeriac.wire.refs import TaskRef

if TYPE_CHECKING:
    from celeriac.tasks.app import App, Task
    from celeriac.wire.protocol import Message

R = TypeVar("R")


class Signature(Generic[R]):
    """A task with (partial) arguments: ``add.s(2)``."""

    def __init__(
        self,
        task: Task[Any, R],
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        immutable: bool = False,
    ) -> None:
        self.task = task
        self.args = args
        self.kwargs = kwargs or {}
        self.immutable = immutable

    @property
    def app(self) -> App:
        return self.task.app

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult[R]:
        return self.apply_async(args, kwargs)

    def apply_async(
        self, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None, **options: Any
    ) -> AsyncResult[R]:
        return self.task.apply_async(
            (*args, *self.args), {**self.kwargs, **(kwargs or {})}, **options
        )

    def message(self, previous: Any = None) -> Message:
        """The submit message; ``previous`` (a ref, or list of refs) goes first, as in Celery."""
        args = self.args if previous is None or self.immutable else (previous, *self.args)
        return self.task.message(args, self.kwargs)

    def __or__(self, other: Signature[Any]) -> Chain:
        return Chain(self, other)

    def __repr__(self) -> str:
        return f"{self.task.name}.s{self.args!r}"


class Chain:
    """``chain(a.s(1), b.s(), c.s())``: each result is the first argument of the next."""

    def __init__(self, *steps: Signature[Any]) -> None:
        if not steps:
            raise ValueError("a chain needs at least one signature")
        for step in steps:
            if not isinstance(step, Signature):
                raise TypeError(
                    f"a chain takes signatures, not {type(step).__name__}: "
                    "for a group followed by a task use chord(group, task)"
                )
        self.steps = steps

    def apply_async(self) -> AsyncResult[Any]:
        messages, previous = [], None
        for step in self.steps:
            msg = step.message(previous)
            messages.append(msg)
            previous = TaskRef(msg.fields["key"])
        app = self.steps[0].app
        app.client._submit_detached(messages, app.timeout)
        return AsyncResult(messages[-1].fields["key"], app=app)

    delay = apply_async

    def __or__(self, other: Signature[Any]) -> Chain:
        return Chain(*self.steps, other)


class Group:
    """``group(add.s(i, i) for i in range(10))``: run in parallel."""

    def __init__(self, *signatures: Signature[Any] | Iterable[Signature[Any]]) -> None:
        if len(signatures) == 1 and not isinstance(signatures[0], Signature):
            signatures = tuple(signatures[0])
        self.signatures: tuple[Signature[Any], ...] = signatures  # type: ignore[assignment]

    def messages(self) -> list[Message]:
        return [s.message() for s in self.signatures]

    def apply_async(self) -> GroupResult:
        if not self.signatures:
            return GroupResult([])
        app = self.signatures[0].app
        messages = self.messages()
        app.client._submit_detached(messages, app.timeout)
        return GroupResult([AsyncResult(m.fields["key"], app=app) for m in messages])

    delay = apply_async


class Chord:
    """``chord(header_group, callback)``: the callback gets the list of header results."""

    def __init__(self, header: Group | Iterable[Signature[Any]], body: Signature[Any]) -> None:
        self.header = header if isinstance(header, Group) else Group(header)
        self.body = body

    def apply_async(self) -> AsyncResult[Any]:
        messages = self.header.messages()
        refs = [TaskRef(m.fields["key"]) for m in messages]
        messages.append(self.body.message(refs))
        app = self.body.app
        app.client._submit_detached(messages, app.timeout)
        return AsyncResult(messages[-1].fields["key"], app=app)

    delay = apply_async


def chain(*steps: Signature[Any]) -> Chain:
    return Chain(*steps)


def group(*signatures: Signature[Any] | Iterable[Signature[Any]]) -> Group:
    return Group(*signatures)


def chord(header: Group | Iterable[Signature[Any]], body: Signature[Any]) -> Chord:
    return Chord(header, body)
