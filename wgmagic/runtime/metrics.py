"""Counters and the bounded history ring of a tunnel, sampled on its loop thread.

Everything here is read from the live engine (the WireGuard device, the stack and its connections): what the
tunnel did, not an estimate. A sample is a flat dict so `pandas.DataFrame(tunnel.history())` just works.
Owns: the figures and the ring; never changes the engine. Rates use the engine's clock (`engine.now()`); each
record's "time" is the wall clock (seconds since the epoch), for plotting.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from wgmagic.netstack.tcp.state import TcpState

if TYPE_CHECKING:
    from wgmagic.runtime.engine import Engine

SAMPLE_INTERVAL = 0.1  # seconds: about 10 samples a second
IDLE_INTERVAL = 0.5  # seconds between samples once nothing has moved for IDLE_AFTER samples
IDLE_AFTER = 10  # samples (a second at SAMPLE_INTERVAL) without a datagram either way
HISTORY_SECONDS = 600.0  # the ring holds the last 10 minutes


def totals(engine: Engine) -> dict[str, Any]:
    """Counters since the tunnel started (loop thread): bytes, datagrams, packets, handshakes, connections, the
    mean smoothed RTT of established connections (seconds, or None) and drops by reason."""
    peers: list[dict[str, Any]] = [peer.stats() for peer in engine.device.peers.values()]
    stack = engine.stack
    conns = list(stack.tcp.values())
    established = [c for c in conns if c.state is TcpState.ESTABLISHED]
    srtts = [c.srtt for c in established if c.srtt is not None]
    drops = {f"wireguard.{k}": v for k, v in engine.device.drops.items()}
    drops.update({f"ip.{k}": v for k, v in stack.drops.items()})
    counters = engine.counters
    return {
        # The tunnel's datagram bytes, whichever transport carried them (UDP, or WebSocket messages).
        "udp_rx_bytes": counters["udp_rx_bytes"] + counters["ws_rx_bytes"],
        "udp_tx_bytes": counters["udp_tx_bytes"] + counters["ws_tx_bytes"],
        "udp_rx_datagrams": counters["udp_rx_datagrams"],
        "udp_tx_datagrams": counters["udp_tx_datagrams"],
        "wg_rx_bytes": sum(p["rx_bytes"] for p in peers),
        "wg_tx_bytes": sum(p["tx_bytes"] for p in peers),
        "wg_rx_packets": sum(p["rx_packets"] for p in peers),
        "wg_tx_packets": sum(p["tx_packets"] for p in peers),
        "handshakes": sum(p["handshakes"] for p in peers),
        "rekeys": sum(p["rekeys"] for p in peers),
        "handshake_initiations_sent": sum(p["handshake_initiations_sent"] for p in peers),
        "keepalives_sent": sum(p["keepalives_sent"] for p in peers),
        "ip_packets_in": stack.counters["packets_in"],
        "ip_packets_out": stack.counters["packets_out"],
        "tcp_bytes_in": sum(c.bytes_received for c in conns) + stack.counters["tcp_bytes_in_closed"],
        "tcp_bytes_out": sum(c.bytes_sent for c in conns) + stack.counters["tcp_bytes_out_closed"],
        "tcp_retransmits": sum(c.retransmits for c in conns) + stack.counters["tcp_retransmits_closed"],
        "tcp_connections": len(conns),
        "tcp_established": len(established),
        "tcp_srtt": sum(srtts) / len(srtts) if srtts else None,
        "drops": sum(drops.values()),
        "drops_by_reason": drops,
    }


def tcp_stats(engine: Engine) -> dict[str, int]:
    """Live connections, bytes buffered (their buffers plus what relays hold for their local sockets),
    retransmissions (the closed connections' included)."""
    conns = list(engine.stack.tcp.values())
    buffered = sum(c.stats()["buffered"] for c in conns)
    buffered += sum(len(getattr(h, "pending", b"")) for h in engine.streams.values())  # relays' tunnel->local
    return {"connections": len(conns), "buffered_bytes": buffered,
            "retransmits": sum(c.retransmits for c in conns) + engine.stack.counters["tcp_retransmits_closed"]}


def handshake_age(engine: Engine) -> float | None:
    """Seconds since the most recent handshake with any peer, or None."""
    known = [t for peer in engine.device.peers.values() if (t := peer.last_handshake_time) is not None]
    return engine.device.protocol_time(engine.now()) - max(known) if known else None  # suspended time counts


def last_handshake_rtt(engine: Engine) -> float | None:
    """The round trip of the most recent handshake we initiated (seconds), or None."""
    return next((p.last_handshake_rtt for p in engine.peers.values() if p.last_handshake_rtt is not None), None)


class MetricsRecorder:
    """Takes a sample every SAMPLE_INTERVAL on the loop thread into a ring of HISTORY_SECONDS.

    An idle tunnel costs little (20 idle tunnels take under 1% of one core together): a sample that finds
    no datagram sent or received since the last one repeats the last record with zero rates instead of reading
    every counter, and after IDLE_AFTER such samples they come every IDLE_INTERVAL; the first sample that sees
    traffic returns to SAMPLE_INTERVAL."""

    def __init__(self, engine: Engine, interval: float = SAMPLE_INTERVAL, seconds: float = HISTORY_SECONDS, *,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.wall_clock = wall_clock
        self.interval = interval
        self.samples: deque[dict[str, Any]] = deque(maxlen=max(1, int(seconds / interval)))
        self._previous: tuple[float, dict[str, Any]] | None = None
        self._handle: Any = None
        self._last_echo_seen: float | None = None
        self._idle_samples = 0
        self._datagrams = -1

    def start(self) -> None:
        """Start sampling on the engine's loop (every `interval` seconds; IDLE_INTERVAL when idle)."""
        self._handle = self.engine.loop.call_later(self.interval, self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _tick(self) -> None:
        if self.engine.closed:
            return
        counters = self.engine.counters
        datagrams = counters["udp_rx_datagrams"] + counters["udp_tx_datagrams"]
        if datagrams == self._datagrams and self.samples:
            self._idle_samples += 1
            self._repeat()
        else:
            self._idle_samples = 0
            self._datagrams = datagrams
            self.sample()
        interval = IDLE_INTERVAL if self._idle_samples >= IDLE_AFTER else self.interval
        self._handle = self.engine.loop.call_later(max(interval, self.interval), self._tick)

    def _repeat(self) -> None:
        """A sample of an idle tunnel: the last record, now, with nothing moving."""
        record = dict(self.samples[-1])
        record.update(time=self.wall_clock(), rx_bytes_per_s=0.0, tx_bytes_per_s=0.0, tcp_in_bytes_per_s=0.0,
                      tcp_out_bytes_per_s=0.0, retransmits_per_s=0.0, icmp_rtt=None,
                      handshake_age=handshake_age(self.engine))
        self._previous = (self.engine.now(), self._previous[1]) if self._previous is not None else None
        self.samples.append(record)

    def sample(self) -> dict[str, Any]:
        """Take one sample now: rates (bytes/s, retransmits/s) since the previous sample, totals, ages."""
        now = self.engine.now()
        current = totals(self.engine)
        record: dict[str, Any] = {"time": self.wall_clock()}
        if self._previous is not None:
            then, before = self._previous
            span = max(now - then, 1e-6)
            rate = {key: (current[key] - before[key]) / span
                    for key in ("udp_rx_bytes", "udp_tx_bytes", "tcp_bytes_in", "tcp_bytes_out", "tcp_retransmits")}
        else:
            rate = dict.fromkeys(("udp_rx_bytes", "udp_tx_bytes", "tcp_bytes_in", "tcp_bytes_out",
                                  "tcp_retransmits"), 0.0)
        self._previous = (now, current)
        echo = self.engine.echoes.last  # (when, rtt) of the newest ICMP echo answered
        fresh_echo = echo is not None and echo[0] != self._last_echo_seen
        if echo is not None:
            self._last_echo_seen = echo[0]
        record.update({
            "rx_bytes_per_s": rate["udp_rx_bytes"],
            "tx_bytes_per_s": rate["udp_tx_bytes"],
            "tcp_in_bytes_per_s": rate["tcp_bytes_in"],
            "tcp_out_bytes_per_s": rate["tcp_bytes_out"],
            "retransmits_per_s": rate["tcp_retransmits"],
            "rx_bytes": current["udp_rx_bytes"],
            "tx_bytes": current["udp_tx_bytes"],
            "tcp_retransmits": current["tcp_retransmits"],
            "ip_packets_out": current["ip_packets_out"],
            "connections": current["tcp_connections"],
            "drops": current["drops"],
            "handshakes": current["handshakes"],
            "handshake_age": handshake_age(self.engine),
            "handshake_rtt": last_handshake_rtt(self.engine),
            "icmp_rtt": echo[1] if echo is not None and fresh_echo else None,
            "tcp_srtt": current["tcp_srtt"],
        })
        self.samples.append(record)
        return record

    def history(self, window: float | None = None) -> list[dict[str, Any]]:
        """The samples, oldest first; with `window`, only those of the last `window` seconds."""
        records = list(self.samples)
        if window is not None and records:
            cutoff = records[-1]["time"] - window
            records = [r for r in records if r["time"] >= cutoff]
        return records
