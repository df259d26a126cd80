"""The canvas against a fake engine: how ``|`` composes, what each canvas hands to ``enqueue``.

No scheduler: the app's connection is a recording fake, so each test reads the
one batch a canvas sends (submissions, their ``TaskRef`` links, options).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from typing import Any

import pytest

from celeriac import App, GroupResult, MaxRetriesExceededError, Retry
from celeriac.client.engine import Submission
from celeriac.context import TaskRequest, set_request
from celeriac.tasks.callables import Errback, MapCall, OnFailure
from celeriac.tasks.canvas import Chain, Chord, Group, Signature, chain, chord, group, signature
from celeriac.tasks.maps import Chunks, XMap, chunks, xmap, xstarmap
from celeriac.wire.refs import TaskRef


class RecordingEngine:
    """Accepts every batch at once and keeps it; answers ``status`` from ``states``."""

    def __init__(self) -> None:
        self.batches: list[tuple[list[Submission], bool]] = []
        self.states: dict[str, str] = {}
        self.status_calls = 0
        self._counter = itertools.count()

    def new_key(self, name: str) -> str:
        return f"{name}-{next(self._counter)}"

    def enqueue(
        self, submissions: Sequence[Submission], *, timeout: float | None = None, hold: bool = False
    ) -> list[Any]:
        self.batches.append((list(submissions), hold))
        return [("held", s.key) for s in submissions] if hold else []

    def status(self, keys: list[str], timeout: float | None = None) -> dict[str, str]:
        self.status_calls += 1
        return {key: self.states.get(key, "PENDING") for key in keys}

    @property
    def only(self) -> list[Submission]:
        (batch,) = self.batches
        return batch[0]


@pytest.fixture
def engine() -> RecordingEngine:
    return RecordingEngine()


@pytest.fixture
def app(engine: RecordingEngine) -> App:
    app = App("tcp://127.0.0.1:1", timeout=3.0)
    app._client = engine  # type: ignore[assignment]  # the seam: anything with Engine's methods
    return app


def add(a: int, b: int = 0) -> int:
    return a + b


def mul(a: int, b: int) -> int:
    return a * b


def tsum(values: list[int]) -> int:
    return sum(values)


def on_failure(request: Any, exc: BaseException, traceback: str, tag: str = "") -> None:
    pass


def keys(*values: Any) -> list[str]:
    assert all(isinstance(v, TaskRef) for v in values)
    return [v.key for v in values]


@pytest.fixture
def tasks(app: App) -> Any:
    class Tasks:
        add = app.task(add, name="add")
        mul = app.task(mul, name="mul")
        tsum = app.task(tsum, name="tsum")
        errback = app.task(on_failure, name="errback")

    return Tasks


# -- how | composes -------------------------------------------------------------------


def test_pipes_compose_as_in_celery(tasks: Any) -> None:
    a, b, c = tasks.add.s(1), tasks.add.s(2), tasks.add.s(3)
    assert isinstance(a | b, Chain) and (a | b).steps == (a, b)
    flat = (a | b) | (c | a)  # chain | chain flattens
    assert isinstance(flat, Chain) and flat.steps == (a, b, c, a)
    fan_in = group(a, b) | c  # a group followed by a task is a chord
    assert isinstance(fan_in, Chord) and fan_in.header.tasks == (a, b) and fan_in.body is c
    longer = fan_in | a  # more after a chord joins its body
    assert isinstance(longer, Chord) and isinstance(longer.body, Chain)
    assert longer.body.steps == (c, a)
    fan_out = a | group(b, c)  # a group inside a chain
    assert isinstance(fan_out, Chain) and isinstance(fan_out.steps[1], Group)
    assert (a | group(b)).steps == (a, b)  # a group of one is its member
    assert (a | group()).steps == (a,)
    same = group(a, b)
    assert same | group() is same


def test_chain_of_a_group_then_a_task_holds_a_chord(tasks: Any) -> None:
    a, b, c = tasks.add.s(1), tasks.add.s(2), tasks.add.s(3)
    built = chain(a, group(b, c), tasks.tsum.s())
    assert len(built.steps) == 2 and isinstance(built.steps[1], Chord)
    assert chain(x for x in (a, b)).steps == (a, b)  # one iterable, as Celery takes it
    assert isinstance(chain, type) and isinstance(built, chain)  # Celery's names are classes


def test_a_chain_with_options_of_its_own_is_kept_whole(tasks: Any) -> None:
    inner = (tasks.add.s(1) | tasks.add.s(2)).set(queue="q")
    outer = inner | tasks.add.s(3)
    assert outer.steps[0] is inner


def test_not_a_canvas_is_refused(tasks: Any) -> None:
    with pytest.raises(TypeError, match="takes signatures"):
        chain(tasks.add.s(1), tasks.add)
    with pytest.raises(TypeError, match="takes signatures"):
        group([1, 2])
    with pytest.raises(ValueError, match="at least one"):
        chain()


# -- partial arguments ------------------------------------------------------------------


def test_call_time_arguments_go_first_in_the_first_step(
    tasks: Any, engine: RecordingEngine
) -> None:
    c = chain(tasks.add.s(4), tasks.mul.s(2))
    result = c(16)
    first, second = engine.only
    assert first.args == (16, 4)
    assert keys(second.args[0]) == [first.key] and second.args[1:] == (2,)
    assert result.id == second.key and result.parent is not None
    assert result.parent.id == first.key and result.parent.children == [result]


def test_a_groups_arguments_go_to_every_member(tasks: Any, engine: RecordingEngine) -> None:
    results = group(tasks.add.s(1), tasks.add.si(5, 5), tasks.add.s(b=2))(10)
    assert [s.args for s in engine.only] == [(10, 1), (5, 5), (10,)]
    assert engine.only[2].kwargs == {"b": 2}
    assert isinstance(results, GroupResult) and len(results) == 3


def test_a_signature_called_runs_here(tasks: Any, engine: RecordingEngine) -> None:
    assert tasks.add.s(2)(3) == 5 and tasks.add.si(2, 2)(100) == 4
    assert engine.batches == []


# -- set, clone, signature() -------------------------------------------------------------


def test_set_changes_in_place_and_clone_copies(tasks: Any) -> None:
    sig = tasks.add.s(1)
    assert sig.set(queue="fast", countdown=5) is sig and sig.options == {
        "queue": "fast",
        "countdown": 5,
    }
    copy = sig.clone((2,), {"b": 3}, priority=9)
    assert (copy.args, copy.kwargs) == ((2, 1), {"b": 3})
    assert copy.options == {"queue": "fast", "countdown": 5, "priority": 9}
    assert sig.args == (1,) and "priority" not in sig.options
    fixed = tasks.add.si(1).clone((2,))
    assert fixed.args == (1,) and fixed.immutable
    assert tasks.add.s(1).set(immutable=True).immutable
    linked = sig.clone()
    linked.link(tasks.add.s())
    assert "link" not in sig.options  # the copy's link list is its own


def test_unknown_options_are_a_type_error(tasks: Any) -> None:
    with pytest.raises(TypeError, match="'routing_key'"):
        tasks.add.s(1).set(routing_key="x")
    with pytest.raises(TypeError, match="'serializer'"):
        tasks.add.s(1).apply_async(serializer="json")


def test_signature_by_task_by_name_or_from_a_signature(app: App, tasks: Any) -> None:
    sig = signature(tasks.add, (1,), {"b": 2}, countdown=3)
    assert (sig.task, sig.args, sig.kwargs, sig.options) == (
        tasks.add,
        (1,),
        {"b": 2},
        {"countdown": 3},
    )
    by_name = signature("add", args=(1,), app=app, immutable=True)
    assert by_name.task is tasks.add and by_name.immutable and by_name.name == "add"
    assert signature(sig, (0,)).args == (0, 1)
    assert signature("add").task is tasks.add  # no app=: the current app, the one made last
    with pytest.raises(LookupError, match="no task named 'nope'"):
        signature("nope", app=app)


# -- options in what is sent -------------------------------------------------------------


def test_a_signatures_options_reach_its_submission(tasks: Any, engine: RecordingEngine) -> None:
    before = time.time()
    result = tasks.add.s(1, 2).set(queue="q", priority=3, countdown=10, expires=60).delay()
    (one,) = engine.only
    assert (one.options.queue, one.options.priority) == ("q", 3)
    assert one.eta is not None and before + 10 <= one.eta <= time.time() + 10
    assert one.expires is not None and before + 60 <= one.expires <= time.time() + 60
    assert engine.batches[0][1] is True and result._held == ("held", one.key)  # pushed to it
    assert tasks.add.s(1, 2).apply_async(task_id="mine").id == "mine"


def test_a_canvas_passes_its_options_down_and_members_keep_their_own(
    tasks: Any, engine: RecordingEngine
) -> None:
    canvas = group(tasks.add.s(1), tasks.add.s(2).set(queue="own")) | tasks.tsum.s()
    result = canvas.apply_async(queue="all", task_id="final")
    a, b, body = engine.only
    assert [s.options.queue for s in (a, b, body)] == ["all", "own", "all"]
    assert result.id == body.key == "final"
    assert engine.batches[0][1] is False  # a canvas's outcomes are asked for by id
    assert group(tasks.add.s(1)).apply_async(task_id="g").id == "g"


def test_an_expiry_bounds_when_a_canvas_starts_not_its_later_steps(
    tasks: Any, engine: RecordingEngine
) -> None:
    chain(tasks.add.s(1, 1), tasks.add.s(2)).apply_async(expires=30, queue="q")
    chord([tasks.add.s(1, 1)], tasks.tsum.s()).apply_async(expires=30)
    (first, second), _ = engine.batches[0]
    (header, body), _ = engine.batches[1]
    assert first.expires is not None and header.expires is not None
    assert second.expires is None and body.expires is None  # they wait; they do not expire
    assert second.options.queue == "q"


# -- what a chord and a nested canvas send -------------------------------------------


def test_a_chord_body_gets_the_header_list_and_its_parent_is_the_header(
    tasks: Any, engine: RecordingEngine
) -> None:
    result = chord([tasks.add.s(1, 1), tasks.add.s(2, 2)])(tasks.tsum.s())
    a, b, body = engine.only
    (header_refs,) = body.args
    assert keys(*header_refs) == [a.key, b.key]
    assert isinstance(result.parent, GroupResult)
    assert [r.id for r in result.parent] == [a.key, b.key]
    with pytest.raises(TypeError, match="needs a body"):
        chord([tasks.add.s(1, 1)]).apply_async()


def test_a_group_inside_a_chain_fans_out_and_back_in(tasks: Any, engine: RecordingEngine) -> None:
    canvas = tasks.add.s(1, 1) | group(tasks.add.s(10), tasks.add.s(20)) | tasks.tsum.s()
    result = canvas.delay()
    first, x, y, body = engine.only
    assert keys(x.args[0]) == keys(y.args[0]) == [first.key]
    assert keys(*body.args[0]) == [x.key, y.key]
    assert result.id == body.key
    header = result.parent
    assert isinstance(header, GroupResult) and header.parent is not None
    assert header.parent.id == first.key and [c.id for c in header.parent.children] == [
        x.key,
        y.key,
    ]


def test_groups_in_groups_are_flattened(tasks: Any, engine: RecordingEngine) -> None:
    results = group(tasks.add.s(1, 1), group(tasks.add.s(2, 2), tasks.add.s(3, 3))).delay()
    assert [r.id for r in results] == [s.key for s in engine.only] and len(results) == 3


def test_a_chain_in_a_group_gives_its_last_result(tasks: Any, engine: RecordingEngine) -> None:
    results = group(tasks.add.s(1, 1) | tasks.add.s(1), tasks.add.s(5, 5)).delay()
    _, second, other = engine.only
    assert [r.id for r in results] == [second.key, other.key]


# -- link and link_error ------------------------------------------------------------------


def test_a_link_is_a_task_fed_the_parents_result(tasks: Any, engine: RecordingEngine) -> None:
    sig = tasks.add.s(1, 1)
    assert sig.link(tasks.add.s(100)) is not sig  # returns the callback, as Celery does
    sig.link(tasks.add.si(7, 7))
    result = sig.delay()
    parent, callback, fixed = engine.only
    assert keys(callback.args[0]) == [parent.key] and callback.args[1:] == (100,)
    assert fixed.args == (7, 7)
    assert [c.id for c in result.children] == [callback.key, fixed.key]
    assert result.children[0].parent is result


def test_links_on_a_chain_go_after_its_last_step(tasks: Any, engine: RecordingEngine) -> None:
    (tasks.add.s(1, 1) | tasks.add.s(2)).apply_async(link=tasks.add.s(3))
    _, last, callback = engine.only
    assert keys(callback.args[0]) == [last.key]


def test_a_link_after_a_group_is_refused(tasks: Any) -> None:
    with pytest.raises(TypeError, match="use a chord"):
        group(tasks.add.s(1, 1)).link(tasks.add.s())
    with pytest.raises(TypeError, match="use a chord"):
        group(tasks.add.s(1, 1), tasks.add.s(2, 2)).apply_async(link=tasks.add.s())


def test_link_error_wraps_every_task_it_covers(tasks: Any, engine: RecordingEngine) -> None:
    errback = tasks.errback.s("tag")
    canvas = chord([tasks.add.s(1, 1), tasks.add.s(2, 2)], tasks.tsum.s())
    assert canvas.on_error(errback) is canvas
    canvas.delay()
    assert all(isinstance(s.fn, OnFailure) for s in engine.only)
    for submission in engine.only:
        errbacks = submission.fn.errbacks  # type: ignore[attr-defined]
        assert [(e.name, e.args) for e in errbacks] == [("errback", ("tag",))]
    assert engine.only[0].fn(1, 2) == 3  # the task's own call, inside


def test_an_errback_that_cannot_take_request_exc_traceback_is_refused(tasks: Any) -> None:
    with pytest.raises(TypeError, match="request, exc, traceback"):
        tasks.add.s(1).link_error(tasks.add.s())
    tasks.add.s(1).link_error(tasks.add.si(1, 2))  # immutable: its own arguments only
    with pytest.raises(TypeError, match="signature"):
        tasks.add.s(1).link_error(tasks.errback.s() | tasks.add.s())


def test_on_failure_runs_errbacks_only_on_a_final_failure() -> None:
    seen: list[tuple[Any, ...]] = []

    def record(request: TaskRequest, exc: BaseException, text: str, tag: str) -> None:
        seen.append((request.id, type(exc).__name__, "ValueError" in text, tag))

    def fail(kind: type[BaseException]) -> None:
        raise kind("boom")

    errback = Errback("record", record, ("t",))
    wrapped = OnFailure(fail, [errback], retries=1)
    set_request(TaskRequest("task-1", "fail", 0))
    try:
        with pytest.raises(ValueError):
            wrapped(ValueError)
        assert seen == [("task-1", "ValueError", True, "t")]
        seen.clear()
        retrying = OnFailure(lambda: (_ for _ in ()).throw(Retry()), [errback], retries=1)
        with pytest.raises(Retry):
            retrying()  # a retry is left: the scheduler runs it again
        assert seen == []
        set_request(TaskRequest("task-1", "fail", 1))
        with pytest.raises(Retry):
            retrying()
        assert seen[0][1] == MaxRetriesExceededError.__name__
    finally:
        set_request(None)


def test_an_errback_that_raises_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    def broken(*args: Any) -> None:
        raise RuntimeError("errback broke")

    Errback("broken", broken).run(TaskRequest("t", "n", 0), ValueError("x"), "")
    assert "errback broken raised" in caplog.text


# -- map, starmap, chunks -----------------------------------------------------------------


def test_map_and_starmap_are_one_task_each(tasks: Any, engine: RecordingEngine) -> None:
    mapped = xmap(tasks.add, [1, 2, 3])
    assert isinstance(mapped, XMap) and mapped() == [1, 2, 3]  # run here
    mapped.delay()
    xstarmap(tasks.add, [(1, 2), (3, 4)]).delay()
    (one,) = engine.batches[0][0]
    (two,) = engine.batches[1][0]
    assert (one.name, one.args) == ("celeriac.map", ([1, 2, 3],))
    assert (two.name, two.args) == ("celeriac.starmap", ([(1, 2), (3, 4)],))
    assert one.fn([1, 2]) == [1, 2] and two.fn([(1, 2)]) == [3]
    assert MapCall(add, star=True)([(2, 3)]) == [5]
    job = xmap(tasks.add, [1]).set(queue="q").submission(task_id="job")  # a periodic job's runs
    assert (job.key, job.name, job.args, job.options.queue) == ("job", "celeriac.map", ([1],), "q")


def test_chunks_are_a_group_of_starmaps(tasks: Any, engine: RecordingEngine) -> None:
    parts = chunks(tasks.add, [(i, i) for i in range(5)], 2)
    assert isinstance(parts, Chunks) and isinstance(parts.group(), Group)
    result = parts.delay()
    assert [s.args[0] for s in engine.only] == [[(0, 0), (1, 1)], [(2, 2), (3, 3)], [(4, 4)]]
    assert len(result) == 3
    with pytest.raises(ValueError, match="at least one"):
        chunks(tasks.add, [], 0)


# -- results -----------------------------------------------------------------------------


def test_group_result_questions_take_one_status_call(tasks: Any, engine: RecordingEngine) -> None:
    results = group(tasks.add.s(i, i) for i in range(3)).delay()
    ids = [r.id for r in results]
    engine.states.update({ids[0]: "SUCCESS", ids[1]: "FAILURE"})
    assert results.completed_count() == 1 and engine.status_calls == 1
    assert results.failed() and results.waiting() and not results.ready()
    assert not results.successful()
    engine.states.update(dict.fromkeys(ids, "SUCCESS"))
    assert results.successful() and results.ready() and not results.waiting()
    assert GroupResult([]).ready() and GroupResult([]).join() == []


def test_a_canvas_sends_to_one_scheduler(tasks: Any) -> None:
    other = App("tcp://127.0.0.1:2")
    stray = other.task(add, name="add")
    other._client = RecordingEngine()  # type: ignore[assignment]
    with pytest.raises(ValueError, match="one scheduler"):
        group(tasks.add.s(1, 1), stray.s(1, 1)).delay()


def test_reprs_read_like_the_canvas(tasks: Any) -> None:
    assert repr(tasks.add.s(1, b=2)) == "add.s(1, b=2)"
    assert repr(tasks.add.si(1) | tasks.mul.s(2)) == "add.si(1) | mul.s(2)"
    assert repr(group(tasks.add.s(1)) | tasks.tsum.s()) == "chord(group([add.s(1)]), tsum.s())"
    assert isinstance(tasks.add.s(), Signature)


def test_a_tasks_own_map_starmap_chunks_and_signature_are_the_functions(
    tasks: Any, engine: RecordingEngine
) -> None:
    tasks.add.map([1, 2]).delay()
    tasks.add.starmap([(1, 2)]).delay()
    parts = tasks.add.chunks([(i, i) for i in range(3)], 2)
    assert isinstance(parts, Chunks) and (parts.task, parts.n, len(parts.tasks)) == (
        tasks.add,
        2,
        2,
    )
    (one,), (two,) = engine.batches[0][0], engine.batches[1][0]
    assert (one.name, one.args) == ("celeriac.map", ([1, 2],))
    assert (two.name, two.args) == ("celeriac.starmap", ([(1, 2)],))
    sig = tasks.add.signature((1,), {"b": 2}, countdown=3)
    assert (sig.task, sig.args, sig.kwargs, sig.options) == (
        tasks.add,
        (1,),
        {"b": 2},
        {"countdown": 3},
    )
    assert tasks.add.subtask((1,)).args == (1,)
