"""Congestion control: Reno (RFC 5681) and CUBIC (RFC 9438), in bytes.

The connection calls on_ack for newly acknowledged bytes outside recovery, on_loss when fast retransmit
starts, exit_recovery when the recovery point is acknowledged, on_timeout on an RTO.
"""

from __future__ import annotations

INITIAL_WINDOW_SEGMENTS = 10


class Reno:
    """Reno congestion control in bytes (RFC 5681): slow start with byte counting (RFC 3465, L = 2 MSS),
    congestion avoidance of one MSS per window, halving on loss; IW10 (RFC 6928)."""

    def __init__(self, mss: int) -> None:
        self.mss = mss
        self.cwnd = INITIAL_WINDOW_SEGMENTS * mss
        self.ssthresh = 1 << 30
        self._avoid_credit = 0

    def on_ack(self, acked: int, now: float, srtt: float | None) -> None:
        """`acked` new bytes were acknowledged outside recovery at `now` (seconds; `srtt` may be None)."""
        if self.cwnd < self.ssthresh:
            self.cwnd += min(acked, 2 * self.mss * max(1, acked // self.mss))  # slow start, counting bytes
        else:
            self._avoid_credit += acked
            if self._avoid_credit >= self.cwnd:
                self._avoid_credit -= self.cwnd
                self.cwnd += self.mss

    def on_loss(self, flight: int, now: float) -> None:
        """Fast retransmit starts with `flight` bytes outstanding: ssthresh = max(flight / 2, 2 MSS) (RFC 5681 3.2)."""
        self.ssthresh = max(flight // 2, 2 * self.mss)
        self.cwnd = self.ssthresh + 3 * self.mss

    def inflate(self) -> None:
        """A duplicate ACK during NewReno recovery: one more MSS may go out (RFC 6582 3.2)."""
        self.cwnd += self.mss

    def exit_recovery(self) -> None:
        """The recovery point was acknowledged: deflate to ssthresh (RFC 6582 3.2 step 3)."""
        self.cwnd = self.ssthresh

    def on_timeout(self, flight: int, now: float) -> None:
        """An RTO fired with `flight` bytes outstanding: back to one MSS (RFC 5681 3.1)."""
        self.ssthresh = max(flight // 2, 2 * self.mss)
        self.cwnd = self.mss


class Cubic(Reno):
    """CUBIC window growth after a loss: W(t) = C (t - K)^3 + W_max, with Reno-friendly floor."""

    C = 0.4
    BETA = 0.7

    def __init__(self, mss: int) -> None:
        super().__init__(mss)
        self.w_max = 0.0
        self.epoch: float | None = None
        self.k = 0.0
        self.w_est = 0.0
        self._now = 0.0

    def on_ack(self, acked: int, now: float, srtt: float | None) -> None:
        """`acked` new bytes acknowledged at `now`: slow start below ssthresh, else the cubic function of the
        time since the last loss (RFC 9438 4.2), never below the Reno-friendly estimate (4.3)."""
        self._now = now
        if self.cwnd < self.ssthresh:
            super().on_ack(acked, now, srtt)
            return
        segments = self.cwnd / self.mss
        if self.epoch is None:
            self.epoch = now
            if segments < self.w_max:
                self.k = ((self.w_max - segments) / self.C) ** (1 / 3)
            else:
                self.k, self.w_max = 0.0, segments
            self.w_est = segments
        t = now - self.epoch + (srtt or 0.0)
        target = self.C * (t - self.k) ** 3 + self.w_max
        # The Reno-friendly estimate (RFC 9438 4.3) keeps CUBIC no slower than Reno at short RTTs.
        self.w_est += 3 * (1 - self.BETA) / (1 + self.BETA) * (acked / self.mss) / max(segments, 1)
        target = max(target, self.w_est)
        if target > segments:
            growth = min((target - segments) / segments, 0.5) * (acked / self.mss)
            self.cwnd += int(growth * self.mss)
        else:
            self.cwnd += int(self.mss * (acked / self.mss) / (100 * segments))

    def on_loss(self, flight: int, now: float) -> None:
        """A loss with `flight` bytes outstanding: W_max and K recomputed, cwnd times BETA (RFC 9438 4.6-4.7)."""
        segments = self.cwnd / self.mss
        self.w_max = segments
        self.ssthresh = max(int(self.cwnd * self.BETA), 2 * self.mss)
        self.cwnd = self.ssthresh
        self.epoch = None

    def inflate(self) -> None:
        """Nothing: CUBIC keeps its reduced window through recovery instead of inflating it."""

    def exit_recovery(self) -> None:
        """The recovery point was acknowledged: cwnd = max(ssthresh, 2 MSS) (RFC 9438 4.6)."""
        self.cwnd = max(self.ssthresh, 2 * self.mss)

    def on_timeout(self, flight: int, now: float) -> None:
        """An RTO: W_max remembered, ssthresh = BETA * cwnd, cwnd one MSS, the cubic epoch restarts
        (RFC 9438 4.8)."""
        self.w_max = self.cwnd / self.mss
        self.ssthresh = max(int(self.cwnd * self.BETA), 2 * self.mss)
        self.cwnd = self.mss
        self.epoch = None
