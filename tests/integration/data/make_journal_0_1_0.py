"""Write ``journal-0.1.0.sqlite3`` and its ids (run once, at commit c32d52a, release 0.1.0).

The journal holds what that release pickled under its module paths
(``celeriac.app._TaskCall``, ``celeriac.refs.TaskRef``): two kept results, a
kept failure, a queued chain, a revocation and a periodic job.  The test that
reads it back is ``tests/integration/test_journal_compat.py``.
Usage: ``python make_journal_0_1_0.py DIRECTORY``.
"""

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

from celeriac import App, chain, every

out = Path(sys.argv[1])
journal = out / "journal-0.1.0.sqlite3"
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
address = f"tcp://127.0.0.1:{port}"
celeriac = [sys.executable, "-m", "celeriac"]
scheduler = subprocess.Popen(
    [*celeriac, "scheduler", "--port", str(port), "--journal", str(journal), "--dashboard-port=0"]
)
worker = subprocess.Popen([*celeriac, "worker", address, "--nprocs", "1"])
app = App(address, result_ttl=100 * 365 * 86400.0)  # kept for a century: read back for years


@app.task
def double(x):
    return 2 * x


@app.task
def boom(text):
    raise ValueError(text)


@app.task(bind=True)
def whoami(self, x):
    return [self.request.id, x]


ok = double.delay(21)
assert ok.get(timeout=20) == 42
bad = boom.delay("old-release")
try:
    bad.get(timeout=20)
except ValueError:
    pass
bound = whoami.delay(7)
assert bound.get(timeout=20)[1] == 7
worker.terminate()
worker.wait(30)
pending = chain(double.s(5), double.s()).apply_async()  # queued: a TaskRef in the second
revoked = double.delay(99)
revoked.revoke()
app.add_periodic_task(every(hours=6), double.s(3), name="old-job")
ids = {"ok": ok.id, "bad": bad.id, "bound": bound.id, "chain": pending.id}
ids |= {"revoked": revoked.id, "job": "old-job"}
app.client.close()
scheduler.send_signal(signal.SIGTERM)
scheduler.wait(30)
(out / "journal-0.1.0.json").write_text(json.dumps(ids, indent=1) + "\n")
