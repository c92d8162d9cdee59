"""`%wg capture --outer` across a transport switch: the capture keeps recording the WireGuard datagrams received
after the datagrams move from UDP to the WebSocket (a real `wgmagic relay` in front of the bed's wireguard-go,
what --via auto's fallback does) and back to UDP (what its probe does when UDP answers again), read back by
tshark. The tap is the carrier's (runtime/carrier.py `tap_received`): every transport it builds keeps it."""

from __future__ import annotations

import shutil

import pytest

from tests.integration.test_capture import tshark
from tests.testbed import wsbed
from tests.testbed.bed import PEER4
from wgmagic.runtime.transport import TransportKind
from wgmagic.runtime.tunnel import connect
from wgmagic.via import Via, ViaMode

pytestmark = pytest.mark.integration
IDENTITY = 4

if shutil.which("tshark") is None:
    pytest.skip("tshark is not installed: run scripts/install-system-deps", allow_module_level=True)


@pytest.fixture
def relay(testbed):
    """`wgmagic relay` on this machine's loopback, to the bed's wireguard-go."""
    process = wsbed.relay_process(testbed.dir, "127.0.0.1", testbed.port)
    try:
        yield process
    finally:
        process.stop()


def _outer(capture, inbound: bool) -> int:
    """Outer datagrams (interface 1) the capture holds so far in one direction (read on the loop thread)."""
    return capture.tunnel.call_on_loop(
        lambda: sum(1 for r in capture.records if r.interface == 1 and r.inbound == inbound))


def _traffic(tunnel) -> None:
    """Echoes and a small TCP download, each answered by the peer: datagrams in both directions."""
    assert all(reply.rtt is not None for reply in tunnel.ping(PEER4, 3, interval=0.1, timeout=5))
    with tunnel.open_connection(PEER4, 9000, timeout=30) as sock:  # the bed's bulk source: N bytes
        sock.sendall((5_000).to_bytes(8, "big"))
        received = 0
        while chunk := sock.recv(65536):
            received += len(chunk)
    assert received == 5_000


def test_the_outer_capture_records_what_arrives_after_udp_to_websocket_and_back(testbed, relay, tmp_path):
    path = tmp_path / "switch.pcapng"
    with connect(testbed.client_config(identity=IDENTITY)) as tunnel:
        capture = tunnel.capture(path, outer=True)
        _traffic(tunnel)
        counts = [(_outer(capture, True), _outer(capture, False))]
        tunnel.switch_to_websocket(Via(ViaMode.WEBSOCKET, relay.url))  # what connect()'s fallback ladder calls
        assert tunnel.transport_description.startswith(f"WebSocket {relay.url}")
        _traffic(tunnel)
        counts.append((_outer(capture, True), _outer(capture, False)))
        engine = tunnel.runtime_engine
        tunnel.call_on_loop(engine.carrier.switch, TransportKind.UDP)  # back, as path_watch does when UDP answers
        assert tunnel.transport_description.startswith("UDP")
        _traffic(tunnel)
        counts.append((_outer(capture, True), _outer(capture, False)))
        written = capture.stop()
    (udp_in, udp_out), (ws_in, ws_out), (back_in, back_out) = counts
    assert udp_in > 0 and udp_out > 0, counts
    assert ws_in > udp_in and ws_out > udp_out, counts  # received over the WebSocket: recorded too
    assert back_in > ws_in and back_out > ws_out, counts  # and over UDP again
    rows = tshark(written, "frame.packet_flags_direction", "wg.type", display_filter="frame.interface_id == 1",
                  extra=("-d", f"udp.port=={testbed.port},wg"))
    inbound = [row for row in rows if int(row[0], 0) == 1]
    # the file holds them all (and what arrived between the last count and the stop)
    assert len(inbound) >= back_in and len(rows) - len(inbound) >= back_out, (len(inbound), len(rows), counts)
    assert all(row[1] in ("1", "2", "3", "4") for row in rows), rows[:5]  # every one decodes as WireGuard
