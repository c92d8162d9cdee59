"""Path-MTU black holes (wgmagic/netstack/tcp/pmtu.py): the two machines alone, step by step with a fake clock;
then inside a connection, segment by segment; then two stacks across a link that drops big packets silently."""

from __future__ import annotations

import ipaddress
import random
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.unit.test_tcp_steps import IRS, MSS, A, B, established, from_peer, out
from wgmagic.netstack.stack import Stack
from wgmagic.netstack.tcp.pmtu import (
    BASE_MSS,
    PROBE_INTERVAL,
    PROBE_THRESHOLD,
    ReceiveWatch,
    SendSearch,
    too_big_message,
)
from wgmagic.netstack.wire import icmp
from wgmagic.netstack.wire.checksum import internet_checksum
from wgmagic.netstack.wire.ip import parse
from wgmagic.netstack.wire.tcp import ACK


# ---- SendSearch alone ----------------------------------------------------------------------------------------
def fresh(mss: int = 1380, floor: int = 536) -> SendSearch:
    search = SendSearch(536, floor)
    search.start(mss)
    return search


def test_one_timeout_is_no_black_hole_two_silent_ones_are():
    search = fresh()
    assert search.state == "off"
    assert search.on_rto(1.0, 0.5, 100, 1380) is None  # the first: ordinary loss as far as anyone knows
    assert search.on_rto(1.4, 0.5, 100, 1380) == BASE_MSS  # nothing from the peer since: fall back
    assert search.mss == search.low == BASE_MSS and search.high == 1380 and search.black_holes == 1
    assert search.state == "searching" and search.next_probe_at == 1.4


def test_a_peer_that_answers_between_timeouts_is_no_black_hole():
    search = fresh()
    search.on_rto(1.0, 0.5, 100, 1380)
    assert search.on_rto(1.4, 1.2, 100, 1380) is None  # it sent something at 1.2: it hears us
    assert search.on_rto(2.2, 1.2, 100, 1380) == BASE_MSS  # then silence across two timeouts


def test_a_segment_no_bigger_than_the_fallback_is_not_helped_by_falling_back():
    search = fresh()
    search.on_rto(1.0, 0.5, 100, 300)
    assert search.on_rto(1.4, 0.5, 100, 300) is None and search.mss == 1380 and search.state == "off"


def test_further_timeouts_halve_down_to_the_floor():
    search = fresh()
    search.on_rto(1.0, 0.0, 100, 1380)
    assert search.on_rto(1.4, 0.0, 100, 1380) == 1024
    assert search.on_rto(2.2, 0.0, 100, 1024) == 536  # 512, held at the floor
    assert search.on_rto(3.8, 0.0, 100, 536) is None and search.mss == 536


def test_the_floor_of_ipv6_is_its_1280_byte_minimum_mtu():
    search = fresh(1360, floor=1220)
    search.on_rto(1.0, 0.0, 100, 1360)
    assert search.on_rto(1.4, 0.0, 100, 1360) == 1220


def test_binary_search_up_between_what_passed_and_what_did_not():
    search = fresh()
    search.on_rto(1.0, 0.0, 100, 1380)
    search.on_rto(1.4, 0.0, 100, 1380)
    limit = 1288  # the path carries MSS 1288 (a 1328-byte packet), not one byte more
    now, seq, sizes = 2.0, 10_000, []
    while (size := search.probe_size(now)) :
        sizes.append(size)
        search.probe_sent(seq, seq + size, size)
        if size <= limit:
            assert search.on_ack(seq + size, now) == size
        else:
            assert search.on_loss(seq, now) is True
        seq += size
        now += 0.1
    # (low + high + 1) // 2; 1291 failed, so high = 1290, and 1290 - 1285 < PROBE_THRESHOLD ends it
    assert sizes == [1202, 1291, 1246, 1268, 1279, 1285]
    assert search.mss == 1285 and search.high == 1290 and search.high - search.low < PROBE_THRESHOLD
    assert search.state == "search complete" and search.next_probe_at == pytest.approx(now - 0.1 + PROBE_INTERVAL)
    assert search.probes == 6 and search.probe_failures == 1


def test_after_the_interval_the_search_starts_again_from_the_top():
    search = fresh()
    search.on_rto(1.0, 0.0, 100, 1380)
    search.on_rto(1.4, 0.0, 100, 1380)
    search.low = search.mss = search.high = 1288  # as a finished search leaves it
    search.next_probe_at = 10.0
    assert search.probe_size(9.9) == 0
    assert search.probe_size(10.0) == (1288 + 1380 + 1) // 2 and search.high == 1380  # the path may have healed
    search.probe_sent(500, 500 + 1334, 1334)
    assert search.on_ack(500 + 1334, 10.1) == 1334  # it did


