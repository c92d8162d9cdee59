"""Step-exact TCP: one connection, a segment in a given state at a given time, and exactly the segments,
state and next timer that must follow (as smoltcp's and aioquic's tests pin them). The peer is played by hand.

Our side is A (198.18.0.2:50000); the peer B (198.18.0.1:9000) starts its sequence space at IRS.
"""

from __future__ import annotations

import ipaddress
import random
from typing import NamedTuple

import pytest

from wgmagic.netstack.events import NetstackEvent, TcpClosed, TcpConnected, TcpReadable, TcpWritable
from wgmagic.netstack.tcp.config import TcpConfig
from wgmagic.netstack.tcp.connection import TcpConnection
from wgmagic.netstack.tcp.state import TcpState
from wgmagic.netstack.wire import tcp as wire
from wgmagic.netstack.wire.tcp import ACK, FIN, HEADER, PSH, RST, SYN

A = (ipaddress.ip_address("198.18.0.2"), 50000)
B = (ipaddress.ip_address("198.18.0.1"), 9000)
IRS = 1000
PLAIN = TcpConfig(verify_checksums=True, timestamps=False, sack=False)
WITH_SACK = TcpConfig(verify_checksums=True, timestamps=False, sack=True)
MSS = 1380
WINDOW_FIELD = (4 * 1024 * 1024) >> 7  # the default 4 MiB receive buffer, scaled by our shift of 7


class Seg(NamedTuple):
    flags: int
    seq: int
    ack: int
    window: int
    payload: bytes
    opts: wire.Options


def decode(segment: bytes) -> Seg:
    assert wire.checksum_ok(A[0].packed, B[0].packed, segment)
    _, _, seq, ack, offset, flags, window, _, _ = HEADER.unpack_from(segment)
    header_len = (offset >> 4) * 4
    return Seg(flags, seq, ack, window, bytes(segment[header_len:]), wire.parse_options(segment[20:header_len]))


def from_peer(flags: int, seq: int, ack: int, window: int = 0xFFFF, payload: bytes = b"",
              options: bytes = b"") -> memoryview:
    return memoryview(wire.build_segment(B[0].packed, A[0].packed, B[1], A[1], seq, ack, flags, window, options,
                                         payload))


def out(conn: TcpConnection, now: float) -> list[Seg]:
    return [decode(s) for s in conn.segments_to_send(now)]


def kinds(events: list[NetstackEvent]) -> list[type]:
    return [type(e) for e in events]


def syn_sent(config: TcpConfig = PLAIN, now: float = 0.0) -> tuple[TcpConnection, Seg]:
    conn = TcpConnection.connect(A, B, now, options=config, rng=random.Random(7).randbytes, mss=MSS)
    (syn,) = out(conn, now)
    return conn, syn


def established(config: TcpConfig = PLAIN, rtt: float = 0.1) -> TcpConnection:
    conn, syn = syn_sent(config)
    options = wire.build_options(mss=MSS, wscale=7, sack_ok=config.sack)
    conn.receive_segment(from_peer(SYN | ACK, IRS, syn.seq + 1, options=options), rtt)
    out(conn, rtt)
    conn.events()
    return conn


# ---- opening ---------------------------------------------------------------------------------------------
def test_connect_sends_one_syn_and_arms_the_initial_rto():
    conn, syn = syn_sent(now=5.0)
    assert conn.state is TcpState.SYN_SENT and conn.state == "SYN_SENT"
    assert syn.flags == SYN and syn.seq == conn.iss and syn.ack == 0 and syn.payload == b""
    assert syn.opts == wire.Options(mss=MSS, wscale=7, sack_ok=False)
    assert syn.window == 0xFFFF
    assert conn.next_timer() == 5.0 + PLAIN.rto_initial
    assert out(conn, 5.0) == []


