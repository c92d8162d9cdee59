"""Path-MTU black holes: packetization-layer path MTU discovery for TCP (RFC 4821; RFC 8899's terms), sans-I/O.

A black hole is a path that drops packets above some size and never says so (the ICMP "fragmentation needed"
/ "packet too big" of RFC 1191 / RFC 8201 is filtered or never sent): small segments pass, full-size ones
vanish, and a transfer stalls for good. Two machines, one per direction of a connection:

- `SendSearch`, when we send (an upload): Linux's `tcp_mtu_probing = 1` is the model. After BLACK_HOLE_RTOS
  retransmission timeouts in a row on a segment larger than the fallback, the MSS drops to BASE_MSS (Linux's
  tcp_base_mss), then halves on each further timeout (down to the floor); the go-back retransmission goes out
  at the smaller size and the transfer resumes. Then it searches upward with probes: one segment of the
  size halfway between the largest MSS known to pass (`low`) and the smallest not known to pass (`high`),
  sent when there is data and window for it. An ACK covering the probe raises the MSS to its size; a loss
  at the probe (recovery or RTO starting at it) lowers `high` (and costs no congestion response: RFC 4821
  7.6.2). The search ends when `high - low` < PROBE_THRESHOLD, and starts again from the negotiated MSS
  every PROBE_INTERVAL seconds (Linux's tcp_probe_interval, 10 min), so a path that heals is used again.
- `ReceiveWatch`, when the peer sends (a download): the sender is usually a kernel whose TCP does not probe
  (Linux's default is tcp_mtu_probing = 0) and whose full-size segments vanish. We cannot change what it
  sends from inside the connection (the MSS option rides only in the SYN), but every stack honours an ICMP
  "fragmentation needed" (IPv4, RFC 1191) / "packet too big" (IPv6, RFC 8201) quoting a segment of the
  connection with a sequence number it has sent: it lowers its path MTU toward us (Linux: for 10 minutes,
  ip_rt_mtu_expires) and retransmits at once in the smaller size. So on a black hole the receiver sends that
  message itself, as the router that dropped the packets should have. Evidence: the peer has sent data
  beyond RCV.NXT (an out-of-order segment arrived, or an ACK whose sequence number is ahead of RCV.NXT), RCV.NXT
  has not moved for `hold` seconds since, and no segment of the full size arrived meanwhile (which would prove
  the path carries it: that is ordinary loss). When the connection falls quiet after activity, one
  keep-alive-shaped ACK (SEG.SEQ = SND.UNA - 1) makes the peer answer with its SND.NXT, which is that evidence
  when its data is stuck. The reported MTU goes down a ladder (REPORT_MTUS: 1280, then 1064 = BASE_MSS + 40,
  then 576 for IPv4; 1280 is IPv6's floor); the peer only ever lowers its path MTU on such a message, so the
  upward search on that side is its cache expiring (10 minutes on Linux), after which a black hole that is
  still there is detected and reported again.

Sizes are MSS bytes (TCP payload plus options, as the MSS option counts them) unless named MTU (the IP packet);
times are seconds on the caller's clock.
"""

from __future__ import annotations

import struct

from wgmagic.netstack.wire import icmp
from wgmagic.netstack.wire.checksum import internet_checksum

BASE_MSS = 1024  # Linux tcp_base_mss: the first fallback on a black hole
PROBE_THRESHOLD = 8  # Linux tcp_probe_threshold: the search ends when high - low is below this (bytes)
PROBE_INTERVAL = 600.0  # Linux tcp_probe_interval: seconds until the search starts again from the top
BLACK_HOLE_RTOS = 2  # RTOs in a row on a segment larger than the fallback: a black hole
FLOOR_MSS = {4: 536, 6: 1220}  # the smallest MSS we fall to: RFC 9293's default; IPv6's 1280 MTU (RFC 8200)
HEADERS = {4: 40, 6: 60}  # IP + TCP headers without options: MTU = MSS + HEADERS[version]
REPORT_MTUS = (1280, 1064, 576)  # what ReceiveWatch reports, in turn (IPv6: 1280 only)
QUIET = 1.0  # seconds of quiet after activity before ReceiveWatch asks the peer for its SND.NXT (at least)
HOLD = 1.0  # seconds stuck data may stay missing before it is called a black hole (at least)