def test_a_probe_lost_behind_another_loss_is_abandoned_not_failed():
    search = fresh()
    search.on_rto(1.0, 0.0, 100, 1380)
    search.on_rto(1.4, 0.0, 100, 1380)
    search.probe_sent(5000, 6202, 1202)
    assert search.on_loss(4000, 2.0) is False  # the hole is before the probe: congestion, say nothing of size
    assert search.high == 1380 and search.probe_seq is None and search.probe_failures == 0
    assert search.probe_size(2.0) == 1202  # tried again


def test_a_timeout_with_a_probe_in_flight_fails_the_probe_not_the_mss():
    search = fresh()
    search.on_rto(1.0, 0.0, 100, 1380)
    search.on_rto(1.4, 0.0, 100, 1380)
    search.probe_sent(5000, 6202, 1202)
    assert search.on_rto(3.0, 0.0, 5000, 1202) is None
    assert search.mss == 1024 and search.high == 1201 and search.probe_failures == 1


def test_an_icmp_too_big_caps_the_search():
    search = fresh()
    search.on_rto(1.0, 0.0, 100, 1380)
    search.on_rto(1.4, 0.0, 100, 1380)
    search.probe_sent(5000, 6202, 1202)
    search.cap(1100)
    assert search.max_mss == search.high == 1100 and search.mss == 1024 and search.probe_seq is None


# ---- ReceiveWatch alone --------------------------------------------------------------------------------------
def test_quiet_after_activity_asks_once():
    watch = ReceiveWatch(1380, 4)
    watch.activity(1.0, 1.0)
    watch.activity(1.5, 1.0)  # already armed: lazily, not pushed on by every segment
    assert watch.quiet_at == 2.0
    assert watch.quiet_due(2.0, 1.7, 1.0) is False and watch.quiet_at == 2.7  # a segment at 1.7: re-armed
    assert watch.quiet_due(2.7, 1.7, 1.0) is True and watch.quiet_at is None and watch.elicits == 1


def test_data_stuck_past_the_hold_is_a_black_hole_reported_down_the_ladder():
    watch = ReceiveWatch(1380, 4)
    reported = []
    for start in (1.0, 3.0, 5.0, 7.0):
        watch.beyond(start, 5000, 0, 1.0)  # an ACK whose sequence number is past RCV.NXT 5000
        assert watch.hold_at == start + 1.0
        reported.append(watch.judge(start + 1.0, 5000))
        assert watch.hold_at is None
    assert reported == [1280, 1064, 576, None] and watch.mss == 536 and watch.reports == 3


def test_ipv6_reports_its_minimum_mtu_once():
    watch = ReceiveWatch(1360, 6)
    watch.beyond(1.0, 5000, 0, 1.0)
    assert watch.judge(2.0, 5000) == 1280 and watch.mss == 1220
    watch.beyond(3.0, 5000, 0, 1.0)
    assert watch.judge(4.0, 5000) is None and watch.next_report_mss() == 0


def test_a_full_size_segment_beyond_the_hole_is_ordinary_loss():
    watch = ReceiveWatch(1380, 4)
    watch.beyond(1.0, 5000, 500, 1.0)
    watch.beyond(1.1, 5000, 1368, 1.0)  # a full-size segment (12 bytes of options) made it
    assert watch.judge(2.0, 5000) is None and watch.reports == 0


def test_progress_before_the_hold_is_no_black_hole():
    watch = ReceiveWatch(1380, 4)
    watch.beyond(1.0, 5000, 500, 1.0)
    assert watch.judge(2.0, 6380) is None


def test_new_evidence_after_progress_restarts_the_hold():
    watch = ReceiveWatch(1380, 4)
    watch.beyond(1.0, 5000, 500, 1.0)
    watch.beyond(1.5, 6380, 500, 1.0)  # RCV.NXT moved: a new episode
    assert watch.hold_at == 2.5 and watch.evidence_rcv == 6380