def test_syn_ack_in_syn_sent_establishes_acks_and_samples_the_rtt():
    conn, syn = syn_sent()
    conn.receive_segment(from_peer(SYN | ACK, IRS, syn.seq + 1, options=wire.build_options(mss=1200, wscale=7)), 0.1)
    assert conn.state is TcpState.ESTABLISHED
    (ack,) = out(conn, 0.1)
    assert (ack.flags, ack.seq, ack.ack, ack.window, ack.payload) == (ACK, syn.seq + 1, IRS + 1, WINDOW_FIELD, b"")
    assert kinds(conn.events()) == [TcpConnected, TcpWritable]
    assert conn.send_mss == 1200
    assert conn.srtt == pytest.approx(0.1) and conn.rto == pytest.approx(0.3)  # RFC 6298 2.2: 0.1 + 4 * 0.05
    assert conn.next_timer() is None


def test_syn_ack_with_a_wrong_ack_is_answered_with_a_reset():
    conn, syn = syn_sent()
    conn.receive_segment(from_peer(SYN | ACK, IRS, syn.seq + 77), 0.1)
    (rst,) = out(conn, 0.1)
    assert (rst.flags, rst.seq, rst.ack) == (RST, syn.seq + 77, 0)  # RFC 9293 3.10.7.3
    assert conn.state is TcpState.SYN_SENT and conn.events() == []


def test_reset_in_syn_sent_is_connection_refused():
    conn, syn = syn_sent()
    conn.receive_segment(from_peer(RST | ACK, 0, syn.seq + 1), 0.1)
    assert conn.state is TcpState.CLOSED and conn.is_finished()
    assert out(conn, 0.1) == []
    (closed,) = conn.events()
    assert isinstance(closed, TcpClosed) and isinstance(closed.error, ConnectionRefusedError)


def test_syn_rto_resends_the_syn_and_doubles_the_timeout():
    conn, syn = syn_sent()
    conn.handle_timer(1.0)
    (again,) = out(conn, 1.0)
    assert again == syn
    assert conn.rto == 2.0 and conn.next_timer() == 3.0


def test_accept_syn_answers_syn_ack_echoing_the_options():
    syn = from_peer(SYN, IRS, 0, options=wire.build_options(mss=1300, wscale=3, sack_ok=True))
    conn = TcpConnection.accept_syn(A, B, syn, 2.0, options=WITH_SACK, rng=random.Random(7).randbytes, mss=MSS)
    assert conn is not None and conn.state is TcpState.SYN_RECEIVED
    (syn_ack,) = out(conn, 2.0)
    assert (syn_ack.flags, syn_ack.seq, syn_ack.ack) == (SYN | ACK, conn.iss, IRS + 1)
    assert syn_ack.opts == wire.Options(mss=MSS, wscale=7, sack_ok=True)
    assert conn.next_timer() == 3.0
    conn.receive_segment(from_peer(ACK, IRS + 1, conn.iss + 1), 2.05)
    assert conn.state is TcpState.ESTABLISHED and kinds(conn.events()) == [TcpConnected, TcpWritable]
    assert out(conn, 2.05) == [] and conn.next_timer() is None


# ---- receiving -------------------------------------------------------------------------------------------
def test_one_in_order_segment_is_acked_after_the_delayed_ack_timer():
    conn = established()
    conn.receive_segment(from_peer(ACK | PSH, IRS + 1, conn.iss + 1, payload=b"x" * 100), 1.0)
    assert out(conn, 1.0) == []
    assert kinds(conn.events()) == [TcpReadable]
    assert conn.next_timer() == pytest.approx(1.0 + PLAIN.delayed_ack)
    conn.handle_timer(1.04)
    (ack,) = out(conn, 1.04)
    assert (ack.flags, ack.seq, ack.ack, ack.payload) == (ACK, conn.iss + 1, IRS + 101, b"")
    assert conn.recv(1000) == b"x" * 100


def test_every_second_segment_is_acked_at_once():
    conn = established()
    for i in range(2):
        conn.receive_segment(from_peer(ACK, IRS + 1 + i * MSS, conn.iss + 1, payload=bytes(MSS)), 1.0)
    (ack,) = out(conn, 1.0)
    # no delayed ACK left (the next timer is the black-hole watch's quiet check, tcp/pmtu.py)
    assert ack.ack == IRS + 1 + 2 * MSS and conn.delack_at is None and conn.next_timer() == conn.rx_pmtu.quiet_at


