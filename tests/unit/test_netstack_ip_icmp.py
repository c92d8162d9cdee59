"""IPv4/IPv6/ICMP formats and the stack's demultiplexing, driven with bytes."""

from __future__ import annotations

import ipaddress
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from wgmagic.netstack.events import EchoReply, IcmpUnreachable
from wgmagic.netstack.stack import Stack
from wgmagic.netstack.wire import icmp
from wgmagic.netstack.wire.checksum import internet_checksum
from wgmagic.netstack.wire.ip import PROTO_ICMP, PROTO_ICMPV6, PROTO_UDP, IPv4Builder, build_ipv6, parse

ME4, ME6 = ipaddress.ip_interface("198.18.0.2/32"), ipaddress.ip_interface("fd77::2/128")
PEER4, PEER6 = ipaddress.ip_address("198.18.0.1"), ipaddress.ip_address("fd77::1")


def stack() -> Stack:
    return Stack([ME4, ME6], verify_checksums=True)


def test_ipv4_round_trip_and_header_checksum():
    packet = IPv4Builder().build(PEER4.packed, ME4.ip.packed, PROTO_UDP, b"payload")
    assert internet_checksum(packet[:20]) == 0
    version, src, dst, proto, payload, ttl = parse(packet)
    assert (version, src, dst, proto, bytes(payload), ttl) == (4, PEER4.packed, ME4.ip.packed, PROTO_UDP,
                                                              b"payload", 64)
    corrupted = bytearray(packet)
    corrupted[8] ^= 1
    assert parse(bytes(corrupted)) == "bad_checksum"
    fragment = bytearray(packet)
    fragment[6] = 0x20  # more fragments
    assert parse(bytes(fragment), verify_checksum=False) == "fragment"


def test_ipv6_extension_headers_are_walked():
    hop_by_hop = bytes((PROTO_UDP, 0)) + bytes(6)
    packet = build_ipv6(PEER6.packed, ME6.ip.packed, 0, hop_by_hop + b"data")
    version, _, _, proto, payload, _ = parse(packet)
    assert version == 6 and proto == PROTO_UDP and bytes(payload) == b"data"
    looping = build_ipv6(PEER6.packed, ME6.ip.packed, 0, bytes((0, 0)) + bytes(6) * 1 + (bytes((0, 0)) + bytes(6)) * 20)
    assert parse(looping) in ("too_many_extension_headers", "malformed_ipv6")


def test_echo_request_is_answered_v4_and_v6():
    st_ = stack()
    for version, peer, me in ((4, PEER4, ME4.ip), (6, PEER6, ME6.ip)):
        request = icmp.build_echo(version, True, 7, 9, b"abc", peer.packed, me.packed)
        if version == 4:
            packet = IPv4Builder().build(peer.packed, me.packed, PROTO_ICMP, request)
        else:
            packet = build_ipv6(peer.packed, me.packed, PROTO_ICMPV6, request)
        st_.receive_packet(packet, 0.0)
        (reply,) = st_.packets_to_send(0.0)
        _, src, dst, _, message, _ = parse(reply)
        assert src == me.packed and dst == peer.packed
        assert icmp.checksum_ok(version, message, src, dst)
        assert bytes(message[4:]) == struct.pack("!HH", 7, 9) + b"abc"
    assert not st_.drops


def test_echo_reply_becomes_an_event():
    st_ = stack()
    st_.send_echo(PEER6, 1, 2, b"x", 0.0)
    (request,) = st_.packets_to_send(0.0)
    _, src, dst, _, message, _ = parse(request)
    reply = icmp.build_echo(6, False, 1, 2, bytes(message[8:]), dst, src)
    st_.receive_packet(build_ipv6(dst, src, PROTO_ICMPV6, reply), 1.0)
    assert st_.events() == [EchoReply(PEER6, 1, 2, b"x", 1.0)]


def test_too_big_lowers_path_mtu_and_is_reported():
    st_ = stack()
    quoted = IPv4Builder().build(ME4.ip.packed, PEER4.packed, 6, struct.pack("!HHIIBBHHH", 50000, 5432, 0, 0, 0x50,
                                                                             0x10, 0, 0, 0))
    error = icmp.build_error(4, icmp.V4_UNREACHABLE, icmp.V4_CODE_FRAG_NEEDED, 1280, quoted)
    st_.receive_packet(IPv4Builder().build(PEER4.packed, ME4.ip.packed, PROTO_ICMP, error), 0.0)
    assert st_.path_mtu(PEER4.packed) == 1280
    assert st_.events() == [IcmpUnreachable(PEER4, "too_big", 1280)]


def test_udp_to_closed_port_gets_port_unreachable_and_open_port_queues():
    st_ = stack()
    segment = struct.pack("!HHHH", 53, 40000, 12, 0) + b"ping"
    st_.receive_packet(IPv4Builder().build(PEER4.packed, ME4.ip.packed, PROTO_UDP, segment), 0.0)
    (error,) = st_.packets_to_send(0.0)
    assert parse(error)[3] == PROTO_ICMP
    sock = st_.udp_open(40000)
    st_.receive_packet(IPv4Builder().build(PEER4.packed, ME4.ip.packed, PROTO_UDP, segment), 0.0)
    assert sock.recvfrom() == (b"ping", (PEER4, 53))
    sock.sendto(b"pong", (PEER4, 53), 0.0)
    (out,) = st_.packets_to_send(0.0)
    assert parse(out)[4].tobytes()[8:] == b"pong"


def test_packets_not_for_us_are_dropped():
    st_ = stack()
    st_.receive_packet(IPv4Builder().build(PEER4.packed, bytes((198, 18, 0, 77)), PROTO_UDP, bytes(8)), 0.0)
    assert st_.drops["not_for_us"] == 1 and not st_.packets_to_send(0.0)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=120), st.sampled_from([b"", b"\x45", b"\x60", b"\x45\x00"]))
def test_parse_never_raises(data, prefix):
    result = parse(prefix + data)
    assert isinstance(result, (str, tuple))


@settings(max_examples=500, deadline=None)
@given(st.sampled_from([PROTO_ICMP, PROTO_UDP, 6, PROTO_ICMPV6, 0, 43, 44, 60]), st.binary(max_size=100),
       st.booleans())
def test_stack_receive_never_raises(proto, payload, v6):
    st_ = stack()
    if v6:
        packet = build_ipv6(PEER6.packed, ME6.ip.packed, proto, payload)
    else:
        packet = IPv4Builder().build(PEER4.packed, ME4.ip.packed, proto, payload)
    st_.receive_packet(packet, 0.0)
    st_.packets_to_send(0.0)
    assert st_.drops["internal_error"] == 0