# ---- the ICMP message ----------------------------------------------------------------------------------------
def test_the_ipv4_message_quotes_the_packet_that_vanished():
    local, remote = A[0].packed, B[0].packed
    proto, message = too_big_message(local, remote, 50000, 9000, 0x1_0000_0005, 1420, 1280)
    assert proto == 1 and internet_checksum(message) == 0
    kind, code, _, unused, mtu = struct.unpack_from("!BBHHH", message)
    assert (kind, code, unused, mtu) == (icmp.V4_UNREACHABLE, icmp.V4_CODE_FRAG_NEEDED, 0, 1280)
    quoted = message[8:]
    assert len(quoted) == 28 and internet_checksum(quoted[:20]) == 0
    assert quoted[0] == 0x45 and struct.unpack_from("!H", quoted, 2)[0] == 1420 and quoted[6] & 0x40  # DF
    assert quoted[9] == 6 and quoted[12:16] == remote and quoted[16:20] == local
    assert struct.unpack_from("!HHI", quoted, 20) == (9000, 50000, 5)


def test_the_ipv6_message_is_a_packet_too_big():
    local = ipaddress.ip_address("fd77:6d61:6769:6300::2").packed
    remote = ipaddress.ip_address("fd77:6d61:6769:6300::1").packed
    proto, message = too_big_message(local, remote, 50000, 9000, 77, 1420, 1280)
    assert proto == 58 and icmp.checksum_ok(6, message, local, remote)
    assert struct.unpack_from("!BBHI", message)[::3] == (icmp.V6_TOO_BIG, 1280)
    quoted = message[8:]
    assert quoted[0] >> 4 == 6 and struct.unpack_from("!H", quoted, 4)[0] == 1380 and quoted[6] == 6
    assert quoted[8:24] == remote and quoted[24:40] == local
    assert struct.unpack_from("!HHI", quoted, 40) == (9000, 50000, 77)


# ---- inside a connection, segment by segment -------------------------------------------------------------
def test_upload_into_a_black_hole_falls_back_then_probes_up():
    conn = established()  # PLAIN: no options, so payload = MSS; RTO 0.3 s after the handshake's sample
    conn.send(bytes(40 * MSS))
    first = out(conn, 1.0)
    assert [len(s.payload) for s in first] == [MSS] * 10  # IW10, all of them vanish
    assert conn.next_timer() == pytest.approx(1.3)
    conn.handle_timer(1.3)  # first RTO: the head again, full size
    (again,) = out(conn, 1.3)
    assert again.seq == conn.iss + 1 and len(again.payload) == MSS and conn.send_mss == MSS
    second = conn.next_timer()
    assert second == pytest.approx(1.3 + 0.6)  # backed off
    conn.handle_timer(second)  # second RTO, nothing heard from the peer in between: a black hole
    (small,) = out(conn, second)
    assert small.seq == conn.iss + 1 and len(small.payload) == BASE_MSS and conn.send_mss == BASE_MSS
    assert conn.stats()["pmtu"] == "searching" and conn.stats()["black_holes"] == 1
    # The peer takes what fits; once the resent range is acknowledged, new data goes with one probe.
    now, acked, probe = 2.0, conn.iss + 1 + BASE_MSS, None
    for _ in range(20):
        conn.receive_segment(from_peer(ACK, IRS + 1, acked), now)
        segments = out(conn, now)
        assert all(len(s.payload) in (BASE_MSS, 1202) for s in segments)
        probe = next((s for s in segments if len(s.payload) == 1202), None)
        if probe is not None:
            break
        acked = max(s.seq + len(s.payload) for s in segments)
        now += 0.1
    assert probe is not None and probe.seq >= conn.iss + 1 + 10 * MSS  # new data, never a resent range
    assert conn.pmtu.probe_seq == probe.seq
    conn.receive_segment(from_peer(ACK, IRS + 1, probe.seq + 1202), now + 0.05)
    assert conn.send_mss == 1202 and conn.stats()["mss"] == 1202