def test_out_of_order_segment_gets_an_immediate_duplicate_ack_with_its_sack_block():
    conn = established(WITH_SACK)
    conn.receive_segment(from_peer(ACK, IRS + 1 + MSS, conn.iss + 1, payload=bytes(MSS)), 1.0)
    (dup,) = out(conn, 1.0)
    assert dup.ack == IRS + 1
    assert dup.opts.sack == ((IRS + 1 + MSS, IRS + 1 + 2 * MSS),)
    assert conn.events() == [] and conn.recv_available() == 0
    conn.receive_segment(from_peer(ACK, IRS + 1, conn.iss + 1, payload=bytes(MSS)), 1.01)  # fills the hole
    (ack,) = out(conn, 1.01)
    assert ack.ack == IRS + 1 + 2 * MSS and ack.opts.sack == ()
    assert conn.recv_available() == 2 * MSS


def test_fin_in_established_moves_to_close_wait_and_is_acked_at_once():
    conn = established()
    conn.receive_segment(from_peer(ACK | FIN, IRS + 1, conn.iss + 1, payload=b"bye"), 1.0)
    assert conn.state is TcpState.CLOSE_WAIT and conn.eof
    (ack,) = out(conn, 1.0)
    assert ack.ack == IRS + 1 + 3 + 1
    conn.close(1.1)
    (fin,) = out(conn, 1.1)
    assert fin.flags == FIN | ACK and fin.seq == conn.iss + 1 and conn.state is TcpState.LAST_ACK
    assert conn.next_timer() == pytest.approx(1.1 + conn.rto)
    conn.receive_segment(from_peer(ACK, IRS + 5, conn.iss + 2), 1.2)
    assert conn.state is TcpState.CLOSED and TcpClosed in kinds(conn.events())


def test_our_fin_acked_then_theirs_enters_time_wait_for_the_configured_time():
    conn = established()
    conn.shutdown_write(1.0)
    (fin,) = out(conn, 1.0)
    assert fin.flags == FIN | ACK and conn.state is TcpState.FIN_WAIT_1
    conn.receive_segment(from_peer(ACK, IRS + 1, conn.iss + 2), 1.1)
    assert conn.state is TcpState.FIN_WAIT_2
    conn.receive_segment(from_peer(ACK | FIN, IRS + 1, conn.iss + 2), 1.2)
    assert conn.state is TcpState.TIME_WAIT
    (ack,) = out(conn, 1.2)
    assert ack.ack == IRS + 2
    assert conn.next_timer() == pytest.approx(1.2 + PLAIN.time_wait)
    conn.handle_timer(1.2 + PLAIN.time_wait)
    assert conn.is_finished()


def test_reset_with_the_exact_sequence_number_resets_the_connection():
    conn = established()
    conn.receive_segment(from_peer(RST, IRS + 1, 0), 1.0)
    assert conn.state is TcpState.CLOSED and isinstance(conn.error, ConnectionResetError)
    assert out(conn, 1.0) == []


# ---- sending ---------------------------------------------------------------------------------------------
def test_send_fills_the_initial_window_in_mss_segments():
    conn = established()
    conn.send(bytes(20 * MSS))
    segments = out(conn, 1.0)
    assert [s.seq for s in segments] == [conn.iss + 1 + i * MSS for i in range(10)]  # IW10 (RFC 6928)
    assert all(len(s.payload) == MSS and s.flags == ACK for s in segments)
    assert conn.next_timer() == pytest.approx(1.0 + conn.rto)


def test_rto_resends_the_first_unacknowledged_segment_and_backs_off():
    conn = established()
    conn.send(bytes(3 * MSS))
    out(conn, 1.0)
    rto = conn.rto
    conn.handle_timer(1.0 + rto)
    (again,) = out(conn, 1.0 + rto)  # go-back-N starts with one segment: cwnd is one MSS after an RTO
    assert again.seq == conn.iss + 1 and len(again.payload) == MSS
    assert conn.rto == pytest.approx(2 * rto) and conn.next_timer() == pytest.approx(1.0 + 3 * rto)


