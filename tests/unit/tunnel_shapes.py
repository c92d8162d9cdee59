"""Plain values in the shapes a tunnel reports (wgmagic.runtime.report: TunnelStats, PeerRow, HistorySample), for
unit tests of what the notebook and wgmagic.runtime.health make of them. Every key is present, as the tunnel
gives it; a test overrides the ones it is about."""

from __future__ import annotations

from typing import Any

from wgmagic.runtime.report import HistorySample, PeerRow, TcpConnectionStats, Totals, TunnelStats


def totals(**values: Any) -> Totals:
    base: dict[str, Any] = dict.fromkeys(Totals.__annotations__, 0)
    base.update(tcp_srtt=None, drops_by_reason={})
    base.update(values)
    return base  # type: ignore[return-value]


def connection(**values: Any) -> TcpConnectionStats:
    base: dict[str, Any] = {"remote": "198.18.0.1:5432", "state": "ESTABLISHED", "srtt": 0.010, "rto": 0.2,
                            "cwnd": 14000, "send_window": 65535, "buffered": 0, "bytes_sent": 1000,
                            "bytes_received": 5000, "retransmits": 0, "mss": 1368, "mss_max": 1368, "pmtu": "off",
                            "black_holes": 0, "peer_mss": 1368, "too_big_sent": 0}
    base.update(values)
    return base  # type: ignore[return-value]


def stats(**values: Any) -> TunnelStats:
    base: dict[str, Any] = {"name": "wg0", "local_port": 40000, "totals": totals(), "counters": {},
                            "device": {"peers": {}, "drops": {}, "cookie_replies_sent": 0}, "device_drops": {},
                            "stack_drops": {}, "connections": 0,
                            "tcp": {"connections": 0, "buffered_bytes": 0, "retransmits": 0},
                            "tcp_connections": [], "handshake_age": 3.0, "handshake_rtt": 0.020, "icmp_rtt": None}
    base.update(values)
    return base  # type: ignore[return-value]


def peer(**values: Any) -> PeerRow:
    base: dict[str, Any] = {"fingerprint": "HKwkv6L8...", "endpoint": "203.0.113.7:51820", "endpoint_name": None,
                            "allowed_ips": ["198.18.0.0/24"], "has_session": True, "handshakes": 1,
                            "handshake_age": 3.0, "next_rekey_in": 117.0, "rx_bytes": 1000, "tx_bytes": 2000,
                            "rx_packets": 10, "tx_packets": 20, "not_answering": None}
    base.update(values)
    return base  # type: ignore[return-value]


def samples(seconds: float, *, step: float = 0.1, start: float = 1_000_000.0, retransmits_per_s: float = 0.0,
            out_bytes_per_s: float = 0.0, retransmits_before: int = 0, **values: Any) -> list[HistorySample]:
    """Samples every `step` seconds over `seconds`, with TCP sending `out_bytes_per_s` and retransmitting
    `retransmits_per_s` (cumulative from `retransmits_before`)."""
    count = round(seconds / step) + 1
    out: list[HistorySample] = []
    for i in range(count):
        record: dict[str, Any] = {
            "time": start + i * step, "rx_bytes_per_s": 0.0, "tx_bytes_per_s": 0.0, "tcp_in_bytes_per_s": 0.0,
            "tcp_out_bytes_per_s": out_bytes_per_s if i else 0.0, "retransmits_per_s": retransmits_per_s,
            "rx_bytes": 0, "tx_bytes": 0, "tcp_retransmits": retransmits_before + round(i * step * retransmits_per_s),
            "connections": 1, "drops": 0, "handshakes": 1, "handshake_age": 3.0, "handshake_rtt": 0.020,
            "icmp_rtt": None, "tcp_srtt": None}
        record.update(values)
        out.append(record)  # type: ignore[arg-type]
    return out
