"""Options declared ``secret`` (the dashboard token) never appear in --check or in errors."""

from __future__ import annotations

import pytest

from celeriac.cli.config import ConfigError, describe, parse
from celeriac.cli.main import command_line

TOKEN = "s3cret-token-0123456789"


def test_check_report_masks_a_secret() -> None:
    resolved = parse(command_line(), ["scheduler"], environ={"CELERIAC_DASHBOARD_TOKEN": TOKEN})
    assert resolved.settings.dashboard_token == TOKEN  # honoured ...
    report = describe(resolved)
    assert TOKEN not in report and 'dashboard-token       = "<secret>"' in report  # ... not shown


def test_a_bad_secret_is_not_echoed_in_the_error() -> None:
    with pytest.raises(ConfigError) as refused:
        parse(command_line(), ["scheduler"], environ={"CELERIAC_DASHBOARD_TOKEN": "tiny!"})
    assert "tiny!" not in str(refused.value) and "<secret>" in str(refused.value)
