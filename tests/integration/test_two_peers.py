"""Several peers (issue 16): one tunnel with two [Peer] sections reaches both peers' subnets, routing each
packet by the longest AllowedIPs prefix; each peer's state shows in `%wg status` and the dashboard."""

from __future__ import annotations

import pytest

from tests.testbed.bed import NET6, PEER4, PEER4_B, PEER6_B
from wgmagic.notebook.status import TunnelStatus
from wgmagic.runtime.tunnel import connect

pytestmark = pytest.mark.integration
IDENTITY = 2


def _echo(tunnel, host: str, payload: bytes) -> bytes:
    with tunnel.open_connection(host, 9001, timeout=20) as sock:
        sock.sendall(payload)
        sock.shutdown(1)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def test_one_tunnel_reaches_two_peers_by_longest_prefix(testbed):
    second = testbed.second_peer()
    # The first peer's AllowedIPs cover the second's subnet too (198.18.0.0/15 holds 198.18.1.0/24): only the
    # longest prefix sends 198.18.1.1 to the second peer.
    config = testbed.client_config(identity=IDENTITY).replace("AllowedIPs = 198.18.0.0/24",
                                                              "AllowedIPs = 198.18.0.0/15")
    config += "\n" + second.peer_section()
    with connect(config) as tunnel:
        assert _echo(tunnel, PEER4, b"first peer" * 1000) == b"first peer" * 1000
        assert _echo(tunnel, PEER4_B, b"second peer" * 1000) == b"second peer" * 1000
        assert _echo(tunnel, PEER6_B, b"v6 second" * 100) == b"v6 second" * 100
        assert [r.rtt is not None for r in tunnel.ping(PEER4_B, 2, interval=0.2)] == [True, True]
        report = tunnel.peer_report()
        assert len(report) == 2
        first_row, second_row = report
        assert first_row["endpoint"] == f"127.0.0.1:{testbed.port}"
        assert second_row["endpoint"] == f"127.0.0.1:{second.port}"
        assert all(row["handshake_age"] is not None and row["rx_bytes"] > 10_000 for row in report), report
        assert "198.18.1.0/24" in second_row["allowed_ips"] and NET6 in first_row["allowed_ips"]
        status = TunnelStatus.of(tunnel)
        text = repr(status) + status._repr_html_()
        assert second_row["fingerprint"] in text and first_row["fingerprint"] in text
        assert f"127.0.0.1:{second.port}" in text and "198.18.1.0/24" in text
        from wgmagic.notebook.dashboard import Dashboard

        board = Dashboard(tunnel)
        try:
            html = board._peers_html(tunnel.peer_report())
        finally:
            board.close()
        assert first_row["fingerprint"] in html and second_row["fingerprint"] in html
    # each wireguard-go peer saw this client: the second one through its own handshake
    out = testbed.run_in_peer("wg", "show", testbed.peer_if, "transfer").stdout
    assert testbed.clients[IDENTITY][1] in out
    out = testbed.run_in_peer("true")  # the bed is still healthy
    assert out.returncode == 0