def test_download_black_hole_asks_quietly_then_sends_the_sender_an_icmp_too_big():
    conn = established()
    conn.receive_segment(from_peer(ACK, IRS + 1, conn.iss + 1, payload=bytes(1000)), 0.2)
    (delayed,) = out(conn, 0.2 + 0.04)
    assert delayed.ack == IRS + 1 + 1000
    # The peer's next segments are full size and vanish: nothing arrives. After the quiet, one question:
    quiet = conn.rx_pmtu.quiet_at
    assert quiet == pytest.approx(0.2 + max(1.0, 2 * conn.rto))
    conn.handle_timer(quiet)
    (ask,) = out(conn, quiet)
    assert ask.flags == ACK and ask.seq == conn.iss and ask.payload == b""  # SND.UNA - 1: the peer must answer
    # Its answer carries its SND.NXT, past our RCV.NXT: it has sent what we never got.
    ahead = IRS + 1 + 1000 + 3 * MSS
    conn.receive_segment(from_peer(ACK, ahead, conn.iss + 1), quiet + 0.05)
    hold = conn.rx_pmtu.hold_at
    assert hold == pytest.approx(quiet + 0.05 + max(1.0, 2 * conn.rto)) and conn.next_timer() <= hold
    assert conn.icmp_out == []
    conn.handle_timer(hold)
    ((proto, message),) = conn.icmp_out
    assert proto == 1 and struct.unpack_from("!BBHHH", message)[::4] == (icmp.V4_UNREACHABLE, 1280)
    assert struct.unpack_from("!HHI", message, 28) == (9000, 50000, IRS + 1 + 1000)  # at RCV.NXT, its SND.UNA
    assert struct.unpack_from("!H", message, 10)[0] == MSS + 40  # the size that vanished
    assert conn.stats()["peer_mss"] == 1240 and conn.stats()["too_big_sent"] == 1
    # The sender resends in the smaller size: the stream goes on.
    conn.receive_segment(from_peer(ACK, IRS + 1 + 1000, conn.iss + 1, payload=bytes(1240)), hold + 0.1)
    assert conn.rcv_nxt == IRS + 1 + 2240


def test_a_hole_that_full_size_segments_pass_is_no_black_hole():
    conn = established()
    conn.receive_segment(from_peer(ACK, IRS + 1, conn.iss + 1, payload=bytes(MSS)), 0.2)
    conn.receive_segment(from_peer(ACK, IRS + 1 + 2 * MSS, conn.iss + 1, payload=bytes(MSS)), 0.21)  # one lost
    out(conn, 0.21)
    hold = conn.rx_pmtu.hold_at
    assert hold is not None
    conn.handle_timer(hold)
    assert conn.icmp_out == [] and conn.stats()["too_big_sent"] == 0


def test_the_stack_sends_the_connections_icmp_to_the_peer():
    stack = Stack([ipaddress.ip_interface("198.18.0.2/32")], rng=random.Random(1).randbytes, verify_checksums=True)
    conn = stack.tcp_connect(B[0], B[1], 0.0)
    stack.packets_to_send(0.0)
    conn.icmp_out.append(too_big_message(A[0].packed, B[0].packed, conn.local[1], 9000, 5, 1420, 1280))
    stack.wake(conn)
    (packet,) = stack.packets_to_send(0.1)
    version, src, dst, proto, payload, _ = parse(packet)
    assert (version, src, dst, proto) == (4, A[0].packed, B[0].packed, 1) and payload[0] == icmp.V4_UNREACHABLE
    assert conn.icmp_out == [] and stack.counters["tcp_too_big_sent"] == 1


# ---- two stacks across a link that drops big packets silently ------------------------------------------------
def run_pair(limit: int, size: int, version: int = 4) -> tuple[Stack, Stack, object, object, bytes, bytes]:
    """A (the client) and B (a server) exchange `size` bytes each way across a link that drops every IP packet
    over `limit` bytes and says nothing. Returns both stacks, both connections and what each received."""
    if version == 4:
        a_ip, b_ip = ipaddress.ip_interface("198.18.0.2/32"), ipaddress.ip_interface("198.18.0.1/32")
    else:
        a_ip, b_ip = (ipaddress.ip_interface("fd77:6d61:6769:6300::2/128"),
                      ipaddress.ip_interface("fd77:6d61:6769:6300::1/128"))
    a = Stack([a_ip], rng=random.Random(1).randbytes, verify_checksums=True)
    b = Stack([b_ip], rng=random.Random(2).randbytes, verify_checksums=True)
    listener = b.tcp_listen(9000)
    client = a.tcp_connect(b_ip.ip, 9000, 0.0)
    server = None
    data = bytes(random.Random(3).randbytes(size))
    got_a, got_b = bytearray(), bytearray()
    sent_a = sent_b = 0
    now = 0.0
    in_flight: list[tuple[float, Stack, bytes]] = []
    for _ in range(200_000):
        for src, dst in ((a, b), (b, a)):
            for packet in src.packets_to_send(now):
                if len(packet) <= limit:
                    in_flight.append((now + 0.005, dst, packet))
        if server is None:
            server = listener.accept()
        if server is not None and client.state == "ESTABLISHED":
            sent_a += client.send(data[sent_a:sent_a + 65536]) if sent_a < size else 0
            sent_b += server.send(data[sent_b:sent_b + 65536]) if sent_b < size else 0
            got_a += client.recv(1 << 20)
            got_b += server.recv(1 << 20)
            a.wake(client)
            b.wake(server)
            if len(got_a) == size and len(got_b) == size:
                break
        deadlines = [t for t, _, _ in in_flight] + [d for d in (a.next_timer(), b.next_timer()) if d is not None]
        now = max(now, min(deadlines)) if deadlines else now + 0.01
        due = [item for item in in_flight if item[0] <= now]
        in_flight = [item for item in in_flight if item[0] > now]
        for _, dst, packet in due:
            dst.receive_packet(packet, now)
        a.handle_timers(now)
        b.handle_timers(now)
        a.events()
        b.events()
    return a, b, client, server, bytes(got_a), bytes(got_b)


