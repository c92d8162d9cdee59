"""TCP driven in-process: two connections over a seeded lossy, reordering, duplicating link, a fake clock."""

from __future__ import annotations

import ipaddress
import itertools
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wgmagic.netstack.dns import candidates, parse_answer
from wgmagic.netstack.tcp.config import TcpConfig
from wgmagic.netstack.tcp.connection import TcpClosed, TcpConnection, reset_for
from wgmagic.netstack.wire import tcp as wire

A = (ipaddress.ip_address("198.18.0.2"), 50000)
B = (ipaddress.ip_address("198.18.0.1"), 9000)
OPTS = TcpConfig(verify_checksums=True)


class Link:
    def __init__(self, loss=0.0, reorder=0.0, duplicate=0.0, seed=1, delay=0.005):
        self.rng = random.Random(seed)
        self.loss, self.reorder, self.duplicate, self.delay = loss, reorder, duplicate, delay
        self.now = 0.0
        self.queue: list[tuple[float, int, TcpConnection, bytes]] = []
        self.order = 0

    def carry(self, src: TcpConnection, dst: TcpConnection) -> None:
        for segment in src.segments_to_send(self.now):
            if self.rng.random() < self.loss:
                continue
            copies = 2 if self.rng.random() < self.duplicate else 1
            for _ in range(copies):
                extra = 0.02 if self.rng.random() < self.reorder else 0.0
                self.order += 1
                self.queue.append((self.now + self.delay + extra + self.rng.random() * 0.001, self.order, dst,
                                   segment))

    def step(self, conns: tuple[TcpConnection, TcpConnection]) -> bool:
        a, b = conns
        self.carry(a, b)
        self.carry(b, a)
        self.queue.sort()
        deadlines = [t for t in (a.next_timer(), b.next_timer()) if t is not None]
        candidates_ = ([self.queue[0][0]] if self.queue else []) + deadlines
        if not candidates_:
            return False
        self.now = max(self.now, min(candidates_))
        while self.queue and self.queue[0][0] <= self.now:
            _, _, dst, segment = self.queue.pop(0)
            dst.receive_segment(memoryview(segment), self.now)
        for conn in conns:
            deadline = conn.next_timer()
            if deadline is not None and deadline <= self.now:
                conn.handle_timer(self.now)
        return True


def open_pair(link: Link) -> tuple[TcpConnection, TcpConnection]:
    client = TcpConnection.connect(A, B, link.now, options=OPTS, rng=random.Random(2).randbytes, mss=1380)
    (syn,) = client.segments_to_send(link.now)
    server = TcpConnection.accept_syn(B, A, memoryview(syn), link.now, options=OPTS,
                                      rng=random.Random(3).randbytes, mss=1380)
    assert server is not None
    for _ in range(50):
        link.step((client, server))
        if client.state == server.state == "ESTABLISHED":
            break
    return client, server


def transfer(link: Link, size: int) -> tuple[TcpConnection, TcpConnection, bytes]:
    client, server = open_pair(link)
    data = random.Random(5).randbytes(size)
    sent, got = 0, bytearray()
    for _ in range(2_000_000):
        if sent < size:
            sent += client.send(memoryview(data)[sent:sent + 65536])
        got += server.recv(1 << 20)
        if len(got) == size:
            break
        if not link.step((client, server)):
            break
    return client, server, bytes(got) == data and bytes(got)


@pytest.mark.parametrize(("loss", "reorder", "duplicate"), [(0, 0, 0), (0.03, 0.1, 0.01), (0.1, 0.0, 0.0)])
def test_transfer_is_exact_over_a_bad_link(loss, reorder, duplicate):
    link = Link(loss, reorder, duplicate, seed=11)
    client, _server, ok = transfer(link, 2 << 20)
    assert ok
    if loss:
        assert client.retransmits > 0
        assert link.now < 60  # recovered by SACK/fast retransmit, not a crawl of RTOs


def test_handshake_negotiates_options():
    client, server = open_pair(Link())
    assert client.ts_ok and client.sack_ok and client.snd_wscale == 7 and server.snd_wscale == 7
    assert client.send_mss == 1380


def test_close_both_ways_and_time_wait():
    link = Link()
    client, server = open_pair(link)
    client.send(b"bye")
    client.shutdown_write(link.now)
    for _ in range(20):
        link.step((client, server))
    assert server.recv(10) == b"bye" and server.eof and server.state == "CLOSE_WAIT"
    assert client.state == "FIN_WAIT_2"
    server.close(link.now)
    closed_at = link.now
    states = set()
    for _ in range(20):
        link.step((client, server))
        states.add(client.state)
    assert server.is_finished() and server.error is None
    assert "TIME_WAIT" in states and client.is_finished() and client.error is None
    assert link.now - closed_at >= client.opts.time_wait


