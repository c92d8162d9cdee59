"""Counters and the 10 Hz history of a live tunnel match what actually moved (issue 4)."""

from __future__ import annotations

import itertools
import time

import pytest

from wgmagic.runtime.tunnel import connect

pytestmark = pytest.mark.integration


def test_counters_and_history_follow_real_traffic(testbed):
    with connect(testbed.client_config()) as tun:
        time.sleep(0.5)
        before = tun.stats()["totals"]
        assert tun.ping("198.18.0.1", 3, interval=0.1)[-1].rtt is not None
        with tun.open_connection("198.18.0.1", 9000, timeout=10) as sock:
            sock.sendall((4 * 1024 * 1024).to_bytes(8, "big"))
            got = 0
            while got < 4 * 1024 * 1024:
                piece = sock.recv(1 << 18)
                assert piece
                got += len(piece)
        time.sleep(0.5)
        after = tun.stats()
        totals = after["totals"]
        assert totals["tcp_bytes_in"] - before["tcp_bytes_in"] == 4 * 1024 * 1024
        assert totals["udp_rx_bytes"] - before["udp_rx_bytes"] > 4 * 1024 * 1024  # plus WireGuard and IP headers
        assert totals["handshakes"] >= 1 and totals["wg_rx_packets"] > 2900
        assert after["icmp_rtt"] is not None and after["handshake_rtt"] is not None
        history = tun.history()
        assert len(history) >= 10
        spacing = [b["time"] - a["time"] for a, b in itertools.pairwise(history)]
        assert 0.05 < sorted(spacing)[len(spacing) // 2] < 1.0  # about ten a second; loose on a busy machine
        assert max(r["rx_bytes_per_s"] for r in history) > 0
        assert any(r["icmp_rtt"] is not None for r in history)
        assert history[-1]["rx_bytes"] == pytest.approx(totals["udp_rx_bytes"], rel=0.01)
        assert len(tun.history(window=0.5)) < len(history)
        pandas = pytest.importorskip("pandas")
        frame = pandas.DataFrame(history)
        assert {"time", "rx_bytes_per_s", "tx_bytes_per_s", "handshake_rtt", "icmp_rtt", "tcp_srtt"} <= set(frame)
