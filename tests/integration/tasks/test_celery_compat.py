"""Celery's program shapes against real scheduler and worker processes: a shared task found by
``autodiscover_tasks`` and run by name on a worker, retries as Celery times and counts them,
and the app's ``task_routes`` and time-limit settings reaching the scheduler and the worker."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import tasks_for_tests as t
from celeriac import App, Celery, LocalCluster, MaxRetriesExceededError, signature
from celeriac.tasks.current import SHARED, set_current_app
from celeriac.testing import wait_until

#: A package as a project would ship it: shared tasks in ``tasks.py``, no app.
PACKAGE = """
import time

from celeriac import shared_task


@shared_task
def double(x):
    return 2 * x


@shared_task(bind=True, max_retries=3, default_retry_delay=0.5)
def retry_without_countdown(self, path):
    with open(path, "a") as f:
        f.write(f"{time.time()}\\n")
    if self.request.retries == 0:
        raise self.retry()  # no countdown: default_retry_delay
    return self.request.retries


@shared_task(bind=True, max_retries=3)
def retry_with_a_lower_limit(self, path):
    with open(path, "a") as f:
        f.write("run\\n")
    raise self.retry(countdown=0, max_retries=1, exc=KeyError("stop after one retry"))
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """``compat_proj`` on the path of this process and of every worker started after it."""
    (tmp_path / "compat_proj").mkdir()
    (tmp_path / "compat_proj" / "__init__.py").write_text("")
    (tmp_path / "compat_proj" / "tasks.py").write_text(PACKAGE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    yield tmp_path
    for name in [name for name in sys.modules if name.startswith("compat_proj")]:
        del sys.modules[name]
    for name in [name for name in SHARED if name.startswith("compat_proj")]:
        del SHARED[name]
    set_current_app(None)


@pytest.fixture
def celery_app(project: Path, cluster_factory: Callable[..., LocalCluster]) -> Iterator[App]:
    cluster = cluster_factory(n_workers=1)
    with Celery("proj", broker=cluster.address, timeout=10) as app:
        app.autodiscover_tasks(["compat_proj"])
        app.client.wait_for_workers(1)
        yield app


def test_an_autodiscovered_shared_task_runs_on_a_worker_by_name(celery_app: App) -> None:
    assert "compat_proj.tasks" not in sys.modules  # nothing imported until a lookup
    by_name = signature("compat_proj.tasks.double", (21,))  # the current app's tasks
    assert by_name.delay().get(timeout=20) == 42
    from compat_proj.tasks import double

    # Sent by name (the worker imports compat_proj.tasks itself), through the current app.
    assert double.delay(5).get(timeout=20) == 10 and double.app is celery_app


def test_a_retry_without_countdown_waits_default_retry_delay(
    celery_app: App, tmp_path: Path
) -> None:
    from compat_proj.tasks import retry_without_countdown

    path = tmp_path / "times"
    assert retry_without_countdown.delay(str(path)).get(timeout=20) == 1
    first, second = map(float, path.read_text().split())
    assert second - first >= 0.5


def test_a_lower_limit_for_one_retry_ends_the_task_there(celery_app: App, tmp_path: Path) -> None:
    from compat_proj.tasks import retry_with_a_lower_limit

    path = tmp_path / "runs"
    with pytest.raises(KeyError, match="stop after one retry"):
        retry_with_a_lower_limit.delay(str(path)).get(timeout=20)
    assert path.read_text().split() == ["run", "run"]  # the first run and one retry


def test_retry_kwargs_bound_automatic_retries(celery_app: App, tmp_path: Path) -> None:
    task = celery_app.task(
        t.always_fails,
        autoretry_for=(ConnectionError,),
        max_retries=3,
        retry_kwargs={"max_retries": 1, "countdown": 0},
    )
    path = tmp_path / "runs"
    with pytest.raises(ConnectionError, match="service down"):
        task.delay(str(path)).get(timeout=20)
    assert path.read_text().split() == ["run", "run"]
    bare = celery_app.task(t.flaky_bound, bind=True, max_retries=0)
    with pytest.raises(MaxRetriesExceededError):
        bare.delay(str(tmp_path / "attempts"), 1).get(timeout=20)


def test_task_routes_and_time_limits_from_the_apps_settings(celery_app: App) -> None:
    celery_app.conf.update(
        task_routes={"tasks_for_tests.pid": {"queue": "nobody-serves-this"}},
        task_soft_time_limit=0.3,
    )
    routed = celery_app.task(t.pid).delay()
    wait_until(lambda: celery_app.client.scheduler_info()["queues"].get("nobody-serves-this") == 1)
    assert routed.status == "PENDING"
    routed.revoke()
    limited = celery_app.task(t.cleanup_on_soft_limit)  # no limit of its own: the app's
    assert limited.delay(30).get(timeout=20) == "cleaned up"
