"""What ``celeriac scheduler`` builds from its settings, before anything is bound or opened."""

from __future__ import annotations

from pathlib import Path

import pytest

from celeriac.scheduler.journal import default_path
from celeriac.scheduler.records import SchedulerConfig
from celeriac.scheduler.server import SchedulerServer
from celeriac.scheduler.settings import DASHBOARD_PORT, SchedulerSettings
from celeriac.wire.addresses import InsecureBindError


def test_the_state_machine_is_configured_from_the_settings() -> None:
    settings = SchedulerSettings(
        worker_timeout=9.0, heartbeat_interval=1.5, prefetch=0, allowed_failures=1,
        max_message_size=1000, no_journal=True,
    )  # fmt: skip
    assert settings.scheduler_config() == SchedulerConfig(
        worker_timeout=9.0, heartbeat_interval=1.5, prefetch=0, allowed_failures=1,
        max_message_bytes=1000, journal=False,
    )  # fmt: skip
    assert SchedulerSettings(port=0, journal="j").scheduler_config().journal is True


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({}, default_path(8786)),
        ({"port": 9000}, default_path(9000)),
        ({"port": 0}, None),  # an ephemeral port has nothing to recover under
        ({"journal": "/x/j.sqlite3"}, Path("/x/j.sqlite3")),
        ({"no_journal": True}, None),
    ],
)
def test_journal_path(fields: dict[str, object], path: Path | None) -> None:
    assert SchedulerSettings(**fields).journal_path() == path


def test_dashboard_bind() -> None:
    assert SchedulerSettings().dashboard_bind() == ("127.0.0.1", DASHBOARD_PORT)
    assert SchedulerSettings(port=0).dashboard_bind() == ("127.0.0.1", 0)
    assert SchedulerSettings(dashboard_port=1).dashboard_bind() == ("127.0.0.1", 1)
    assert SchedulerSettings(no_dashboard=True, dashboard_host="0.0.0.0").dashboard_bind() is None
    assert SchedulerSettings(dashboard_host="::", insecure=True).dashboard_bind() == ("::", 8787)
    with pytest.raises(InsecureBindError, match="refusing to serve the dashboard"):
        SchedulerSettings(dashboard_host="0.0.0.0").dashboard_bind()


def test_the_server_constructor_opens_and_binds_nothing(tmp_path: Path) -> None:
    journal = tmp_path / "state" / "j.sqlite3"
    ipc = tmp_path / "s.sock"
    settings = SchedulerSettings(host="0.0.0.0", journal=str(journal), ipc=str(ipc))
    server = SchedulerServer(settings, parent_pid=1)  # a bind start() would refuse
    assert server.state.config.journal  # configured for the journal it will open...
    assert server.address is None and server.dashboard is None and server.journal is None
    assert not (tmp_path / "state").exists() and not ipc.exists()  # ...but opened nothing
    server.close()  # safe before start()
    with pytest.raises(InsecureBindError, match="refusing to bind"):
        server.start()  # refused before anything is opened
    assert not (tmp_path / "state").exists()
