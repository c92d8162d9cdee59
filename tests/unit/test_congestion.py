"""Congestion control (wgmagic/netstack/tcp/congestion.py), step by step with exact windows in bytes.

Reno: RFC 5681 (slow start 3.1 with RFC 3465's byte counting, congestion avoidance, fast retransmit 3.2, the
RTO's reset to one segment), RFC 6582 (NewReno's inflation and deflation), RFC 6928 (IW10). CUBIC: RFC 9438
(W_cubic(t) = C (t - K)^3 + W_max, eq. 1; K = cbrt((W_max - cwnd_epoch) / C), eq. 2; the target W_cubic(t + RTT)
capped at 1.5 cwnd, 4.2; the Reno-friendly W_est, eq. 4; beta_cubic = 0.7 on loss, 4.6; the RTO, 4.8).
The expected values are worked out here from the RFCs' formulas, not read back from the code.
"""

from __future__ import annotations

import pytest

from wgmagic.netstack.tcp.congestion import INITIAL_WINDOW_SEGMENTS, Cubic, Reno

MSS = 1000


@pytest.mark.parametrize("algorithm", [Reno, Cubic])
def test_initial_window_is_ten_segments_and_slow_start_counts_bytes(algorithm):
    cc = algorithm(MSS)
    assert INITIAL_WINDOW_SEGMENTS == 10 and cc.cwnd == 10 * MSS  # RFC 6928
    cc.on_ack(MSS, 0.0, None)
    assert cc.cwnd == 11_000  # one segment acked: cwnd += min(N, L * SMSS) = 1000
    cc.on_ack(500, 0.0, None)
    assert cc.cwnd == 11_500  # a partial segment counts its bytes (RFC 3465 2.2)
    cc.on_ack(5 * MSS, 0.0, None)
    assert cc.cwnd == 16_500  # a stretch ACK of 5 segments: min(5000, 2 * 1000 * 5)


def test_reno_fast_retransmit_halves_the_flight_and_inflates_then_deflates():
    cc = Reno(MSS)
    cc.on_loss(20_000, 1.0)
    assert (cc.ssthresh, cc.cwnd) == (10_000, 13_000)  # RFC 5681 (4): max(FlightSize / 2, 2 SMSS), + 3 SMSS
    cc.inflate()
    cc.inflate()
    assert cc.cwnd == 15_000  # one SMSS per further duplicate ACK (RFC 6582 3.2 step 4)
    cc.exit_recovery()
    assert cc.cwnd == 10_000  # full ACK: deflate to ssthresh (RFC 6582 3.2 step 3)


def test_reno_ssthresh_never_below_two_segments():
    cc = Reno(MSS)
    cc.on_loss(1500, 1.0)
    assert (cc.ssthresh, cc.cwnd) == (2 * MSS, 5 * MSS)
    cc.on_timeout(1000, 2.0)
    assert (cc.ssthresh, cc.cwnd) == (2 * MSS, MSS)


def test_reno_congestion_avoidance_adds_one_segment_per_window_acknowledged():
    cc = Reno(MSS)
    cc.on_loss(20_000, 1.0)
    cc.exit_recovery()
    assert cc.cwnd == cc.ssthresh == 10_000  # at ssthresh: congestion avoidance
    for _ in range(9):
        cc.on_ack(MSS, 2.0, 0.1)
    assert cc.cwnd == 10_000  # 9000 of 10000 bytes acknowledged: not yet
    cc.on_ack(MSS, 2.0, 0.1)
    assert cc.cwnd == 11_000  # a whole window acknowledged: + 1 SMSS (RFC 5681 3.1, RFC 3465 2.1)
    for _ in range(10):
        cc.on_ack(MSS, 2.0, 0.1)
    assert cc.cwnd == 11_000  # the next window is 11000 bytes
    cc.on_ack(MSS, 2.0, 0.1)
    assert cc.cwnd == 12_000


def test_reno_timeout_resets_to_one_segment_and_slow_starts_to_ssthresh():
    cc = Reno(MSS)
    cc.on_timeout(30_000, 1.0)
    assert (cc.ssthresh, cc.cwnd) == (15_000, MSS)  # RFC 5681 (4) and LW = 1 SMSS
    while cc.cwnd < cc.ssthresh:
        cc.on_ack(MSS, 2.0, 0.1)
    assert cc.cwnd == 15_000  # slow start: one SMSS per segment acknowledged, up to ssthresh exactly


