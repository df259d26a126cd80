"""Celery projects started as Celery's docs start them: ``celeriac -A proj worker -l INFO -Q a,b
-c 2`` from the project's directory (the installed ``celeriac`` script, nothing on PYTHONPATH),
against a real scheduler, with a separate program sending the tasks.

The app is found in ``proj/celery.py``; its ``include`` and autodiscovered modules are imported
by the supervisor and by every worker process as they start, which a marker file shows (one line
per importing process).  Then Django's shape: ``celery.py`` names the settings module, reads
``CELERY_*`` settings and autodiscovers the installed apps' tasks.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from celeriac import Client, LocalCluster
from celeriac.testing import wait_until

SCRIPT = Path(sys.executable).with_name("celeriac")  # as a user runs it: cwd not on sys.path

#: Celery's "Next Steps" layout (proj/celery.py, proj/tasks.py), an autodiscovered package too.
PROJECT = {
    "proj/__init__.py": """
        from .celery import app as celery_app

        __all__ = ("celery_app",)
    """,
    "proj/celery.py": """
        import os

        from celeriac import Celery

        app = Celery("proj", broker=os.environ["PROJ_BROKER"], include=["proj.tasks"])
        app.conf.update(result_expires=3600)
        app.autodiscover_tasks(["proj.reports"])
    """,
    "proj/tasks.py": """
        import os

        from .celery import app

        with open(os.environ["PROJ_MARKS"], "a") as marks:
            marks.write(f"proj.tasks {os.getpid()}\\n")


        @app.task
        def add(x, y):
            return x + y
    """,
    "proj/reports/__init__.py": "",
    "proj/reports/tasks.py": """
        import os

        from celeriac import shared_task

        with open(os.environ["PROJ_MARKS"], "a") as marks:
            marks.write(f"proj.reports.tasks {os.getpid()}\\n")


        @shared_task
        def total(numbers):
            return sum(numbers)
    """,
}

#: A program of the project's (a web view, a script) sending tasks: it imports only proj.tasks.
SENDER = """
from celeriac import signature
from proj.tasks import add

print(add.apply_async((2, 3), queue="b").get(timeout=20))
print(signature("proj.reports.tasks.total", ([1, 2, 3],)).apply_async(queue="a").get(timeout=20))
"""

#: Django's layout for Celery: celery.py names the settings and autodiscovers installed apps.
DJANGO_PROJECT = {
    "djproj/__init__.py": "from .celery import app as celery_app\n",
    "djproj/settings.py": """
        import os

        SECRET_KEY = "not secret"
        INSTALLED_APPS = ["django.contrib.contenttypes", "orders"]
        DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
        CELERY_BROKER_URL = os.environ["PROJ_BROKER"]
        CELERY_RESULT_EXPIRES = 600
    """,
    "djproj/celery.py": """
        import os

        from celeriac import Celery

        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djproj.settings")
        app = Celery("djproj")
        app.config_from_object("django.conf:settings", namespace="CELERY")
        app.autodiscover_tasks()
    """,
    "orders/__init__.py": "",
    "orders/models.py": """
        from django.db import models


        class Order(models.Model):
            total = models.IntegerField()
    """,
    "orders/tasks.py": """
        import os

        from celeriac import shared_task

        from .models import Order  # needs django.setup() first, as Celery's fix-up makes it

        with open(os.environ["PROJ_MARKS"], "a") as marks:
            marks.write(f"orders.tasks {os.getpid()}\\n")


        @shared_task
        def order_total(total):
            return Order(total=total).total
    """,
}

DJANGO_SENDER = """
import django

django.setup()

from orders.tasks import order_total

from djproj.celery import app

print(order_total.delay(42).get(timeout=20), app.conf.result_expires)
"""


def write(root: Path, files: dict[str, str]) -> None:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())


@pytest.fixture
def scheduler(cluster_factory: Callable[..., LocalCluster]) -> str:
    return cluster_factory(n_workers=0).address


@pytest.fixture
def env(tmp_path: Path, scheduler: str) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    environ.update(PROJ_BROKER=scheduler, PROJ_MARKS=str(tmp_path / "marks"))
    return environ


@pytest.fixture
def start_worker(tmp_path: Path, env: dict[str, str]) -> Iterator[Callable[..., None]]:
    if not SCRIPT.exists():
        pytest.skip(f"no installed celeriac script beside {sys.executable}")
    started: list[subprocess.Popen[str]] = []

    def start(*args: str) -> None:
        popen = subprocess.Popen([str(SCRIPT), *args], cwd=tmp_path, env=env, text=True)
        started.append(popen)

    yield start
    for popen in started:
        if popen.poll() is None:
            popen.send_signal(signal.SIGTERM)
        try:
            assert popen.wait(20) == 0  # graceful on SIGTERM
        finally:
            if popen.poll() is None:
                popen.kill()
                popen.wait()


def send(tmp_path: Path, env: dict[str, str], program: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", program],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def marks(tmp_path: Path) -> dict[str, list[str]]:
    """The pids that imported each marked module, in order (a pid twice: imported twice)."""
    found: dict[str, list[str]] = {}
    path = tmp_path / "marks"
    for line in path.read_text().splitlines() if path.exists() else ():
        module, pid = line.split()
        found.setdefault(module, []).append(pid)
    return found


def imported_by(tmp_path: Path, processes: int, *modules: str) -> dict[str, list[str]] | None:
    """The marks once each of ``modules`` was imported by ``processes`` processes, else None."""
    found = marks(tmp_path)
    return found if all(len(found.get(m, ())) == processes for m in modules) else None


@pytest.mark.timeout(90)
def test_celery_worker_command_runs_a_celery_project(
    tmp_path: Path, scheduler: str, env: dict[str, str], start_worker: Callable[..., None]
) -> None:
    write(tmp_path, PROJECT)
    start_worker("-A", "proj", "worker", scheduler, "-l", "INFO", "-Q", "a,b", "-c", "2")
    with Client(scheduler, timeout=20) as client:
        client.wait_for_workers(2, timeout=30)
        workers = client.scheduler_info()["workers"]
        assert sorted(w["queues"] for w in workers) == [["a", "b"], ["a", "b"]]  # -Q, -c 2
        # Each module of the app, imported by the supervisor and both worker processes at start
        # (before any task named it), each once.
        modules = ("proj.tasks", "proj.reports.tasks")
        started = wait_until(lambda: imported_by(tmp_path, 3, *modules), timeout=20)
        assert set(started) == set(modules)
        assert all(len(set(pids)) == 3 for pids in started.values())
    assert send(tmp_path, env, SENDER) == ["5", "6"]
    after = marks(tmp_path)  # the sender imported both too (its app's lookup by name); no worker
    assert {module: pids[:3] for module, pids in after.items()} == started
    assert len({pid for pids in after.values() for pid in pids[3:]}) == 1


@pytest.mark.timeout(120)
def test_a_django_projects_celery_module_sets_django_up_before_its_tasks_import_models(
    tmp_path: Path, scheduler: str, env: dict[str, str], start_worker: Callable[..., None]
) -> None:
    pytest.importorskip("django")
    write(tmp_path, DJANGO_PROJECT)
    start_worker("worker", "--app", "djproj", scheduler, "--loglevel", "info", "--concurrency", "1")
    with Client(scheduler, timeout=20) as client:
        client.wait_for_workers(1, timeout=30)
        wait_until(lambda: imported_by(tmp_path, 2, "orders.tasks"), timeout=20)
    env = {**env, "DJANGO_SETTINGS_MODULE": "djproj.settings"}
    assert send(tmp_path, env, DJANGO_SENDER) == ["42", "600"]
