"""Session fixtures: the real-peer test bed (root, network namespaces, wireguard-go, PostgreSQL, dnsmasq)."""

from __future__ import annotations

import os
import shutil
import signal

import pytest

SKIP = os.environ.get("WGMAGIC_SKIP_INTEGRATION") == "1"


def pytest_addoption(parser):
    parser.addoption("--portable", action="store_true",
                     help="turn every Linux-only feature off (WGMAGIC_PORTABLE=1), as on macOS and Windows")


def pytest_configure(config):
    if config.getoption("--portable"):
        os.environ["WGMAGIC_PORTABLE"] = "1"  # read by wgmagic.platform on each call, by tunnels and forwards
    # Started in the background by a shell without job control (`scripts/test &`, some CI runners), a process
    # inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler: the tests that interrupt a
    # running cell (as "interrupt kernel" does) would send a signal nobody hears. Python's own default, as in a
    # terminal or a Jupyter kernel.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_report_header(config):
    value = os.environ.get("WGMAGIC_PORTABLE")
    return f"wgmagic: WGMAGIC_PORTABLE={value} (Linux-only features off)" if value else None


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
