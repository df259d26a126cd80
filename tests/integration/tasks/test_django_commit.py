"""``delay_on_commit`` and ``autodiscover_tasks()`` under a real Django (sqlite) and a real cluster.

Django is optional: skipped where it is not installed.  It runs in a child
process because Django's settings can be configured once per process.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("django")

SCRIPT = """
import sys

import django
from django.conf import settings

settings.configure(
    INSTALLED_APPS=["compat_django_app"],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
)
django.setup()

from django.db import transaction

from celeriac import AsyncResult, Celery

app = Celery("proj", broker=sys.argv[1], timeout=10)
app.autodiscover_tasks()  # no packages: Django's installed apps
double = app.tasks["compat_django_app.tasks.double"]  # found through the lookup

with transaction.atomic():
    double.apply_async_on_commit((21,), task_id="committed")
    assert AsyncResult("committed").status == "UNKNOWN", "sent before the commit"
assert AsyncResult("committed").get(timeout=20) == 42

try:
    with transaction.atomic():
        double.apply_async_on_commit((1,), task_id="rolled-back")
        raise RuntimeError("roll back")
except RuntimeError:
    pass
assert double.delay(2).get(timeout=20) == 4  # sent after the rolled-back one would have been
assert AsyncResult("rolled-back").status == "UNKNOWN", "sent despite the rollback"

assert double.delay_on_commit(5) is None  # outside a transaction: at once
print("ok")
"""


@pytest.mark.timeout(120)
def test_on_commit_waits_for_djangos_commit_and_discovers_installed_apps(
    tmp_path: Path, cluster_factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "compat_django_app"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "tasks.py").write_text(
        textwrap.dedent(
            """
            from celeriac import shared_task

            @shared_task
            def double(x):
                return 2 * x
            """
        )
    )
    (tmp_path / "script.py").write_text(SCRIPT)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # the worker imports the app's tasks by name
    cluster = cluster_factory(n_workers=1)
    done = subprocess.run(
        [sys.executable, str(tmp_path / "script.py"), cluster.address],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ok"]