def test_rst_exact_resets_in_window_challenges():
    link = Link()
    client, _server = open_pair(link)
    seq = client.rcv_nxt
    near = wire.build_segment(B[0].packed, A[0].packed, B[1], A[1], seq + 100, 0, wire.RST, 0)
    client.receive_segment(near, link.now)
    assert client.state == "ESTABLISHED" and client.ack_now  # challenge ACK (RFC 5961)
    client.segments_to_send(link.now)
    exact = wire.build_segment(B[0].packed, A[0].packed, B[1], A[1], seq, 0, wire.RST, 0)
    client.receive_segment(exact, link.now)
    assert client.state == "CLOSED" and isinstance(client.error, ConnectionResetError)
    assert any(isinstance(e, TcpClosed) for e in client.events())


def test_refused_and_timeout():
    client = TcpConnection.connect(A, B, 0.0, options=OPTS, mss=1380, timeout=3.0)
    (syn,) = client.segments_to_send(0.0)
    rst = reset_for(B, A, syn)
    client.receive_segment(rst, 0.01)
    assert isinstance(client.error, ConnectionRefusedError)
    lonely = TcpConnection.connect(A, B, 0.0, options=OPTS, mss=1380, timeout=3.0)
    now, syns = 0.0, 0
    while not lonely.is_finished() and now < 10:
        syns += len(lonely.segments_to_send(now))
        now = lonely.next_timer() or now + 0.1
        lonely.handle_timer(now)
    assert isinstance(lonely.error, TimeoutError) and 2 <= syns <= 4 and now == pytest.approx(3.0)


def fill_a_small_window(size: int) -> tuple[Link, TcpConnection, TcpConnection, bytes, int]:
    """A server with a 64 KiB receive buffer that nobody reads, and a client with `size` bytes to send."""
    link = Link()
    client, server = open_pair(link)
    server.opts = TcpConfig(recv_buffer=64 * 1024, verify_checksums=True)
    server.window_cap = 64 * 1024
    data = bytes(size)
    sent = 0
    for _ in range(2000):
        sent += client.send(memoryview(data)[sent:])
        link.step((client, server))
    return link, client, server, data, sent


def test_zero_window_then_reopen():
    link, client, server, data, sent = fill_a_small_window(300 * 1024)
    assert server.recv_available() <= 64 * 1024  # the window closed instead of memory growing
    assert sent < len(data) or client.snd_una - client.iss < len(data)
    got = 0
    for _ in range(20000):
        got += len(server.recv(1 << 20))
        sent += client.send(memoryview(data)[sent:])
        if got == len(data):
            break
        link.step((client, server))
    assert got == len(data)


def test_lost_window_update_is_repeated_until_data_flows():
    link, client, server, data, sent = fill_a_small_window(200 * 1024)
    assert server.last_advertised_right - server.rcv_nxt < server.send_mss  # the window is closed
    server.recv(1 << 20)  # the reader drains it: a window update goes out ...
    lost = server.segments_to_send(link.now)  # ... and is lost
    assert lost and server.window_update_at is not None
    link.now = server.window_update_at  # nothing arrives; the repeat is due
    server.handle_timer(link.now)
    repeated = server.segments_to_send(link.now)
    assert repeated, "the window update was not repeated"
    for segment in repeated:
        client.receive_segment(memoryview(segment), link.now)
    assert client.snd_wnd >= server.send_mss  # the sender learned the window without waiting for a probe
    got = 0
    for _ in range(20000):
        got += len(server.recv(1 << 20))
        sent += client.send(memoryview(data)[sent:])
        if client.snd_una - client.iss - 1 >= len(data) and not server.recv_available():
            break
        link.step((client, server))
    assert server.window_update_at is None or server.rcv_nxt != server.window_update_nxt


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=60))
def test_option_parser_never_raises(data):
    wire.parse_options(data)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 255), st.integers(0, 65535),
       st.binary(max_size=40), st.sampled_from(["ESTABLISHED", "SYN_SENT", "FIN_WAIT_1", "CLOSE_WAIT"]))
def test_arbitrary_segments_never_raise(seq, ack, flags, window, payload, state):
    link = Link()
    client, _server = open_pair(link)
    if state == "SYN_SENT":
        client = TcpConnection.connect(A, B, 0.0, options=OPTS, mss=1380)
    elif state == "FIN_WAIT_1":
        client.shutdown_write(0.0)
        client.segments_to_send(0.0)
    elif state == "CLOSE_WAIT":
        client.state = "CLOSE_WAIT"
    header = struct.pack("!HHIIBBHHH", B[1], A[1], seq, ack, 0x50, flags, window, 0, 0)
    client.receive_segment(header + payload, 1.0)
    client.segments_to_send(1.0)
    assert client.internal_errors == 0


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_dns_answer_parser_never_raises(data):
    parse_answer(data)