ALPHA = 3 * (1 - Cubic.BETA) / (1 + Cubic.BETA)  # RFC 9438 eq. 4's alpha_cubic


def cubic_after_loss(cwnd: int) -> Cubic:
    cc = Cubic(MSS)
    cc.cwnd = cwnd
    cc.on_loss(cwnd, 10.0)
    cc.exit_recovery()
    return cc


def test_cubic_loss_multiplies_by_beta_and_remembers_w_max():
    cc = cubic_after_loss(20_000)
    assert (cc.w_max, cc.ssthresh, cc.cwnd) == (20.0, 14_000, 14_000)  # 0.7 * 20000 (RFC 9438 4.6)
    cc.inflate()
    assert cc.cwnd == 14_000  # no NewReno inflation


def test_cubic_first_ack_of_an_epoch_follows_w_cubic_at_t_plus_rtt():
    cc = cubic_after_loss(20_000)
    cc.on_ack(MSS, 20.0, 0.1)
    k = ((20.0 - 14.0) / Cubic.C) ** (1 / 3)  # eq. 2 with cwnd_epoch = 14 segments
    assert cc.epoch == 20.0 and cc.k == pytest.approx(k)
    target = Cubic.C * (0.1 - k) ** 3 + 20.0  # eq. 1 at t + RTT = 0.1 s
    w_est = 14.0 + ALPHA * 1 / 14.0
    assert target > w_est  # the cubic region
    growth = min((target - 14.0) / 14.0, 0.5)  # (target - cwnd) / cwnd per segment acknowledged
    assert cc.cwnd == 14_000 + int(growth * MSS)


def test_cubic_reaches_w_max_at_k():
    cc = cubic_after_loss(20_000)
    cc.on_ack(MSS, 20.0, 0.0)  # starts the epoch (t = 0: W_cubic(0) = cwnd_epoch, no growth)
    assert cc.cwnd == 14_000 + int((ALPHA / 14.0) / 14.0 * MSS)  # W_est's share only
    before = cc.cwnd
    cc.on_ack(MSS, 20.0 + cc.k, 0.0)  # t = K: W_cubic = W_max = 20 segments
    segments = before / MSS
    assert cc.cwnd == before + int(min((20.0 - segments) / segments, 0.5) * MSS)


def test_cubic_target_is_capped_at_one_and_a_half_windows():
    cc = cubic_after_loss(20_000)
    cc.on_ack(MSS, 20.0, 0.0)
    before = cc.cwnd
    cc.on_ack(4 * MSS, 20.0 + 100.0, 0.0)  # far past K: W_cubic is huge
    assert cc.cwnd == before + int(0.5 * 4 * MSS)


def test_cubic_above_w_max_starts_at_the_plateau_and_the_reno_friendly_estimate_leads():
    cc = Cubic(MSS)
    cc.ssthresh = 10 * MSS  # at ssthresh with no loss yet: W_max = cwnd, K = 0
    cc.on_ack(MSS, 5.0, 0.01)
    assert (cc.k, cc.w_max) == (0.0, 10.0)
    w_cubic = Cubic.C * 0.01**3 + 10.0
    w_est = 10.0 + ALPHA / 10.0
    assert w_est > w_cubic  # eq. 4 leads at short RTTs: CUBIC is no slower than Reno
    assert cc.cwnd == 10_000 + int((w_est - 10.0) / 10.0 * MSS)


def test_cubic_timeout_keeps_w_max_and_restarts_the_epoch():
    cc = cubic_after_loss(20_000)
    cc.on_ack(MSS, 20.0, 0.1)
    window = cc.cwnd
    cc.on_timeout(window, 21.0)
    assert cc.w_max == window / MSS and cc.ssthresh == int(window * Cubic.BETA) and cc.cwnd == MSS
    assert cc.epoch is None  # RFC 9438 4.8
    cc.on_ack(MSS, 22.0, 0.1)
    assert cc.cwnd == 2 * MSS  # slow start again below ssthresh