def test_three_duplicate_acks_trigger_one_fast_retransmit():
    conn = established()
    conn.send(bytes(10 * MSS))
    out(conn, 1.0)
    conn.receive_segment(from_peer(ACK, IRS + 1, conn.iss + 1 + MSS), 1.2)  # the first segment arrived
    assert out(conn, 1.2) == []
    for i in range(3):
        conn.receive_segment(from_peer(ACK, IRS + 1, conn.iss + 1 + MSS), 1.21 + i / 1000)
    # The third duplicate ACK suspects a loss; it is declared after the reordering window (RFC 8985 6.2):
    # min_rtt / 4 = 25 ms here (the handshake's 100 ms sample).
    assert out(conn, 1.212) == [] and not conn.in_recovery
    assert conn.next_timer() == pytest.approx(1.212 + 0.025)
    conn.handle_timer(1.237)
    (resent,) = out(conn, 1.237)
    assert resent.seq == conn.iss + 1 + MSS and len(resent.payload) == MSS
    assert conn.in_recovery and conn.retransmits == 1


def test_a_hole_that_fills_within_the_reordering_window_is_no_loss():
    conn = established()
    conn.send(bytes(10 * MSS))
    out(conn, 1.0)
    for i in range(3):
        conn.receive_segment(from_peer(ACK, IRS + 1, conn.iss + 1), 1.2 + i / 1000)
    conn.receive_segment(from_peer(ACK, IRS + 1, conn.iss + 1 + 10 * MSS), 1.21)  # the hole filled
    assert conn.next_timer() == conn.rx_pmtu.quiet_at and not conn.in_recovery and conn.retransmits == 0


def test_a_zero_window_stops_sending_and_arms_the_persist_probe():
    conn = established()
    conn.receive_segment(from_peer(ACK, IRS + 1, conn.iss + 1, window=0), 1.0)
    conn.send(b"data")
    assert out(conn, 1.0) == []
    conn.receive_segment(from_peer(ACK, IRS + 1, conn.iss + 1, window=0), 1.0)  # the window is still shut
    assert conn.next_timer() == pytest.approx(1.0 + conn.rto)
    conn.handle_timer(1.0 + conn.rto)
    (probe,) = out(conn, 1.0 + conn.rto)
    assert probe.seq == conn.iss and probe.payload == b"" and probe.flags == ACK  # RFC 9293 3.8.6.1
    conn.receive_segment(from_peer(ACK, IRS + 1, conn.iss + 1, window=100), 2.0)
    (data,) = out(conn, 2.0)
    assert data.payload == b"data" and data.flags == ACK | PSH


def test_keepalive_probes_then_gives_up():
    config = TcpConfig(verify_checksums=True, timestamps=False, sack=False, keepalive_idle=10.0,
                       keepalive_interval=1.0, keepalive_count=2)
    conn = established(config)
    assert conn.next_timer() == pytest.approx(10.1)
    for when in (10.1, 11.1):
        conn.handle_timer(when)
        (probe,) = out(conn, when)
        assert probe.seq == conn.iss and probe.payload == b""
    conn.handle_timer(12.1)
    assert conn.state is TcpState.CLOSED and isinstance(conn.error, TimeoutError)


@pytest.mark.parametrize("separate_ack", [True, False])
def test_data_right_after_a_passive_open_is_taken_within_the_syn_acks_window(separate_ack):
    """The SYN-ACK offers a window: the client's first data (after its handshake ACK, or carried on it) is
    within it and taken at once, not refused as beyond a zero window until a window update and an RTO later
    (that cost every connection to `wgmagic gateway` and `expose` 200 ms and one retransmission)."""
    syn = from_peer(SYN, IRS, 0, options=wire.build_options(mss=1300, wscale=3))
    conn = TcpConnection.accept_syn(A, B, syn, 2.0, options=PLAIN, rng=random.Random(7).randbytes, mss=MSS)
    assert conn is not None
    (syn_ack,) = out(conn, 2.0)
    startup = b"\x00\x00\x00\x08\x04\xd2\x16\x2f"  # eight bytes, as a Postgres SSLRequest
    if separate_ack:
        conn.receive_segment(from_peer(ACK, IRS + 1, conn.iss + 1), 2.001)
        assert out(conn, 2.001) == []
    conn.receive_segment(from_peer(ACK | PSH, IRS + 1, conn.iss + 1, payload=startup), 2.002)
    assert conn.state is TcpState.ESTABLISHED and TcpReadable in kinds(conn.events())
    assert conn.recv(100) == startup and conn.drops == 0
    assert syn_ack.window == 0xFFFF
