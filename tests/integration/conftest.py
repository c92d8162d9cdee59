"""Fixtures the integration modules share (the bed itself is tests/conftest.py's `testbed`)."""

from __future__ import annotations

import pytest

from wgmagic.runtime.tunnel import connect


@pytest.fixture(scope="module")
def tunnel(testbed):
    """A tunnel with the bed's client identity 0, up for one module's tests. A module that needs another
    identity (one key, one tunnel: beside another module's), a name or settings defines its own `tunnel`."""
    with connect(testbed.client_config()) as tun:
        yield tun