@pytest.mark.parametrize("version", [4, 6])
def test_both_directions_cross_a_black_hole_between_two_stacks(version):
    limit = 1328
    a, _, client, server, got_a, got_b = run_pair(limit, 512 * 1024, version)
    data = bytes(random.Random(3).randbytes(512 * 1024))
    assert got_a == data and got_b == data
    header = 40 if version == 4 else 60
    assert client.send_mss + header <= limit and server.send_mss + header <= limit
    assert client.pmtu.black_holes + server.pmtu.black_holes + a.counters["tcp_too_big_sent"] >= 1


def test_no_black_hole_no_change():
    a, b, client, server, got_a, got_b = run_pair(10_000, 256 * 1024)
    assert len(got_a) == len(got_b) == 256 * 1024
    assert client.send_mss == server.send_mss == 1380 and client.stats()["pmtu"] == "off"
    assert a.counters["tcp_too_big_sent"] == b.counters["tcp_too_big_sent"] == 0


# ---- invariants under any order of events (hypothesis) -------------------------------------------------------
_EVENT = st.tuples(st.sampled_from(["rto", "answered_rto", "probe", "ack", "loss", "cap", "wait"]),
                   st.integers(min_value=0, max_value=1500))


@given(st.lists(_EVENT, max_size=60), st.sampled_from([(1380, 536), (1360, 1220), (600, 536)]))
def test_send_search_stays_within_its_bounds(events, sizes):
    mss, floor = sizes
    search = fresh(mss, floor)
    now, seq = 1.0, 1000
    for kind, value in events:
        now += 0.25
        if kind in ("rto", "answered_rto"):
            lowered = search.on_rto(now, now - 0.1 if kind == "answered_rto" else 0.0, seq, value)
            assert lowered is None or lowered < value
        elif kind == "probe":
            size = search.probe_size(now)
            if size:
                assert search.mss < size <= search.max_mss
                search.probe_sent(seq, seq + size, size)
                seq += size
        elif kind == "ack":
            raised = search.on_ack(seq if value % 2 else seq - 1, now)
            assert raised is None or raised <= search.max_mss
        elif kind == "loss":
            search.on_loss(search.probe_seq if value % 2 and search.probe_seq is not None else seq - 1, now)
        elif kind == "cap":
            search.cap(max(floor, value))
        else:
            now += PROBE_INTERVAL * (value % 3)
        assert min(search.floor, search.max_mss) <= search.low <= search.mss <= search.max_mss
        assert search.low <= search.high <= search.max_mss


@given(st.lists(st.tuples(st.integers(min_value=0, max_value=3), st.integers(min_value=0, max_value=1500)),
                max_size=40), st.sampled_from([4, 6]))
def test_receive_watch_only_ever_lowers_and_reports_a_bounded_number_of_times(events, version):
    watch = ReceiveWatch(1380 if version == 4 else 1360, version)
    now, rcv, last = 1.0, 5000, watch.mss
    for kind, value in events:
        now += 0.3
        if kind == 0:
            watch.beyond(now, rcv, value, 1.0)
        elif kind == 1 and watch.hold_at is not None:
            mtu = watch.judge(watch.hold_at, rcv)
            assert mtu is None or (mtu in (1280, 1064, 576) and mtu - (40 if version == 4 else 60) == watch.mss)
        elif kind == 2:
            rcv += value
        else:
            watch.activity(now, 1.0)
        assert watch.mss <= last and watch.reports <= (3 if version == 4 else 1)
        last = watch.mss
