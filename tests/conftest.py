"""Session fixtures: the real-peer test bed (root, network namespaces, wireguard-go, PostgreSQL, dnsmasq)."""

from __future__ import annotations

import os
import shutil

import pytest

SKIP = os.environ.get("WGMAGIC_SKIP_INTEGRATION") == "1"


def _bed_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "the test bed needs root (network namespaces)"
    for tool in ("wireguard-go", "wg", "dnsmasq", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed: run scripts/install-system-deps"
    return None


@pytest.fixture(scope="session")
def testbed():
    problem = _bed_unavailable()
    if problem:
        if SKIP:
            pytest.skip(problem)
        pytest.fail(f"{problem} (set WGMAGIC_SKIP_INTEGRATION=1 to skip integration tests)")
    from tests.testbed.bed import TestBed, clean_leftovers

    clean_leftovers()
    bed = TestBed().up()
    try:
        yield bed
    finally:
        bed.down()
