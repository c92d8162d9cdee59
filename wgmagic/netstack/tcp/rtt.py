"""Round-trip time estimation and the retransmission timeout (RFC 6298), sans-I/O.

Samples come from echoed timestamps (RFC 7323 4) or, without them, from one timed segment at a time that was
never retransmitted (Karn's algorithm, RFC 6298 3). All times are seconds.
"""

from __future__ import annotations

from wgmagic.netstack.tcp.config import TcpConfig


class RttEstimator:
    """SRTT, RTTVAR and RTO per RFC 6298 section 2, plus the minimum RTT seen (for the reordering window).

    `srtt` is None until the first sample; `rto` starts at `config.rto_initial` and is kept within
    [`rto_min`, `rto_max`] once samples arrive (RFC 6298 2.4-2.5). `timed_seq` / `timed_at` hold the one
    segment being timed when timestamps are off (None: none timed).
    """

    __slots__ = ("min_rtt", "rto", "rto_initial", "rto_max", "rto_min", "rttvar", "srtt", "timed_at", "timed_seq")

    def __init__(self, config: TcpConfig) -> None:
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.rto = self.rto_initial = config.rto_initial
        self.rto_min = config.rto_min
        self.rto_max = config.rto_max
        self.min_rtt: float | None = None
        self.timed_seq: int | None = None
        self.timed_at = 0.0

    def __repr__(self) -> str:
        return f"<RttEstimator srtt={self.srtt} rttvar={self.rttvar} rto={self.rto}>"

    def sample(self, rtt: float | None) -> None:
        """Take one measurement (seconds); None or negative ones are ignored. RFC 6298 2.2-2.3 with
        alpha = 1/8, beta = 1/4, G = 1 ms."""
        if rtt is None or rtt < 0:
            return
        if self.min_rtt is None or rtt < self.min_rtt:
            self.min_rtt = rtt
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt
        self.rto = min(self.rto_max, max(self.rto_min, self.srtt + max(0.001, 4 * self.rttvar)))

    def back_off(self) -> None:
        """An RTO fired: double the timeout up to `rto_max` (RFC 6298 5.5) and stop timing (Karn)."""
        self.rto = min(self.rto_max, self.rto * 2)
        self.timed_seq = None

    def start_timing(self, seq: int, now: float) -> None:
        """Time the segment starting at `seq` (first transmission, sent at `now`) unless one is timed already."""
        if self.timed_seq is None:
            self.timed_seq, self.timed_at = seq, now

    def on_ack(self, ack: int, now: float) -> None:
        """An ACK up to `ack` (unwrapped sequence number) arrived at `now`: sample the timed segment if it
        is covered."""
        if self.timed_seq is not None and ack > self.timed_seq:
            self.sample(now - self.timed_at)
            self.timed_seq = None

    def reset_after_handshake(self) -> None:
        """With no sample from the handshake (the SYN was resent), restart from `rto_initial` (RFC 6298 5.7)."""
        if self.srtt is None:
            self.rto = self.rto_initial
