"""%wg doctor / wgmagic doctor gives the right verdict for each real fault of the test bed (issue 6)."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys

import pytest

from tests.testbed.bed import free_udp_port
from wgmagic.tools.doctor import FAIL, OK, WARN, run_doctor

pytestmark = pytest.mark.integration


def verdicts(report) -> dict[str, str]:
    return {check.name: check.verdict for check in report.checks}


def check(report, name):
    return next(c for c in report.checks if c.name == name)


def test_healthy_path_passes_every_check(testbed):
    report = run_doctor(testbed.client_config(), target="db.internal:5432")
    print(report)
    assert report.healthy, str(report)
    assert list(verdicts(report)) == ["config", "endpoint", "handshake", "handshake RTT", "DNS", "TCP connect",
                                      "path MTU", "loss and RTT"]


def test_wrong_peer_public_key(testbed):
    wrong = base64.b64encode(os.urandom(32)).decode()
    config = re.sub(r"PublicKey = \S+", f"PublicKey = {wrong}", testbed.client_config())
    report = run_doctor(config, target="db.internal:5432", timeout=3)
    handshake = check(report, "handshake")
    assert handshake.verdict == FAIL and "never answered" in handshake.detail
    assert "PublicKey" in handshake.fix
    assert testbed.client_private not in str(report) + report._repr_html_()


def test_nothing_listening_at_the_endpoint(testbed):
    report = run_doctor(testbed.client_config(endpoint=f"127.0.0.1:{free_udp_port()}"), timeout=3)
    handshake = check(report, "handshake")
    assert handshake.verdict == FAIL and "nothing listens" in handshake.detail


def test_allowed_ips_do_not_cover_the_target(testbed):
    report = run_doctor(testbed.client_config(), target="10.99.0.5:5432")
    config = check(report, "config")
    assert config.verdict == FAIL and "10.99.0.5 is outside every peer's AllowedIPs" in config.detail
    assert "handshake" not in verdicts(report)  # nothing after a broken config


def test_unknown_dns_name(testbed):
    report = run_doctor(testbed.client_config(), target="nothere.internal:5432")
    dns = check(report, "DNS")
    assert dns.verdict == FAIL and "not found by the tunnel's DNS" in dns.detail


def test_closed_port(testbed):
    report = run_doctor(testbed.client_config(), target="db.internal:5439")
    tcp = check(report, "TCP connect")
    assert tcp.verdict == FAIL and "refused" in tcp.detail
    assert check(report, "DNS").verdict == OK


def test_a_smaller_mtu_on_the_peers_side_is_not_a_black_hole(testbed):
    """The peer's interface at MTU 1280, its ICMP too-big suppressed: its echo replies over 1280 bytes come back
    in fragments, which the tunnel reassembles (RFC 791), so packets of the full MTU do cross and the doctor
    says so. The real black hole (outer datagrams over a size dropped on the path) is
    tests/integration/test_path_mtu.py's, where the doctor names the MTU to set."""
    testbed.set_peer_mtu(1280)
    testbed.suppress_icmp_too_big(True)
    try:
        report = run_doctor(testbed.client_config(), target="db.internal:5432")
    finally:
        testbed.suppress_icmp_too_big(False)
        testbed.set_peer_mtu(1420)
    mtu = check(report, "path MTU")
    print(mtu)
    assert mtu.verdict != FAIL, mtu


def test_lossy_path_warns_with_the_measured_loss(testbed):
    with testbed.relay(loss=0.30, seed=11) as relay:
        report = run_doctor(testbed.client_config(endpoint=relay.endpoint), timeout=30)
    burst = check(report, "loss and RTT")
    print(burst)
    assert burst.verdict == WARN
    measured = int(re.search(r"(\d+)% loss", burst.detail).group(1))
    assert 20 <= measured <= 80  # 30% each way loses about half of all round trips


def test_command_line_doctor(testbed, tmp_path):
    config = tmp_path / "wg0.conf"
    config.write_text(testbed.client_config())
    done = subprocess.run([sys.executable, "-m", "wgmagic.cli", "doctor", str(config), "db.internal:5439"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "refused" in done.stdout and "doctor: degraded" in done.stdout
    assert testbed.client_private not in done.stdout + done.stderr
