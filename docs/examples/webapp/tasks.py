"""Tasks for the Flask example.  Workers import this module with ``-A tasks``.

Run a scheduler and a worker, then the web app::

    celeriac scheduler
    celeriac worker tcp://127.0.0.1:8786 --queues default,emails -A tasks
    gunicorn --preload --workers 3 flask_app:app
"""

from __future__ import annotations

import os
import time

from celeriac import App

# Created at import time: gunicorn imports this in its master (``--preload``)
# and forks.  Nothing connects until the first ``.delay()``, and a forked
# child opens its own connection, so every gunicorn worker has one.
app = App(timeout=2.0)  # address from $CELERIAC_ADDRESS; fail a request fast, never hang it


@app.task(queue="emails", retries=3, retry_backoff=True, time_limit=30)
def send_welcome(user_id: int) -> str:
    """Pretend to send an email: append one line to $WELCOME_LOG (tests count them)."""
    with open(os.environ.get("WELCOME_LOG", "welcome.log"), "a") as log:
        log.write(f"{user_id}\n")
    return f"welcome sent to user {user_id}"


@app.task(soft_time_limit=10, result_ttl=3600)
def make_report(n: int) -> dict[str, int]:
    """Some slower work whose result a page polls for."""
    time.sleep(0.01)
    return {"n": n, "total": sum(range(n))}
