"""Nothing left behind, the sans-I/O parts (issue 22): the closed-port rule (RFC 9293 3.10.7.1) with exact
segments, its rate limit on a fake clock, the record of open connections, and the SYN that ends a connection a
dead process left on the server, drawing the challenge ACK (RFC 5961 4.2) that the closed-port rule answers
with the one RST the server accepts (SEQ = its RCV.NXT, RFC 5961 3)."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from wgmagic.netstack import leftovers
from wgmagic.netstack.leftovers import FourTuple
from wgmagic.netstack.ratelimit import TokenBucket
from wgmagic.netstack.stack import RESET_BURST, Stack
from wgmagic.netstack.tcp.config import TcpConfig
from wgmagic.netstack.wire import tcp as wire
from wgmagic.netstack.wire.ip import PROTO_TCP, IPv4Builder, build_ipv6, parse

ME4 = ipaddress.ip_interface("198.18.0.2/32")
ME6 = ipaddress.ip_interface("fd77:6d61:6769:6300::2/128")
SERVER4 = ipaddress.ip_address("198.18.0.1")
SERVER6 = ipaddress.ip_address("fd77:6d61:6769:6300::1")
SYN, RST, PSH, ACK, FIN = 0x02, 0x04, 0x08, 0x10, 0x01


def stack() -> Stack:
    return Stack([ME4, ME6], rng=lambda n: bytes(range(1, n + 1)), tcp_options=TcpConfig(), verify_checksums=True)


def from_server(src, dst, sport, dport, seq, ack, flags, payload=b"") -> bytes:
    segment = wire.build_segment(src.packed, dst.packed, sport, dport, seq, ack, flags, 65535, payload=payload)
    if src.version == 4:
        return IPv4Builder().build(src.packed, dst.packed, PROTO_TCP, segment)
    return build_ipv6(src.packed, dst.packed, PROTO_TCP, segment)


def tcp_out(s: Stack, now: float) -> list[tuple[int, int, int, int, int]]:
    """(sport, dport, seq, ack, flags) of every TCP segment the stack sends."""
    found = []
    for packet in s.packets_to_send(now):
        parsed = parse(packet)
        assert not isinstance(parsed, str)
        _version, _src, _dst, proto, payload, _hop = parsed
        assert proto == PROTO_TCP
        sport, dport, seq, ack, _off, flags, _win, _sum, _urg = wire.HEADER.unpack_from(payload)
        found.append((sport, dport, seq, ack, flags))
    return found


def test_a_segment_with_ack_for_no_connection_draws_rst_with_seq_equal_to_its_ack() -> None:
    for server, me in ((SERVER4, ME4.ip), (SERVER6, ME6.ip)):
        s = stack()
        s.receive_packet(from_server(server, me, 5432, 50001, 1000, 777_777, ACK | PSH, b"xyz"), 1.0)
        assert tcp_out(s, 1.0) == [(50001, 5432, 777_777, 0, RST)]
        assert s.drops["tcp_no_connection"] == 1


def test_a_segment_without_ack_draws_rst_ack_acknowledging_its_length() -> None:
    s = stack()
    s.receive_packet(from_server(SERVER4, ME4.ip, 5432, 50001, 0xFFFFFFFE, 0, SYN | FIN, b"ab"), 1.0)
    # SEG.LEN counts the data, the SYN and the FIN: 2 + 1 + 1, mod 2**32.
    assert tcp_out(s, 1.0) == [(50001, 5432, 0, 2, RST | ACK)]


def test_a_rst_for_no_connection_is_never_answered() -> None:
    s = stack()
    s.receive_packet(from_server(SERVER4, ME4.ip, 5432, 50001, 5, 9, RST | ACK), 1.0)
    assert tcp_out(s, 1.0) == []
    assert s.drops["tcp_no_connection"] == 1


def test_resets_for_no_connection_are_rate_limited_on_the_callers_clock() -> None:
    s = stack()
    for i in range(RESET_BURST + 50):
        s.receive_packet(from_server(SERVER4, ME4.ip, 5432, 50001, i, i, ACK), 10.0)
    assert len(tcp_out(s, 10.0)) == RESET_BURST
    assert s.drops["tcp_reset_rate_limited"] == 50
    # A second later the bucket holds RESET_RATE (200) tokens again, capped at the burst.
    s.receive_packet(from_server(SERVER4, ME4.ip, 5432, 50001, 1, 1, ACK), 11.0)
    assert len(tcp_out(s, 11.0)) == 1


def test_token_bucket_refills_at_its_rate_and_ignores_a_clock_going_back() -> None:
    bucket = TokenBucket(2.0, 2)
    assert [bucket.allow(0.0) for _ in range(3)] == [True, True, False]
    assert bucket.allow(0.25) is False  # half a token
    assert bucket.allow(0.5) is True
    assert bucket.allow(0.1) is False  # back in time: nothing comes back


def test_a_leftover_is_ended_by_a_syn_whose_challenge_ack_draws_the_exact_rst() -> None:
    """The server still has the connection (RCV.NXT = 424242, SND.NXT = 99): our SYN from the same 4-tuple draws
    <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK> (RFC 5961 4.2), and we answer <SEQ=424242><CTL=RST>: exactly RCV.NXT."""
    s = stack()
    left = FourTuple(ME4.ip, 50123, SERVER4, 5432)
    assert s.probe_leftover(left, 0.0) is True
    assert tcp_out(s, 0.0) == [(50123, 5432, 0x01020304, 0, SYN)]
    s.receive_packet(from_server(SERVER4, ME4.ip, 5432, 50123, 99, 424242, ACK), 0.01)
    assert tcp_out(s, 0.01) == [(50123, 5432, 424242, 0, RST)]


def test_a_leftover_the_server_no_longer_has_draws_a_syn_ack_answered_by_rst() -> None:
    s = stack()
    left = FourTuple(ME6.ip, 50124, SERVER6, 5432)
    assert s.probe_leftover(left, 0.0)
    ((_sp, _dp, isn, _ack, _flags),) = tcp_out(s, 0.0)
    s.receive_packet(from_server(SERVER6, ME6.ip, 5432, 50124, 7000, isn + 1, SYN | ACK), 0.01)
    assert tcp_out(s, 0.01) == [(50124, 5432, isn + 1, 0, RST)]


def test_no_probe_for_a_4_tuple_in_use_or_an_address_not_ours() -> None:
    s = stack()
    conn = s.tcp_connect(SERVER4, 5432, 0.0)
    tcp_out(s, 0.0)
    local = conn.local
    assert s.probe_leftover(FourTuple(local[0], local[1], SERVER4, 5432), 0.0) is False
    assert s.probe_leftover(FourTuple(ipaddress.ip_address("198.18.0.99"), 50000, SERVER4, 5432), 0.0) is False
    assert tcp_out(s, 0.0) == []


def test_open_connections_lists_what_the_server_may_hold() -> None:
    s = stack()
    conn = s.tcp_connect(SERVER4, 5432, 0.0)
    ((sport, _dp, isn, _ack, _flags),) = tcp_out(s, 0.0)
    assert s.open_connections() == []  # SYN_SENT: the server holds nothing we must end
    s.receive_packet(from_server(SERVER4, ME4.ip, 5432, sport, 5000, isn + 1, SYN | ACK), 0.01)
    assert conn.state == "ESTABLISHED"
    assert s.open_connections() == [FourTuple(ME4.ip, sport, SERVER4, 5432)]


def test_record_round_trip_and_bad_lines_skipped() -> None:
    conns = [FourTuple(ME4.ip, 50000, SERVER4, 5432), FourTuple(ME6.ip, 65535, SERVER6, 1)]
    data = leftovers.encode(conns + conns[:1])
    assert data == (b"wgmagic-connections 1\n198.18.0.2 50000 198.18.0.1 5432\n"
                    b"fd77:6d61:6769:6300::2 65535 fd77:6d61:6769:6300::1 1\n")
    assert leftovers.decode(data) == (conns, 0)
    bad = data + b"198.18.0.2 0 198.18.0.1 5432\n1.2.3.4 1 ::1 2\nx y z w\n198.18.0.2 +5 198.18.0.1 5\n"
    assert leftovers.decode(bad) == (conns, 4)
    assert leftovers.decode(b"something else\n198.18.0.2 50000 198.18.0.1 5432\n") == ([], 0)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600) | st.text(alphabet="0123456789. :abcdef\nwgmaic-onts", max_size=400).map(
    lambda t: ("wgmagic-connections 1\n" + t).encode()))
def test_decode_never_raises_and_keeps_only_well_formed_tuples(data: bytes) -> None:
    found, skipped = leftovers.decode(data)
    assert skipped >= 0 and len(found) <= leftovers.MAX_CONNECTIONS
    assert leftovers.decode(leftovers.encode(found)) == (found, 0)
