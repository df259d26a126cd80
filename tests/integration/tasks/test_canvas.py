"""The canvas as Celery's canvas guide writes it, on real scheduler and worker processes.

Every assertion reads a real result.  Errbacks write a line to a file before
the failure they see is reported, so reading the file after ``get()`` raised
needs no waiting.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import tasks_for_tests as t
from celeriac import App, GroupResult, MaxRetriesExceededError, chain, chord, group
from celeriac.tasks.canvas import signature
from celeriac.tasks.maps import chunks, xmap, xstarmap
from celeriac.testing import ClusterFactory


@pytest.fixture(scope="module")
def app() -> Iterator[App]:
    """One cluster for the module: every test sends canvases, none changes the cluster."""
    with ClusterFactory() as make:
        cluster = make(2)
        with App(cluster.address, timeout=10) as app:
            app.client.wait_for_workers(cluster.n_workers)
            yield app


@pytest.fixture(scope="module")
def tasks(app: App) -> Any:
    class Tasks:
        add = app.task(t.add)
        mul = app.task(t.mul)
        tsum = app.task(t.total_of)
        total = app.task(t.total)
        fail = app.task(t.fail)
        record_failure = app.task(t.record_failure)
        flaky = app.task(t.flaky_bound, bind=True, retries=1)

    return Tasks


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_the_calling_forms(tasks: Any) -> None:
    add, mul, tsum = tasks.add, tasks.mul, tasks.tsum
    assert add.s(2, 2)() == 4  # a signature called runs here, as in Celery
    assert ~add.s(2, 2) == 4
    assert add.s(2).delay(2).get(timeout=10) == 4
    assert group(add.s(i, i) for i in range(4))().get(timeout=10) == [0, 2, 4, 6]
    assert chain(add.s(2, 2), add.s(4), add.s(8))().get(timeout=10) == 16
    assert chord(add.s(i, i) for i in range(5))(tsum.s()).get(timeout=10) == 20
    partial = chain(add.s(4), mul.s(2))
    assert partial(16).get(timeout=10) == 40  # 16 goes first: (16 + 4) * 2
    assert group(add.s(1), add.s(2))(10).get(timeout=10) == [11, 12]


def test_pipes_between_every_kind(tasks: Any) -> None:
    add, mul, tsum = tasks.add, tasks.mul, tasks.tsum
    assert (group(add.s(1, 1), add.s(2, 2)) | tsum.s()).delay().get(timeout=10) == 6
    fan = add.s(1, 1) | group(add.s(10), add.s(20)) | tsum.s() | mul.s(2)
    assert fan.delay().get(timeout=10) == (12 + 22) * 2
    assert ((add.s(1, 1) | add.s(1)) | (add.s(1) | add.s(1))).delay().get(timeout=10) == 5
    assert (add.s(1, 1) | group(add.s(1), add.s(2))).delay().get(timeout=10) == [3, 4]
    nested = chord([chord([add.s(1, 1), add.s(2, 2)], tsum.s()), add.s(3, 3)], tsum.s())
    assert nested.delay().get(timeout=10) == 12  # a chord in a chord's header


def test_parents_and_children(tasks: Any) -> None:
    result = chain(tasks.add.s(2, 2), tasks.add.s(4), tasks.add.s(8))()
    assert result.get(timeout=10) == 16
    assert result.parent.get(timeout=10) == 8 and result.parent.parent.get(timeout=10) == 4
    assert result.parent.children == [result]
    body = chord([tasks.add.s(1, 1), tasks.add.s(2, 2)], tasks.tsum.s()).delay()
    assert body.get(timeout=10) == 6
    assert isinstance(body.parent, GroupResult) and body.parent.get(timeout=10) == [2, 4]


def test_set_clone_signature_and_task_id(app: App, tasks: Any) -> None:
    sig = signature(tasks.add.name, args=(1,), app=app).set(priority=1)
    assert sig.clone(args=(10,)).delay().get(timeout=10) == 11
    result = tasks.add.s(1, 2).set(task_id="canvas-set-id").delay()
    assert result.id == "canvas-set-id" and result.get(timeout=10) == 3
    assert tasks.add.si(1, 1).clone((100,)).delay().get(timeout=10) == 2


def test_link_runs_a_task_with_the_parents_result(tasks: Any) -> None:
    sig = tasks.add.s(2, 2)
    sig.link(tasks.add.s(10))
    sig.link(tasks.mul.si(3, 3))
    result = sig.delay()
    assert result.get(timeout=10) == 4
    assert [c.get(timeout=10) for c in result.children] == [14, 9]
    via_option = tasks.add.s(1, 1).apply_async(link=tasks.add.s(1))
    assert via_option.children[0].get(timeout=10) == 3


def test_link_error_calls_the_errback_with_request_exc_traceback(
    tasks: Any, tmp_path: Path
) -> None:
    path = tmp_path / "errors"
    result = tasks.fail.s("boom").on_error(tasks.record_failure.s(str(path))).delay()
    with pytest.raises(ValueError, match="boom"):
        result.get(timeout=10)
    assert lines(path) == [f"{result.id} ValueError True"]
    fine = tasks.add.s(1, 1).on_error(tasks.record_failure.s(str(path))).delay()
    assert fine.get(timeout=10) == 2 and len(lines(path)) == 1


def test_a_chains_errback_runs_once_for_the_step_that_failed(tasks: Any, tmp_path: Path) -> None:
    path = tmp_path / "errors"
    canvas = chain(tasks.add.s(1, 1), tasks.fail.s(), tasks.add.s(1))
    result = canvas.apply_async(link_error=tasks.record_failure.s(str(path)))
    with pytest.raises(ValueError, match=r"^2$"):  # fail(2): the middle step raises
        result.get(timeout=10)
    (line,) = lines(path)
    assert line == f"{result.parent.id} ValueError True"  # the failed step, not the one after


def test_a_chords_errback_hears_of_a_header_failure(tasks: Any, tmp_path: Path) -> None:
    path = tmp_path / "errors"
    canvas = chord([tasks.add.s(1, 1), tasks.fail.s("header")], tasks.tsum.s())
    result = canvas.on_error(tasks.record_failure.s(str(path))).delay()
    with pytest.raises(ValueError, match="header"):
        result.get(timeout=10)
    (line,) = lines(path)
    assert line.endswith("ValueError True") and line.startswith(result.parent.results[1].id)


def test_an_errback_waits_for_the_last_retry(tasks: Any, tmp_path: Path) -> None:
    errors, attempts = tmp_path / "errors", tmp_path / "attempts"
    errback = tasks.record_failure.s(str(errors))
    recovered = tasks.flaky.s(str(attempts), 1).on_error(errback).delay()
    assert recovered.get(timeout=10) == 1 and lines(errors) == []  # retried, then succeeded
    given_up = tasks.flaky.s(str(tmp_path / "more"), 5).on_error(errback).delay()
    with pytest.raises(MaxRetriesExceededError):
        given_up.get(timeout=10)
    assert lines(errors) == [f"{given_up.id} MaxRetriesExceededError True"]


def test_group_result_questions(tasks: Any) -> None:
    results = group(tasks.add.s(1, 1), tasks.fail.s("one"), tasks.add.s(2, 2)).delay()
    assert results.join(timeout=10, propagate=False)[0] == 2
    assert results.ready() and not results.waiting()
    assert results.failed() and not results.successful() and results.completed_count() == 2
    with pytest.raises(ValueError, match="one"):
        results.get(timeout=10)
    seen: list[tuple[str, Any]] = []
    ok = group(tasks.add.s(i, i) for i in range(3)).delay()
    assert ok.join(timeout=10, callback=lambda task_id, value: seen.append((task_id, value))) == []
    assert seen == [(r.id, 2 * i) for i, r in enumerate(ok)] and ok.successful()


def test_map_starmap_and_chunks(tasks: Any) -> None:
    assert xmap(tasks.tsum, [[1, 2], [3]]).delay().get(timeout=10) == [3, 3]
    assert xstarmap(tasks.add, [(1, 2), (3, 4)]).delay().get(timeout=10) == [3, 7]
    assert tasks.add.starmap([(5, 6)]).delay().get(timeout=10) == [11]  # Celery's method form
    parts = chunks(tasks.add, [(i, i) for i in range(5)], 2)
    assert parts.delay().get(timeout=10) == [[0, 2], [4, 6], [8]]
    joined = (parts | tasks.total.s()).delay().get(timeout=10)  # chunks then a task: a chord
    assert joined == (([[0, 2], [4, 6], [8]],), {})
