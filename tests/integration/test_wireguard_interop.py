"""wgmagic's WireGuard against a real wireguard-go peer in the test bed's namespace (issue 2)."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time

import pytest

from wgmagic.notebook.status import tunnel_status_report
from wgmagic.runtime.tunnel import connect
from wgmagic.wireguard.timers import Timers

pytestmark = pytest.mark.integration

PEER_V4 = "198.18.0.1"
PEER_V6 = "fd77:6d61:6769:6300::1"


def run_cli(*args: str, timeout: float = 60, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wgmagic.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


@pytest.fixture
def config_file(testbed, tmp_path):
    path = tmp_path / "client.conf"
    path.write_text(testbed.client_config())
    path.chmod(0o600)
    return path


def private_key_forms(config_text: str) -> list[str]:
    for line in config_text.splitlines():
        if line.replace(" ", "").lower().startswith("privatekey="):
            b64 = line.split("=", 1)[1].strip()
            return [b64, base64.b64decode(b64).hex(), b64[:16]]
    raise AssertionError("no PrivateKey in the config")


@pytest.mark.parametrize("host", [PEER_V4, PEER_V6])
def test_cli_ping_answers_and_peer_counts_transfer(testbed, config_file, host):
    before = testbed.peer_transfer()
    result = run_cli("ping", str(config_file), host, "-c", "3", "-i", "0.2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 packets transmitted, 3 received, 0% packet loss" in result.stdout
    assert result.stdout.count(f"bytes from {host}") == 3
    after = testbed.peer_transfer()
    assert after[0] > before[0] and after[1] > before[1]  # received and sent bytes grew on the peer
    assert testbed.peer_latest_handshake_age() < 30


def test_rekey_loses_nothing(testbed):
    timers = Timers(rekey_after_time=3.0, rekey_timeout=1.0)
    with connect(testbed.client_config(), timers=timers) as tunnel:
        replies = tunnel.ping(PEER_V4, 400, interval=0.05, timeout=1.0)
        stats = tunnel.stats()
    lost = [r.seq for r in replies if r.rtt is None]
    assert lost == []
    handshakes = sum(p["handshakes"] for p in stats["device"]["peers"].values())
    assert handshakes >= 6  # the first one and at least five rekeys


def test_peer_killed_and_restarted(testbed):
    timers = Timers(keepalive_timeout=1.0, rekey_timeout=1.0)
    with connect(testbed.client_config(), timers=timers) as tunnel:
        assert tunnel.ping(PEER_V4, 2, interval=0.1)[-1].rtt is not None
        testbed.kill_peer()
        # Keep sending while the peer is gone: the tunnel notices and starts re-handshaking.
        outage = tunnel.ping(PEER_V4, 8, interval=0.25, timeout=0.25)
        assert all(r.rtt is None for r in outage)
        testbed.restart_peer()
        restarted = time.monotonic()
        first_answer = None
        for reply in tunnel.ping_iter(PEER_V4, 40, interval=0.1, timeout=0.5):
            if reply.rtt is not None:
                first_answer = time.monotonic() - restarted
                break
        assert first_answer is not None
        # Retries go out every REKEY_TIMEOUT plus up to 1/3 s of jitter; allow one ping interval and scheduling.
        assert first_answer < timers.rekey_timeout + 1 / 3 + 1.5
        assert tunnel.ping(PEER_V4, 3, interval=0.1)[-1].rtt is not None


def test_wrong_peer_key_fails_fast_with_causes(testbed, tmp_path):
    text = testbed.client_config()
    lines = []
    for line in text.splitlines():
        if line.replace(" ", "").lower().startswith("publickey="):
            line = "PublicKey = " + base64.b64encode(bytes(range(32))).decode()
        lines.append(line)
    path = tmp_path / "wrong.conf"
    path.write_text("\n".join(lines) + "\n")
    started = time.monotonic()
    result = run_cli("ping", str(path), PEER_V4, "-c", "1", "--handshake-timeout", "6")
    elapsed = time.monotonic() - started
    assert result.returncode != 0
    assert elapsed < 30
    assert "Traceback" not in result.stderr
    assert "127.0.0.1:" in result.stderr and "PublicKey" in result.stderr and "UDP" in result.stderr
    for secret in private_key_forms(text):
        assert secret not in result.stdout + result.stderr


def test_nothing_at_endpoint_fails_fast(testbed, tmp_path):
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    path = tmp_path / "nothing.conf"
    path.write_text(testbed.client_config(endpoint=f"127.0.0.1:{free_port}"))
    result = run_cli("ping", str(path), PEER_V4, "-c", "1", "--handshake-timeout", "6")
    assert result.returncode != 0
    assert f"127.0.0.1:{free_port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_no_private_key_in_repr_stats_or_logs(testbed, caplog):
    text = testbed.client_config()
    with caplog.at_level("DEBUG"), connect(text) as tunnel:
        tunnel.ping(PEER_V4, 1)
        seen = repr(tunnel) + repr(tunnel.stats()) + repr(tunnel.config) + tunnel_status_report(tunnel)
    seen += caplog.text
    for secret in private_key_forms(text):
        assert secret not in seen
