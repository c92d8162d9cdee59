"""A tunnel's health in one word, decided here and nowhere else: `%wg status`, `wgmagic status` and `wgmagic up`,
the dashboard (`%wg diag`) and the doctor all show the words of `tunnel_health`, `peer_health` or `doctor_health`.

- "healthy": traffic gets through and nothing measured is out of line.
- "degraded": traffic gets through, but something measured is off: a peer of several not answering, the
  handshake's round trip over SLOW_ROUND_TRIP, more than LOSS_WARNING of the TCP segments sent over the window
  sent again; for the doctor, a warning, or a failure past the tunnel itself (DNS, the TCP connect, the MTU).
- "down": traffic does not get through: every peer stopped answering (the engine's judgment, by WireGuard's
  timers); for the doctor, the tunnel could not come up, or no echo of its burst came back.
- "idle": no session and nothing waiting to be sent (WireGuard ends a session after 3 minutes without
  traffic; the next packet starts a handshake): not a fault.

The thresholds are the doctor's (wgmagic.tools.doctor checks the handshake's round trip and the loss over an echo
burst against the same numbers), so a live view and the doctor never disagree on what counts as slow or lossy.
Pure: plain data in (`wgmagic.runtime.report`'s `TunnelStats`, `PeerRow`, `HistorySample`, or the doctor's
checks), a `Verdict` out; nothing here reads a clock or the network.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from wgmagic.runtime.report import HistorySample, PeerRow, TunnelStats

HEALTHY, DEGRADED, DOWN, IDLE = "healthy", "degraded", "down", "idle"
WORDS = (HEALTHY, DEGRADED, DOWN, IDLE)
SLOW_ROUND_TRIP = 0.3  # seconds: a handshake round trip longer than this is "a long way" (the doctor's warning)
LOSS_WARNING = 0.05  # the share of segments sent again (or of echoes lost, for the doctor) that is "lossy"
MIN_RETRANSMITS = 10  # fewer retransmissions than this in a window are never called lossy (3 segments, 1 resent)
DEFAULT_MSS = 1380  # bytes per segment when no live connection says (wg-quick's MTU 1420 less 40 of headers)
STATUS_WINDOW = 60.0  # seconds of history `%wg status` and `wgmagic up` judge by (the dashboard: its own window)
# The doctor's steps that bring the tunnel itself up: one of them failing means the tunnel is down.
TUNNEL_CHECKS = frozenset({"config", "endpoint", "handshake", "transport", "websocket", "loss and RTT"})


@dataclass(frozen=True)
class Verdict:
    """One of WORDS and why (plain sentences; none when healthy). str(): "degraded: why; why"."""

    word: str
    reasons: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"{self.word}: {'; '.join(self.reasons)}" if self.reasons else self.word


@dataclass(frozen=True)
class Retransmissions:
    """TCP segments sent again over the last `window` seconds (the window the dashboard's plots show): `count`,
    `per_s` (count / window), `share` (of the inner packets sent in the window, retransmissions included; from
    the bytes sent and the segment size where the samples lack the packet count; None when nothing was sent)
    and `total` since the tunnel came up."""

    count: int
    per_s: float
    share: float | None
    window: float
    total: int

    @property
    def lossy(self) -> bool:
        return self.count >= MIN_RETRANSMITS and self.share is not None and self.share > LOSS_WARNING


def retransmissions(records: Sequence[HistorySample], window: float, total: int, mss: int | None = None
                    ) -> Retransmissions:
    """The retransmissions of `records` (Tunnel.history(window): the samples of the last `window` seconds,
    oldest first); `total`: Totals["tcp_retransmits"] now; `mss`: bytes per segment (None: DEFAULT_MSS).

    A tunnel younger than the window has all of its life inside it: the rate is still count / window, which is
    what happened in the window the plot shows."""
    if len(records) < 2 or window <= 0:
        return Retransmissions(0, 0.0, None, window, total)
    count = max(0, records[-1]["tcp_retransmits"] - records[0]["tcp_retransmits"])
    packets = records[-1].get("ip_packets_out", 0) - records[0].get("ip_packets_out", 0)
    if packets > 0:  # every packet sent counts: a query's small segments are not a fraction of one MSS each
        segments = float(packets)
    else:  # samples without the count: estimated from the bytes sent, as a bulk transfer's full segments
        sent = sum(later["tcp_out_bytes_per_s"] * max(0.0, later["time"] - earlier["time"])
                   for earlier, later in pairwise(records))
        segments = sent / (mss or DEFAULT_MSS) + count
    share = count / segments if segments > 0 else None
    return Retransmissions(count, count / window, share, window, total)


def peer_health(peer: PeerRow) -> Verdict:
    """One peer: "down" when the engine says it stopped answering, "healthy" with a session, else "idle"."""
    if peer["not_answering"]:
        return Verdict(DOWN, (f"peer {peer['fingerprint']} is not answering: traffic sent, nothing back",))
    return Verdict(HEALTHY) if peer["has_session"] else Verdict(IDLE, (f"peer {peer['fingerprint']}: no session "
                                                                      "now; the next packet starts a handshake",))


def tunnel_health(stats: TunnelStats, peers: Sequence[PeerRow], records: Sequence[HistorySample] = (),
                  window: float = STATUS_WINDOW) -> Verdict:
    """The tunnel from Tunnel.stats(), Tunnel.peer_report() and Tunnel.history(window) (the samples of the last
    `window` seconds; none: the window is not judged). See the module's table."""
    verdicts = [peer_health(peer) for peer in peers]
    down = [v for v in verdicts if v.word == DOWN]
    if not verdicts:
        return Verdict(DOWN, ("the tunnel has no peer",))
    if len(down) == len(verdicts):
        return Verdict(DOWN, tuple(reason for v in down for reason in v.reasons))
    reasons = [reason for v in down for reason in v.reasons]
    rtt = stats["handshake_rtt"]
    if rtt is not None and rtt > SLOW_ROUND_TRIP:
        reasons.append(f"the handshake's round trip is {rtt * 1000:.0f} ms: a long way (over "
                       f"{SLOW_ROUND_TRIP * 1000:.0f} ms), every query pays it at least once")
    sizes = [conn["mss"] for conn in stats["tcp_connections"]]
    resent = retransmissions(records, window, stats["totals"]["tcp_retransmits"], max(sizes, default=None))
    if resent.lossy and resent.share is not None:
        reasons.append(f"{percent(resent.share)} of TCP segments sent again over the last {seconds_words(window)} "
                       f"({resent.count}): loss on the path")
    if reasons:
        return Verdict(DEGRADED, tuple(reasons))
    if all(v.word == IDLE for v in verdicts):
        return Verdict(IDLE, ("no session now, nothing waiting to be sent; the next packet starts a handshake",))
    return Verdict(HEALTHY)


class Check(Protocol):
    """What `doctor_health` reads of a doctor step (wgmagic.tools.doctor.Check)."""

    name: str
    verdict: str  # "ok", "warning", "failed", "skipped"
    detail: str


def doctor_health(checks: Iterable[Check]) -> Verdict:
    """The doctor's steps in one word: "down" when a step that brings the tunnel up failed (TUNNEL_CHECKS),
    "degraded" for any other failure or a warning, else "healthy". Reasons name the step and what it found."""
    failed = [c for c in checks if c.verdict in ("failed", "warning")]
    reasons = tuple(f"{c.name}: {c.detail}" for c in failed)
    if any(c.verdict == "failed" and c.name in TUNNEL_CHECKS for c in failed):
        return Verdict(DOWN, reasons)
    return Verdict(DEGRADED, reasons) if failed else Verdict(HEALTHY)


def seconds_words(seconds: float) -> str:
    """A window in words: "45 s", "1 min", "10 min"."""
    return f"{seconds / 60:.0f} min" if seconds >= 60 and seconds % 60 == 0 else f"{seconds:.0f} s"


def percent(share: float) -> str:
    """A share as a percentage a reader can tell from zero: "0.3%", "4.2%", "12%"."""
    return f"{share:.0%}" if share >= 0.1 else f"{share:.1%}"