def test_search_list_follows_ndots():
    assert candidates("db", ("internal",)) == ["db.internal.", "db."]
    assert candidates("db.internal", ("internal",)) == ["db.internal.", "db.internal.internal."]
    assert candidates("x.", ("internal",)) == ["x."]


NO_TS = TcpConfig(verify_checksums=True, timestamps=False)


def crafted_pair() -> tuple[TcpConnection, Link]:
    """A client whose peer we play by hand: no timestamps, so crafted segments need no TS option."""
    link = Link()
    client = TcpConnection.connect(A, B, 0.0, options=NO_TS, rng=random.Random(2).randbytes, mss=1380)
    (syn,) = client.segments_to_send(0.0)
    server_isn = 5000
    assert syn
    synack = wire.build_segment(B[0].packed, A[0].packed, B[1], A[1], server_isn, client.iss + 1,
                                wire.SYN | wire.ACK, 65535, wire.build_options(mss=1380))
    client.receive_segment(memoryview(synack), 0.001)
    client.segments_to_send(0.001)
    assert client.state == "ESTABLISHED"
    return client, link


def data_segment(client: TcpConnection, offset: int, payload: bytes, flags: int = 0) -> bytes:
    return wire.build_segment(B[0].packed, A[0].packed, B[1], A[1], client.irs + 1 + offset, client.iss + 1,
                              wire.ACK | flags, 65535, b"", payload)


def test_out_of_order_overlapping_and_old_duplicates_reassemble_exactly():
    client, _ = crafted_pair()
    data = bytes(range(256)) * 20  # 5120 bytes
    pieces = [(3000, 5120), (1000, 2500), (2000, 3500), (0, 1200), (500, 900), (0, 5120)]  # gaps, overlaps, dups
    for start, end in pieces:
        client.receive_segment(memoryview(data_segment(client, start, data[start:end])), 0.01)
    assert client.recv(10_000) == data
    old = data_segment(client, 0, data[:100])  # an old duplicate after everything arrived
    client.receive_segment(memoryview(old), 0.02)
    assert client.recv(10_000) == b"" and client.ack_now  # acknowledged again, nothing delivered twice


def test_syn_in_window_gets_a_challenge_ack_not_a_reset():
    client, _ = crafted_pair()
    syn = wire.build_segment(B[0].packed, A[0].packed, B[1], A[1], client.rcv_nxt + 10, 0, wire.SYN, 65535)
    client.receive_segment(memoryview(syn), 0.01)
    assert client.state == "ESTABLISHED" and client.ack_now  # RFC 5961 4.2
    far = wire.build_segment(B[0].packed, A[0].packed, B[1], A[1], client.rcv_nxt + (1 << 30), 0, wire.RST, 0)
    client.segments_to_send(0.01)
    client.receive_segment(memoryview(far), 0.02)
    assert client.state == "ESTABLISHED"  # a reset far outside the window is ignored


def test_retransmission_timer_backs_off_under_a_fake_clock():
    client, _ = crafted_pair()
    client.send(b"x" * 100)
    first = client.segments_to_send(0.1)
    assert first
    times = []
    now = 0.1
    for _ in range(4):
        now = client.next_timer()
        client.handle_timer(now)
        if client.segments_to_send(now):
            times.append(now)
    gaps = [b - a for a, b in zip([0.1, *times], times, strict=False)]
    assert all(later >= 1.9 * earlier for earlier, later in itertools.pairwise(gaps)), gaps  # doubling
    assert gaps[0] >= client.opts.rto_min * 0.99


def test_a_stall_reported_below_holds_the_retransmission_timeout():
    """TCP over TCP (issue 13): while the outer connection repairs a loss, an inner RTO would only resend
    what is on its way; defer_rto holds it, and it fires as before once no longer held."""
    client, _ = crafted_pair()
    client.send(b"x" * 100)
    assert client.segments_to_send(0.1)
    due = client.next_timer()
    assert due is not None
    client.defer_rto(due + 0.05)
    assert client.next_timer() == pytest.approx(due + 0.05)
    client.handle_timer(due)  # the old deadline: nothing is resent
    assert client.segments_to_send(due) == [] and client.retransmits == 0
    client.defer_rto(due - 1.0)  # never brings a deadline forward
    assert client.next_timer() == pytest.approx(due + 0.05)
    client.handle_timer(due + 0.05)
    assert client.segments_to_send(due + 0.05) and client.retransmits >= 1