_V4 = struct.Struct("!BBHHHBBH4s4s")
_V6 = struct.Struct("!IHBB16s16s")
_TCP8 = struct.Struct("!HHI")
PROTO_TCP = 6


class SendSearch:
    """The sending side's black-hole detection and upward search (module docstring).

    `mss`: the MSS to send with now (the connection's SND.MSS follows it); `max_mss`: the negotiated (or
    ICMP-lowered) ceiling; `low` / `high`: the search's bounds; `probe_seq` / `probe_end`: the probe in flight
    (None: none); `next_probe_at`: when a probe may go (None: not searching); `high_tested`: `high` was itself
    probed or is the size that failed. Counters: `black_holes`, `probes`, `probe_failures`.
    """

    __slots__ = ("black_holes", "floor", "high", "high_tested", "last_rto", "low", "max_mss", "mss", "next_probe_at",
                 "probe_end", "probe_failures", "probe_mss", "probe_seq", "probes", "silent_rtos")

    def __init__(self, mss: int, floor: int) -> None:
        self.max_mss = self.mss = self.high = self.low = mss
        self.floor = floor
        self.high_tested = True
        self.probe_seq: int | None = None
        self.probe_end: int | None = None
        self.probe_mss = 0
        self.next_probe_at: float | None = None
        self.last_rto: float | None = None
        self.silent_rtos = 0
        self.black_holes = self.probes = self.probe_failures = 0

    def __repr__(self) -> str:
        return f"<SendSearch {self.state} mss={self.mss} low={self.low} high={self.high}>"

    @property
    def state(self) -> str:
        """"off" (no black hole seen), "searching", or "search complete" (until the next PROBE_INTERVAL)."""
        if not self.black_holes:
            return "off"
        return "searching" if self._candidate() else "search complete"

    def start(self, mss: int) -> None:
        """The handshake settled the MSS: the ceiling and the size in use."""
        self.max_mss = self.mss = self.high = self.low = mss

    def cap(self, mss: int) -> None:
        """An ICMP too-big lowered the path MTU (RFC 1191 / RFC 8201): the new ceiling; a probe in flight is
        abandoned (its bytes are resent in the smaller size)."""
        self.max_mss = min(self.max_mss, mss)
        self.high = min(self.high, self.max_mss)
        self.mss = min(self.mss, self.max_mss)
        self.low = min(self.low, self.mss)
        self._abandon_probe(None)

    def on_rto(self, now: float, last_receive: float, snd_una: int, head_mss: int) -> int | None:
        """A retransmission timeout at `now` with the segment at `snd_una` of `head_mss` bytes (payload +
        options) unacknowledged; `last_receive`: when the peer last sent anything. Returns the lowered MSS on
        a black hole, else None. A black hole is BLACK_HOLE_RTOS timeouts in a row with nothing at all from
        the peer in between (a peer that answers, with a zero window or duplicate ACKs, is receiving what we
        send). A probe in flight is lost (failed, if it is the one at SND.UNA), which is no black hole."""
        silent = self.last_rto is not None and last_receive <= self.last_rto
        self.silent_rtos = self.silent_rtos + 1 if silent else 1
        self.last_rto = now
        if self.probe_seq is not None:
            self._abandon_probe(now, failed=snd_una == self.probe_seq)
            return None
        if self.silent_rtos < BLACK_HOLE_RTOS:
            return None
        target = min(BASE_MSS, self.mss) if not self.black_holes else min(BASE_MSS, self.mss // 2)
        target = max(self.floor, target)
        if head_mss <= target or target >= self.mss:
            return None  # the segment is no bigger than the fallback: smaller would not help
        self.black_holes += 1
        self.mss = self.low = target
        self.next_probe_at = now
        return target

    def _candidate(self) -> int:
        """The next size to probe, or 0 when the search is over."""
        if self.high - self.low >= PROBE_THRESHOLD:
            return (self.low + self.high + 1) // 2
        if not self.high_tested and self.high > self.low:
            return self.high
        return 0

    def probe_size(self, now: float) -> int:
        """The MSS of a probe to send at `now` (0: none). Call only when a probe could go (not in loss
        recovery, no retransmission pending); the caller sends one segment of that size when it has the data
        and the windows for it, and then calls `probe_sent`."""
        if self.next_probe_at is None or now < self.next_probe_at or self.probe_seq is not None:
            return 0
        size = self._candidate()
        if not size:
            # PROBE_INTERVAL after the search ended: start again from the top (the path may have healed).
            self.high, self.high_tested = self.max_mss, False
            size = self._candidate()
            if not size:
                self.high_tested = True
                self.next_probe_at = None  # the MSS is the ceiling again: nothing to search
        return size

    def probe_sent(self, seq: int, end: int, mss: int) -> None:
        """A probe of `mss` bytes went out, covering sequence numbers [seq, end)."""
        self.probe_seq, self.probe_end, self.probe_mss = seq, end, mss
        self.probes += 1

    def on_ack(self, ack: int, now: float) -> int | None:
        """A cumulative ACK up to `ack`: when it covers the probe, the probe's size passes and becomes the MSS
        (returned); else None."""
        if self.probe_end is None or ack < self.probe_end:
            return None
        self.mss = self.low = self.probe_mss
        if self.high == self.low:
            self.high_tested = True
        self.probe_seq = self.probe_end = None
        self.next_probe_at = now if self._candidate() else now + PROBE_INTERVAL
        return self.mss

    def on_loss(self, snd_una: int, now: float) -> bool:
        """Loss recovery starts at `snd_una`. True when the loss is the probe's (the probe failed: no
        congestion response is due, RFC 4821 7.6.2); a probe behind another loss is abandoned."""
        if self.probe_seq is None:
            return False
        failed = snd_una == self.probe_seq
        self._abandon_probe(now, failed=failed)
        return failed

    def _abandon_probe(self, now: float | None, failed: bool = False) -> None:
        if self.probe_seq is None:
            return
        if failed:
            self.probe_failures += 1
            self.high = max(self.low, self.probe_mss - 1)
            self.high_tested = True
        self.probe_seq = self.probe_end = None
        if now is not None and self.next_probe_at is not None:
            self.next_probe_at = now if self._candidate() else now + PROBE_INTERVAL


class ReceiveWatch:
    """The receiving side's black-hole detection (module docstring).

    `mss`: the largest MSS the peer may send us (ours from the SYN, lowered by each report); `version`: 4 or 6.
    `quiet_at`: when the connection, quiet since its last activity, asks the peer for its SND.NXT (None: not
    armed); `evidence_at` / `evidence_rcv`: when the peer was first seen to have sent beyond RCV.NXT, and
    RCV.NXT then; `big_seen`: a full-size segment arrived since; `hold_at`: when the evidence is judged.
    Counters: `reports` (ICMP messages asked for), `elicits` (quiet probes sent).
    """

    __slots__ = ("big_seen", "elicits", "evidence_at", "evidence_rcv", "hold_at", "mss", "quiet_at", "reports",
                 "version")

    def __init__(self, mss: int, version: int) -> None:
        self.mss = mss
        self.version = version
        self.quiet_at: float | None = None
        self.evidence_at: float | None = None
        self.evidence_rcv = 0
        self.big_seen = False
        self.hold_at: float | None = None
        self.reports = self.elicits = 0

    def __repr__(self) -> str:
        return f"<ReceiveWatch mss={self.mss} reports={self.reports}>"

    def activity(self, now: float, quiet: float) -> None:
        """Data moved (arrived, or ours was acknowledged): watch for the quiet that may follow."""
        if self.quiet_at is None:
            self.quiet_at = now + quiet

    def quiet_due(self, now: float, last_receive: float, quiet: float) -> bool:
        """The quiet timer fired at `now`; `last_receive`: when a segment last arrived. True: ask the peer now
        (once, until the next activity); else the timer is re-armed or dropped."""
        if last_receive + quiet > now:  # (the same sum as the deadline: no rounding loop)
            self.quiet_at = last_receive + quiet
            return False
        self.quiet_at = None
        if not self.next_report_mss():
            return False  # nothing lower is left to report
        self.elicits += 1
        return True

    def beyond(self, now: float, rcv_nxt: int, size: int, hold: float) -> None:
        """A segment with `size` payload bytes and a sequence number beyond `rcv_nxt` arrived at `now`: the
        peer has sent data we lack. A full-size one proves the path carries full size."""
        if self.evidence_at is None or rcv_nxt != self.evidence_rcv:
            self.evidence_at, self.evidence_rcv, self.big_seen = now, rcv_nxt, False
            self.hold_at = now + hold
        if size >= self.mss - 40:  # options take at most 40 bytes: this is a full-size segment
            self.big_seen = True

    def next_report_mss(self) -> int:
        """The MSS the next report would tell the peer (its MTU minus headers); 0 when none is left."""
        header = HEADERS[self.version]
        floor = FLOOR_MSS[self.version] + header
        for mtu in REPORT_MTUS:
            if mtu >= floor and mtu - header < self.mss:
                return mtu - header
        return 0

    def judge(self, now: float, rcv_nxt: int) -> int | None:
        """The hold timer fired at `now`: the MTU to report to the peer (an ICMP too-big) when the data it
        sent is still missing and nothing full-size came through, else None. The watch restarts either way."""
        stuck = rcv_nxt == self.evidence_rcv and not self.big_seen
        self.evidence_at = self.hold_at = None
        self.big_seen = False
        if not stuck:
            return None
        mss = self.next_report_mss()
        if not mss:
            return None
        self.mss = mss
        self.reports += 1
        return mss + HEADERS[self.version]


def too_big_message(local: bytes, remote: bytes, local_port: int, remote_port: int, seq: int, size: int,
                    mtu: int) -> tuple[int, bytes]:
    """The ICMP message a router on the path would have sent to `remote` (raw address) about its segment to
    us at sequence number `seq` in a packet of `size` bytes: (IP protocol number, the ICMP message) for a
    packet from `local` to `remote`. IPv4: destination unreachable, fragmentation needed, next-hop MTU `mtu`
    (RFC 792, RFC 1191 4); IPv6: packet too big, MTU `mtu` (RFC 4443 3.2). The quote is that packet's IP
    header and the first 8 bytes of its TCP header (ports, sequence number), which is what the receiving stack
    matches the connection by and checks the sequence number of (Linux: SND.UNA <= seq <= SND.NXT)."""
    tcp8 = _TCP8.pack(remote_port, local_port, seq & 0xFFFFFFFF)
    if len(remote) == 4:
        header = bytearray(_V4.pack(0x45, 0, size, 0, 0x4000, 64, PROTO_TCP, 0, remote, local))
        header[10:12] = internet_checksum(bytes(header)).to_bytes(2, "big")
        return 1, icmp.build_error(4, icmp.V4_UNREACHABLE, icmp.V4_CODE_FRAG_NEEDED, mtu, bytes(header) + tcp8)
    header6 = _V6.pack(0x60000000, size - 40, PROTO_TCP, 64, remote, local)
    return 58, icmp.build_error(6, icmp.V6_TOO_BIG, 0, mtu, header6 + tcp8, local, remote)
