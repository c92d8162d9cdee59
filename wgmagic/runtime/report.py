"""What a tunnel reports about itself: the stats snapshot and the per-peer rows, as plain data.

Owns: turning the engine's device, stack, counters and metrics into the dicts `Tunnel.stats()` and
`Tunnel.peer_report()` return (their keys are documented on those methods). Runs on the tunnel's loop thread
(the caller posts it there). Never: wording for users beyond a peer's "not answering" sentence (the engine's),
printing, or changing state.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, cast

from wgmagic.addresses import format_address

if TYPE_CHECKING:
    from wgmagic.runtime.engine import Engine


def snapshot(name: str, engine: Engine) -> dict[str, object]:
    """`Tunnel.stats()` (loop thread): a new plain dict (JSON-serialisable but for the `endpoint` tuples).

    Times are seconds: durations are floats, points in time (`last_*`, `session_created`) are
    `time.monotonic()` readings. Byte and packet counts are ints since the tunnel started.

    - "name": str, the tunnel's name; "local_port": int, the UDP port its WireGuard socket is bound to.
    - "totals": dict[str, int | float | None | dict], the counters `history()` samples
      (`wgmagic.runtime.metrics.totals`): "udp_rx_bytes", "udp_tx_bytes", "udp_rx_datagrams",
      "udp_tx_datagrams" (the outer UDP socket); "wg_rx_bytes", "wg_tx_bytes", "wg_rx_packets",
      "wg_tx_packets" (WireGuard transport data, all peers); "handshakes", "rekeys",
      "handshake_initiations_sent", "keepalives_sent"; "ip_packets_in", "ip_packets_out" (inner IP);
      "tcp_bytes_in", "tcp_bytes_out", "tcp_retransmits" (closed connections included);
      "tcp_connections", "tcp_established" (live now); "tcp_srtt" (float seconds, mean over established
      connections, or None); "drops" (int, all reasons) and "drops_by_reason" (dict[str, int], keys
      "wireguard.<reason>" and "ip.<reason>").
    - "counters": dict[str, int], the runtime's own counters (e.g. "udp_rx_bytes", "no_route",
      "event_<ClassName>" per device event, "dns_mismatched", "dns_unexpected_source",
      "dns_tcp_fallbacks"); a key appears once its count is non-zero.
    - "device": the WireGuard device's `Device.stats()`: {"peers": {public key base64: {"endpoint":
      (host, port) | None, "last_handshake", "last_receive", "last_send": float | None, "rx_bytes",
      "tx_bytes", "rx_packets", "tx_packets", "handshakes", "rekeys", "handshake_initiations_sent",
      "keepalives_sent", "staged": int, "session_age": None, "session_created": float (only while a
      session exists)}}, "drops": dict[str, int], "cookie_replies_sent": int}.
    - "device_drops", "stack_drops": dict[str, int], packets dropped by reason (WireGuard; inner IP/TCP).
    - "connections": int, tunnel TCP connections the runtime is relaying or opening now.
    - "tcp": {"connections": int (live in the stack), "buffered_bytes": int (in TCP buffers and relays),
      "retransmits": int (closed connections included)}.
    - "tcp_connections": list of dicts, one per live connection: "remote" ("ip:port"), "state" (a
      `TcpState`, a str: "ESTABLISHED", ...), "srtt", "rto" (float seconds | None), "cwnd", "send_window",
      "buffered" (bytes), "bytes_sent", "bytes_received", "retransmits" (int).
    - "handshake_age": float seconds since the newest handshake with any peer, or None.
    - "handshake_rtt": float seconds of the newest handshake we initiated, or None.
    - "icmp_rtt": float seconds of the newest answered ping, or None.
    """
    from wgmagic.runtime.metrics import totals

    return {
        "name": name,
        "local_port": engine.local_port,
        "totals": totals(engine),
        "counters": dict(engine.counters),
        "device": engine.device.stats(),
        "device_drops": dict(engine.device.drops),
        "stack_drops": dict(engine.stack.drops),
        "connections": len(engine.streams),
        "tcp": engine.tcp_stats(),
        "tcp_connections": [{"remote": format_address(c.remote), "state": c.state, **c.stats()}
                            for c in engine.stack.tcp.values()],
        "handshake_age": engine.handshake_age(),
        "handshake_rtt": engine.last_handshake_rtt(),
        "icmp_rtt": engine.last_echo[1] if engine.last_echo else None,
    }


def peer_rows(engine: Engine, now: float | None = None) -> list[dict[str, object]]:
    """`Tunnel.peer_report()`: one row per peer (loop thread); `now` in time.monotonic() seconds."""
    from wgmagic.runtime.endpoints import is_name

    now = time.monotonic() if now is None else now
    device = engine.device
    engine_now, now = now, device.protocol_time(now)  # the peer's ages count suspended time (runtime/suspend.py)
    report: list[dict[str, object]] = []
    for key, runtime in engine.peers.items():
        peer = device.peer(key)
        stats = peer.stats()
        last = cast("float | None", stats["last_handshake"])
        current = getattr(peer, "current", None)
        rekey = None
        if current is not None and getattr(current, "initiator", False):
            rekey = max(0.0, device.timers.rekey_after_time - (now - current.created))
        endpoint = cast("tuple[str, int] | None", stats["endpoint"])
        configured = runtime.configured_endpoint
        report.append({
            "fingerprint": peer.public_key_b64[:8] + "...",
            "endpoint": format_address(endpoint) if endpoint else "(none)",
            # the Endpoint as configured when it is a name (followed: runtime/endpoints.py), else None
            "endpoint_name": (format_address(configured) if configured and is_name(configured[0]) else None),
            "allowed_ips": [str(net) for net in peer.allowed_ips],
            "has_session": peer.has_session(now),
            "handshakes": runtime.handshakes,
            "handshake_age": None if last is None else now - last,
            "next_rekey_in": rekey,
            "rx_bytes": stats["rx_bytes"], "tx_bytes": stats["tx_bytes"],
            "rx_packets": stats["rx_packets"], "tx_packets": stats["tx_packets"],
            # why the peer counts as not answering (Engine.peer_not_answering_since), or None
            "not_answering": engine.peer_not_answering_reason(key, engine_now),
        })
    return report
