"""What a tunnel reports about itself: the stats snapshot, the per-peer rows and the history's samples, as plain
data, and their shapes.

Owns: the shapes (`TunnelStats` for `Tunnel.stats()`, `PeerRow` for `Tunnel.peer_report()`, `HistorySample`
for `Tunnel.history()`: TypedDicts, so a reader and a type checker know every key, its type and its unit) and
turning the engine's device, stack, counters and metrics into the first two. Runs on the tunnel's loop thread
(the caller posts it there). Never: wording for users beyond a peer's "not answering" sentence (the engine's),
printing, or changing state.

Units throughout: times are seconds (durations are floats; points in time, `last_*` and `session_created`, are
`time.monotonic()` readings, a history sample's "time" the wall clock); byte and packet counts are ints since
the tunnel started unless a key says "_per_s" (a rate over the previous sample, about 0.1 s).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, TypedDict, cast

from wgmagic.addresses import format_address

if TYPE_CHECKING:
    from wgmagic.runtime.engine import Engine


class Totals(TypedDict):
    """The counters `history()` samples (wgmagic.runtime.metrics.totals), all peers and connections together."""

    udp_rx_bytes: int  # the outer datagrams' bytes, whichever transport carried them (UDP or WebSocket)
    udp_tx_bytes: int
    udp_rx_datagrams: int
    udp_tx_datagrams: int
    wg_rx_bytes: int  # WireGuard transport data
    wg_tx_bytes: int
    wg_rx_packets: int
    wg_tx_packets: int
    handshakes: int
    rekeys: int
    handshake_initiations_sent: int
    keepalives_sent: int
    ip_packets_in: int  # the inner IP packets
    ip_packets_out: int
    tcp_bytes_in: int  # closed connections included
    tcp_bytes_out: int
    tcp_retransmits: int  # segments sent again, closed connections included
    tcp_connections: int  # live now
    tcp_established: int
    tcp_srtt: float | None  # the mean RFC 6298 smoothed RTT of the established connections
    drops: int  # every reason
    drops_by_reason: dict[str, int]  # "wireguard.<reason>" and "ip.<reason>"


class _DevicePeer(TypedDict):
    endpoint: tuple[str, int] | None
    last_handshake: float | None
    last_receive: float | None
    last_send: float | None
    rx_bytes: int
    tx_bytes: int
    rx_packets: int
    tx_packets: int
    handshakes: int
    rekeys: int
    handshake_initiations_sent: int
    keepalives_sent: int
    staged: int  # packets waiting for a session
    session_age: None


class DevicePeer(_DevicePeer, total=False):
    """One peer as the WireGuard device counts it (`Peer.stats()`); `session_created` only while a session
    exists."""

    session_created: float


class DeviceStats(TypedDict):
    """The WireGuard device's `Device.stats()`: its peers by base64 public key, drops by reason, cookie replies."""

    peers: dict[str, DevicePeer]
    drops: dict[str, int]
    cookie_replies_sent: int


class TcpSummary(TypedDict):
    """The stack's TCP at a glance."""

    connections: int  # live in the stack
    buffered_bytes: int  # in TCP buffers and in the relays toward their local sockets
    retransmits: int  # closed connections included


class TcpConnectionStats(TypedDict):
    """One live tunnel TCP connection (`TcpConnection.stats()` with its remote end)."""

    remote: str  # "ip:port" ("[v6]:port")
    state: str  # a TcpState (a str): "ESTABLISHED", "SYN-SENT", ...
    srtt: float | None  # RFC 6298 smoothed round-trip time
    rto: float | None
    cwnd: float  # bytes
    send_window: int  # bytes
    buffered: int  # bytes held in all its buffers
    bytes_sent: int
    bytes_received: int
    retransmits: int
    mss: int  # the segment size sent with now (bytes)
    mss_max: int  # the negotiated (or ICMP-lowered) ceiling
    pmtu: str  # the send side's black-hole search: "off" | "searching" | "search complete"
    black_holes: int  # fallbacks to a smaller segment
    peer_mss: int  # what the peer may send us: our SYN's MSS, lowered by each black hole reported
    too_big_sent: int  # those reports


