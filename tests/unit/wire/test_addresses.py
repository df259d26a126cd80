"""Bad things happening: remote errors, bad payloads, dead workers, hostile bytes."""

from __future__ import annotations

import pytest

from celeriac import (
    Client,
)


@pytest.mark.parametrize("address", ["", "http://x:1", "tcp://host:99999", "tcp://a b:1"])
def test_malformed_address_is_a_value_error(address: str) -> None:
    with pytest.raises(ValueError):
        Client(address, timeout=0.5)
