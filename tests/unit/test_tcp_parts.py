"""The machines TcpConnection composes, each on its own: RTT (RFC 6298), reassembly (RFC 9293 3.10.7.4,
RFC 2018 SACK blocks), the SACK scoreboard and recovery episode (RFC 6675, RFC 8985, RFC 3522), the
persist / keep-alive / window-update timers; and states that compare as strings."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wgmagic.netstack.tcp import connection
from wgmagic.netstack.tcp.config import TcpConfig
from wgmagic.netstack.tcp.reassembly import Reassembly
from wgmagic.netstack.tcp.recovery import LossRecovery, SackScoreboard, unwrap
from wgmagic.netstack.tcp.rtt import RttEstimator
from wgmagic.netstack.tcp.state import TcpState
from wgmagic.netstack.tcp.timers import (
    PERSIST_MAX,
    KeepaliveAction,
    KeepaliveTimer,
    PersistTimer,
    WindowUpdateTimer,
)
from wgmagic.netstack.wire.icmp import IcmpKind


# ---- names ------------------------------------------------------------------------------------------------
def test_states_compare_as_strings():
    assert not hasattr(connection, "TcpOptions")  # the 0.x alias is gone: TcpConfig is the one name
    assert TcpState.ESTABLISHED == "ESTABLISHED" and TcpState.TIME_WAIT == "TIME_WAIT"
    assert str(TcpState.FIN_WAIT_1) == "FIN_WAIT_1" and f"{TcpState.CLOSED}" == "CLOSED"
    assert json.dumps({"state": TcpState.LAST_ACK}) == '{"state": "LAST_ACK"}'
    assert TcpState.CLOSE_WAIT in ("CLOSED", "CLOSE_WAIT") and {"SYN_SENT": 1}[TcpState.SYN_SENT] == 1
    assert IcmpKind.TOO_BIG == "too_big" and str(IcmpKind.PORT_UNREACHABLE) == "port_unreachable"


# ---- RTT -------------------------------------------------------------------------------------------------
def test_rtt_first_and_later_samples_follow_rfc6298():
    rtt = RttEstimator(TcpConfig())
    assert rtt.srtt is None and rtt.rto == 1.0
    rtt.sample(0.1)
    assert (rtt.srtt, rtt.rttvar) == (0.1, 0.05) and rtt.rto == pytest.approx(0.3)  # 2.2
    rtt.sample(0.2)
    assert rtt.rttvar == pytest.approx(0.75 * 0.05 + 0.25 * 0.1)  # 2.3
    assert rtt.srtt == pytest.approx(0.875 * 0.1 + 0.125 * 0.2)
    assert rtt.rto == pytest.approx(rtt.srtt + 4 * rtt.rttvar)
    assert rtt.min_rtt == 0.1


def test_rtt_bounds_backoff_and_karn():
    rtt = RttEstimator(TcpConfig(rto_min=0.2, rto_max=3.0))
    rtt.sample(0.001)
    assert rtt.rto == 0.2  # floor (2.4)
    rtt.sample(-1.0)
    rtt.sample(None)
    assert rtt.srtt == 0.001  # ignored
    rtt.start_timing(100, 5.0)
    rtt.start_timing(200, 5.1)  # one timed segment at a time
    assert rtt.timed_seq == 100
    rtt.back_off()
    assert rtt.rto == 0.4 and rtt.timed_seq is None  # 5.5, and Karn: no sample from a resent segment
    for _ in range(10):
        rtt.back_off()
    assert rtt.rto == 3.0
    rtt.start_timing(300, 6.0)
    rtt.on_ack(300, 6.5)
    assert rtt.timed_seq == 300  # not covered yet
    rtt.on_ack(301, 6.5)
    assert rtt.timed_seq is None and rtt.min_rtt == 0.001


# ---- reassembly ------------------------------------------------------------------------------------------
def test_reassembly_merges_touching_and_overlapping_ranges():
    r = Reassembly(max_ranges=8)
    assert r.store(110, b"bbbbb")
    assert r.store(120, b"ddddd")
    assert r.store(115, b"ccccc")  # touches both: one range
    assert r.ranges == {110: b"bbbbbcccccddddd"} and r.held == 15 and r.latest == 110
    assert r.drain(100) == [] and r.held == 15
    assert r.drain(112) == [b"bbbcccccddddd"] and r.held == 0 and r.ranges == {}


def test_reassembly_refuses_past_its_range_limit():
    r = Reassembly(max_ranges=2)
    assert r.store(10, b"a") and r.store(20, b"b")
    assert not r.store(30, b"c")
    assert r.store(21, b"c")  # merges: no new range
    assert sorted(r.ranges) == [10, 20]


def test_sack_blocks_put_the_latest_first_then_highest():
    r = Reassembly(max_ranges=8)
    for seq in (100, 300, 500, 700):
        r.store(seq, b"x" * 10)
    r.store(300, b"y" * 5)
    assert r.sack_blocks() == ((300, 310), (700, 710), (500, 510))
    r.store(2**32 - 5, b"z" * 10)
    assert r.sack_blocks(1) == ((2**32 - 5, 5),)  # wire values wrap


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 990), st.integers(1, 60)), max_size=40), st.randoms())
def test_reassembly_delivers_the_stream_whatever_the_order(pieces, rnd):
    stream = bytes(random.Random(1).randbytes(1100))
    r = Reassembly(max_ranges=1000)
    rcv_nxt, got = 0, bytearray()
    pieces = pieces + [(start, 50) for start in range(0, 1100, 50)]
    rnd.shuffle(pieces)
    for start, length in pieces:
        end = min(start + length, len(stream))
        if end <= rcv_nxt:
            continue
        if start <= rcv_nxt:
            got += stream[rcv_nxt:end]
            rcv_nxt = end
        else:
            assert r.store(start, stream[start:end])
        for piece in r.drain(rcv_nxt):
            got += piece
            rcv_nxt += len(piece)
        assert all(s > rcv_nxt for s in r.ranges)
        assert r.held == sum(len(v) for v in r.ranges.values())
    assert bytes(got) == stream and r.held == 0


# ---- recovery ------------------------------------------------------------------------------------------
def test_unwrap_takes_the_nearest():
    assert unwrap(5, 2**32 - 10) == 2**32 + 5
    assert unwrap(2**32 - 10, 2**32 + 5) == 2**32 - 10
    assert unwrap(7, 7) == 7


def test_scoreboard_merges_ignores_invalid_and_advances():
    sb = SackScoreboard()
    sb.update(((200, 300), (400, 500), (50, 60), (900, 1200)), 100, 1000)  # below una, beyond snd_max: ignored
    assert sb.blocks == [(200, 300), (400, 500)]
    sb.update(((300, 400),), 100, 1000)
    assert sb.blocks == [(200, 500)] and sb.sacked_bytes() == 300
    assert sb.covering(250) == 500 and sb.covering(150) is None
    assert sb.next_block_after(150, 999) == 200 and sb.next_block_after(250, 999) == 999
    sb.advance(250)
    assert sb.blocks == [(250, 500)]
    sb.clear()
    assert sb.blocks == []


def test_loss_recovery_reorder_window_and_spurious_undo():
    rtt = RttEstimator(TcpConfig())
    rec = LossRecovery()
    assert rec.suspect(1.0, 100, rtt)  # no sample yet: no window, recover at once
    rtt.sample(0.08)
    assert not rec.suspect(1.0, 100, rtt) and rec.suspect_at == pytest.approx(1.02) and rec.suspect_una == 100
    rec.begin(100, 900, {"cwnd": 10}, tsval=5000)
    assert rec.active and rec.recover == 900 and rec.suspect_at is None and rec.retransmitted_to == 100
    assert rec.check_spurious((1, 4999)) == {"cwnd": 10}  # the ACK echoes the original's older TSval
    assert not rec.active and rec.reorder_mult == 2 and rec.spurious == 1
    assert rec.reorder_window(rtt) == pytest.approx(0.04)
    rec.begin(100, 900, {"cwnd": 10}, tsval=6000)
    assert rec.check_spurious((1, 6000)) is None and rec.active  # it echoes the retransmission: real loss
    rec.on_timeout()
    assert not rec.active and rec.undo is None and rec.dupacks == 0


# ---- timers -------------------------------------------------------------------------------------------
def test_persist_backs_off_to_its_cap():
    p = PersistTimer()
    p.arm(10.0, 0.5)
    p.arm(11.0, 0.5)  # armed already
    assert p.at == 10.5
    p.probed(10.5, 0.5)
    assert p.at == 11.5 and p.backoff == 1
    for _ in range(10):
        p.probed(20.0, 0.5)
    assert p.at == 20.0 + PERSIST_MAX


def test_keepalive_rearms_probes_and_dies():
    k = KeepaliveTimer(TcpConfig(keepalive_idle=60.0, keepalive_interval=5.0, keepalive_count=2))
    k.start(0.0)
    assert k.at == 60.0
    assert k.fire(60.0, last_receive=30.0) is KeepaliveAction.REARMED and k.at == 90.0
    assert k.fire(90.0, 30.0) is KeepaliveAction.PROBE and k.at == 95.0
    assert k.fire(95.0, 30.0) is KeepaliveAction.PROBE and k.at == 100.0
    assert k.fire(100.0, 30.0) is KeepaliveAction.DEAD
    off = KeepaliveTimer(TcpConfig())
    off.start(0.0)
    assert off.at is None and off.fire(1.0, 0.0) is KeepaliveAction.OFF


def test_window_update_repeats_until_data_or_the_last_try():
    w = WindowUpdateTimer()
    w.arm(1.0, 5000, 0.2)
    assert w.at == 1.2
    assert w.fire(1.2, 5000, True, 0.2) and w.at == pytest.approx(1.6)
    assert not w.fire(1.6, 6000, True, 0.2) and w.at is None  # data came
    w.arm(2.0, 6000, 0.2)
    assert not w.fire(2.2, 6000, False, 0.2)  # the window is no longer worth announcing
    w.arm(3.0, 6000, 0.2)
    assert [w.fire(9.0, 6000, True, 0.2) for _ in range(5)] == [True, True, True, True, False]