class TunnelStats(TypedDict):
    """`Tunnel.stats()`: a snapshot taken on the loop thread, a new plain dict (JSON-serialisable but for the
    `endpoint` tuples), safe to keep."""

    name: str
    local_port: int  # the UDP port the WireGuard socket is bound to
    totals: Totals
    counters: dict[str, int]  # the runtime's own ("no_route", "event_<ClassName>", ...), once non-zero
    device: DeviceStats
    device_drops: dict[str, int]  # WireGuard packets dropped, by reason
    stack_drops: dict[str, int]  # inner IP/TCP packets dropped, by reason
    connections: int  # tunnel TCP connections the runtime is relaying or opening now
    tcp: TcpSummary
    tcp_connections: list[TcpConnectionStats]
    handshake_age: float | None  # since the newest handshake with any peer
    handshake_rtt: float | None  # WireGuard's handshake (initiation out, response in) we last initiated
    icmp_rtt: float | None  # the newest answered ICMP echo (ping) through the tunnel


class PeerRow(TypedDict):
    """`Tunnel.peer_report()`: one peer. No key: `fingerprint` is the public key's first 8 base64 characters."""

    fingerprint: str  # "HKwkv6L8..."
    endpoint: str  # the address in use, "host:port", or "(none)"
    endpoint_name: str | None  # the Endpoint as configured when it is a name (followed), else None
    allowed_ips: list[str]
    has_session: bool
    handshakes: int
    handshake_age: float | None
    next_rekey_in: float | None  # while we initiated the current session
    rx_bytes: int
    tx_bytes: int
    rx_packets: int
    tx_packets: int
    not_answering: str | None  # why the peer counts as not answering (the engine's sentence), else None


class HistorySample(TypedDict):
    """One of `Tunnel.history()`'s samples (wgmagic.runtime.metrics.MetricsRecorder), about 10 a second."""

    time: float  # the wall clock (seconds since the epoch)
    rx_bytes_per_s: float  # the outer datagrams
    tx_bytes_per_s: float
    tcp_in_bytes_per_s: float
    tcp_out_bytes_per_s: float
    retransmits_per_s: float
    rx_bytes: int
    tx_bytes: int
    tcp_retransmits: int  # since the tunnel started
    ip_packets_out: int  # inner IP packets sent since the tunnel started (TCP segments, UDP, ICMP)
    connections: int
    drops: int
    handshakes: int
    handshake_age: float | None
    handshake_rtt: float | None
    icmp_rtt: float | None  # only in the sample that first saw an echo's answer
    tcp_srtt: float | None


def snapshot(name: str, engine: Engine) -> TunnelStats:
    """`Tunnel.stats()` (loop thread): a new `TunnelStats` (its keys, types and units are listed there)."""
    from wgmagic.runtime.metrics import totals

    return {
        "name": name,
        "local_port": engine.local_port,
        "totals": cast("Totals", totals(engine)),
        "counters": dict(engine.counters),
        "device": cast("DeviceStats", engine.device.stats()),
        "device_drops": dict(engine.device.drops),
        "stack_drops": dict(engine.stack.drops),
        "connections": len(engine.streams),
        "tcp": cast("TcpSummary", engine.tcp_stats()),
        "tcp_connections": [cast("TcpConnectionStats", {"remote": format_address(c.remote), "state": c.state,
                                                        **c.stats()})
                            for c in engine.stack.tcp.values()],
        "handshake_age": engine.handshake_age(),
        "handshake_rtt": engine.last_handshake_rtt(),
        "icmp_rtt": engine.last_echo[1] if engine.last_echo else None,
    }


def peer_rows(engine: Engine, now: float | None = None) -> list[PeerRow]:
    """`Tunnel.peer_report()`: one row per peer (loop thread); `now` in time.monotonic() seconds."""
    from wgmagic.runtime.endpoints import is_name

    now = time.monotonic() if now is None else now
    device = engine.device
    engine_now, now = now, device.protocol_time(now)  # the peer's ages count suspended time (runtime/suspend.py)
    report: list[PeerRow] = []
    for key, runtime in engine.peers.items():
        peer = device.peer(key)
        stats = cast("DevicePeer", peer.stats())
        last = stats["last_handshake"]
        current = getattr(peer, "current", None)
        rekey = None
        if current is not None and getattr(current, "initiator", False):
            rekey = max(0.0, device.timers.rekey_after_time - (now - current.created))
        endpoint = stats["endpoint"]
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
