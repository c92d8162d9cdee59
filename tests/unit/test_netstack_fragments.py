"""IP fragmentation and reassembly (wgmagic/netstack/fragments.py, wire/ip.py, the stack's paths), step by step
with bytes and a fake clock: RFC 791 (IPv4), RFC 8200 4.5 (IPv6), RFC 5722 (overlaps), RFC 6946 (atomic
fragments), RFC 7112 (the first fragment holds the header chain); bounds in time and memory; hypothesis for
the parser and the reassembler."""

from __future__ import annotations

import ipaddress
import itertools
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wgmagic.netstack.fragments import (
    DATAGRAM_OVERHEAD,
    FRAGMENT_OVERHEAD,
    TIMEOUT_V4,
    TIMEOUT_V6,
    FragmentIds,
    Reassembler,
)
from wgmagic.netstack.stack import Stack
from wgmagic.netstack.wire import icmp
from wgmagic.netstack.wire.checksum import internet_checksum, transport_checksum
from wgmagic.netstack.wire.ip import (
    FRAGMENT_HEADER,
    IPV4_HEADER,
    IPV6_HEADER,
    PROTO_ICMP,
    PROTO_ICMPV6,
    PROTO_UDP,
    Fragment,
    IPv4Builder,
    build_ipv4_fragments,
    build_ipv6_fragments,
    parse,
    parse_fragment,
)

ME4, ME6 = ipaddress.ip_interface("198.18.0.2/32"), ipaddress.ip_interface("fd77::2/128")
PEER4, PEER6 = ipaddress.ip_address("198.18.0.1"), ipaddress.ip_address("fd77::1")
OTHER4, OTHER6 = ipaddress.ip_address("198.18.0.9"), ipaddress.ip_address("fd77::9")


def stack(**kwargs) -> Stack:
    return Stack([ME4, ME6], verify_checksums=True, **kwargs)


def udp(src: bytes, dst: bytes, sport: int, dport: int, data: bytes) -> bytes:
    """A UDP header and data with its checksum (RFC 768)."""
    segment = bytearray(struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data)
    segment[6:8] = (transport_checksum(src, dst, PROTO_UDP, segment) or 0xFFFF).to_bytes(2, "big")
    return bytes(segment)


# ---- hand-built fragments: independent of build_*_fragments ------------------------------------------------
def v4_fragment(src, dst, ident: int, offset: int, more: bool, data: bytes, proto: int = PROTO_UDP,
                flags: int = 0) -> bytes:
    """An IPv4 fragment: `offset` in bytes (a multiple of 8), MF from `more`, a valid header checksum."""
    field = flags | (0x2000 if more else 0) | (offset // 8)
    header = IPV4_HEADER.pack(0x45, 0, 20 + len(data), ident, field, 64, proto, 0, src.packed, dst.packed)
    return header[:10] + internet_checksum(header).to_bytes(2, "big") + header[12:] + data


def v6_fragment(src, dst, ident: int, offset: int, more: bool, data: bytes, proto: int = PROTO_UDP,
                before: bytes = b"") -> bytes:
    """An IPv6 fragment packet; `before`: extension headers (hop-by-hop...) ahead of the Fragment header,
    the first byte of each naming the next (the last one's is set to 44 here)."""
    frag = FRAGMENT_HEADER.pack(proto, 0, offset | int(more), ident)
    first = 44 if not before else 0
    if before:
        before = before[:-8] + bytes((44,)) + before[-7:]  # the last extension header names the Fragment header
    return IPV6_HEADER.pack(6 << 28, len(before) + 8 + len(data), first, 64, src.packed, dst.packed) + before + \
        frag + data


def cut(payload: bytes, sizes: list[int]) -> list[tuple[int, bytes, bool]]:
    """`payload` cut into pieces of `sizes` (multiples of 8, the last piece takes the rest): (offset, piece,
    more)."""
    pieces, at = [], 0
    for size in sizes:
        if at + size >= len(payload):
            break
        pieces.append((at, payload[at:at + size], True))
        at += size
    pieces.append((at, payload[at:], False))
    return pieces


def deliver(st_: Stack, packets, now: float = 0.0) -> None:
    for packet in packets:
        st_.receive_packet(packet, now)


# ---- the layouts the builders make ----------------------------------------------------------------------
def test_ipv4_fragments_are_cut_at_multiples_of_8_with_mf_and_one_identification():
    payload = bytes(range(256)) * 12  # 3072 bytes
    packets = build_ipv4_fragments(ME4.ip.packed, PEER4.packed, PROTO_UDP, payload, 0xBEEF, 1420)
    assert [len(p) for p in packets] == [1420, 1420, 20 + 3072 - 2800]
    fields = [IPV4_HEADER.unpack_from(p) for p in packets]
    assert [f[3] for f in fields] == [0xBEEF] * 3  # identification
    assert [f[4] for f in fields] == [0x2000 | 0, 0x2000 | 175, 350]  # DF clear, MF, offset / 8
    assert all(internet_checksum(p[:20]) == 0 for p in packets)
    assert b"".join(p[20:] for p in packets) == payload
    assert all(parse(p) == "fragment" for p in packets)
    with pytest.raises(ValueError):
        build_ipv4_fragments(ME4.ip.packed, PEER4.packed, PROTO_UDP, bytes(65516), 1, 1420)


def test_ipv6_fragments_carry_a_fragment_header_with_a_32_bit_identification():
    payload = bytes(3000)
    packets = build_ipv6_fragments(ME6.ip.packed, PEER6.packed, PROTO_UDP, payload, 0xDEADBEEF, 1280)
    step = (1280 - 48) & ~7  # 1232
    assert [len(p) for p in packets] == [1280, 1280, 48 + 3000 - 2 * step]
    for index, packet in enumerate(packets):
        _, payload_len, next_header, _, _, _ = IPV6_HEADER.unpack_from(packet)
        assert next_header == 44 and payload_len == len(packet) - 40
        proto, reserved, field, ident = FRAGMENT_HEADER.unpack_from(packet, 40)
        assert (proto, reserved, ident) == (PROTO_UDP, 0, 0xDEADBEEF)
        assert field == index * step | (1 if index < 2 else 0)


# ---- reassembly through the stack, IPv4 and IPv6 --------------------------------------------------------
@pytest.mark.parametrize("version", [4, 6])
@pytest.mark.parametrize("order", ["in_order", "reversed", "shuffled"])
def test_a_datagram_in_fragments_reaches_the_socket_whole(version, order):
    st_ = stack()
    peer, me = (PEER4, ME4.ip) if version == 4 else (PEER6, ME6.ip)
    sock = st_.udp_open(4000, family=version)
    data = bytes(random.Random(version).randbytes(8000))
    segment = udp(peer.packed, me.packed, 53, 4000, data)
    make = v4_fragment if version == 4 else v6_fragment
    packets = [make(peer, me, 77, offset, more, piece) for offset, piece, more in cut(segment, [1400] * 10)]
    if order == "reversed":
        packets.reverse()
    elif order == "shuffled":
        random.Random(1).shuffle(packets)
    deliver(st_, packets[:-1])
    assert sock.recvfrom() is None and st_.fragments.datagrams == 1
    deliver(st_, packets[-1:])
    assert sock.recvfrom() == (data, (peer, 53))
    assert st_.fragments.datagrams == 0 and st_.fragments.held_bytes == 0
    assert st_.counters["reassembled"] == 1 and st_.counters["fragments_in"] == len(packets)
    assert not st_.drops


@pytest.mark.parametrize("version", [4, 6])
def test_an_exact_duplicate_is_dropped_alone(version):
    st_ = stack()
    peer, me = (PEER4, ME4.ip) if version == 4 else (PEER6, ME6.ip)
    sock = st_.udp_open(4000, family=version)
    segment = udp(peer.packed, me.packed, 53, 4000, b"x" * 3000)
    make = v4_fragment if version == 4 else v6_fragment
    first, second, last = (make(peer, me, 5, o, m, p) for o, p, m in cut(segment, [1000, 1000]))
    deliver(st_, [first, second, first, second])
    assert st_.drops == {"fragment_duplicate": 2}
    deliver(st_, [last])
    assert sock.recvfrom()[0] == b"x" * 3000


@pytest.mark.parametrize("version", [4, 6])
def test_an_overlap_discards_the_whole_datagram_and_its_fragments_still_to_come(version):
    """RFC 5722 (RFC 8200 4.5): the datagram and the fragments of it not yet received are discarded; IPv4
    follows the same rule (as Linux since CVE-2018-5391). Its key is accepted again after the deadline."""
    st_ = stack()
    peer, me = (PEER4, ME4.ip) if version == 4 else (PEER6, ME6.ip)
    sock = st_.udp_open(4000, family=version)
    segment = udp(peer.packed, me.packed, 53, 4000, b"y" * 2400)
    make = v4_fragment if version == 4 else v6_fragment
    pieces = cut(segment, [800, 800])
    packets = [make(peer, me, 9, o, m, p) for o, p, m in pieces]
    deliver(st_, packets[:1], 0.0)
    deliver(st_, [make(peer, me, 9, 400, True, segment[400:1200])], 1.0)  # overlaps the first
    assert st_.drops["fragment_overlap"] == 1 and st_.fragments.datagrams == 0
    deliver(st_, packets, 2.0)  # the whole datagram again, with the same identification: still discarded
    assert sock.recvfrom() is None and st_.drops["fragment_discarded"] == 3
    timeout = TIMEOUT_V4 if version == 4 else TIMEOUT_V6
    deliver(st_, packets, timeout + 0.1)  # its deadline passed: a new datagram with that identification
    assert sock.recvfrom()[0] == b"y" * 2400


def test_a_duplicate_offset_with_other_bytes_is_an_overlap():
    st_ = stack()
    first = v6_fragment(PEER6, ME6.ip, 3, 0, True, udp(PEER6.packed, ME6.ip.packed, 1, 4000, bytes(16)))
    changed = bytearray(first)
    changed[-1] ^= 1
    deliver(st_, [first, bytes(changed)])
    assert st_.drops == {"fragment_overlap": 1}


@pytest.mark.parametrize("version", [4, 6])
def test_a_second_last_fragment_with_another_end_or_data_past_the_end_discards_the_datagram(version):
    st_ = stack()
    peer, me = (PEER4, ME4.ip) if version == 4 else (PEER6, ME6.ip)
    make = v4_fragment if version == 4 else v6_fragment
    deliver(st_, [make(peer, me, 1, 800, False, bytes(100)), make(peer, me, 1, 1600, False, bytes(100))])
    deliver(st_, [make(peer, me, 2, 800, False, bytes(100)), make(peer, me, 2, 880, True, bytes(80))])
    deliver(st_, [make(peer, me, 3, 1600, True, bytes(80)), make(peer, me, 3, 800, False, bytes(100))])
    assert st_.drops == {"fragment_inconsistent": 3} and st_.fragments.datagrams == 0


def test_the_reassembled_ipv4_header_is_the_first_fragments_with_lengths_and_checksum_set():
    reassembler = Reassembler()
    data = bytes(range(200)) * 4
    fragments = [parse_fragment(v4_fragment(PEER4, ME4.ip, 0x1234, o, m, p)) for o, p, m in cut(data, [400])]
    assert reassembler.add(fragments[1], 0.0) is None
    whole = reassembler.add(fragments[0], 0.0)
    assert whole is not None and internet_checksum(whole[:20]) == 0
    version, src, dst, proto, payload, ttl = parse(whole)
    assert (version, src, dst, proto, bytes(payload), ttl) == (4, PEER4.packed, ME4.ip.packed, PROTO_UDP, data, 64)
    assert IPV4_HEADER.unpack_from(whole)[3:5] == (0x1234, 0)  # identification kept, no flags, offset 0


def test_ipv6_headers_before_the_fragment_header_are_kept_and_relinked():
    hop_by_hop = bytes((0, 0)) + bytes(6)  # its Next Header byte is set to 44 by v6_fragment
    reassembler = Reassembler()
    data = udp(PEER6.packed, ME6.ip.packed, 7, 8, bytes(100))
    fragments = [parse_fragment(v6_fragment(PEER6, ME6.ip, 1, o, m, p, before=hop_by_hop))
                 for o, p, m in cut(data, [64])]
    assert fragments[0].next_at == 40
    whole = reassembler.add(fragments[1], 0.0) or reassembler.add(fragments[0], 0.0)
    assert whole is not None and whole[6] == 0 and whole[40] == PROTO_UDP  # hop-by-hop, then UDP
    version, _, _, proto, payload, _ = parse(whole)
    assert (version, proto, bytes(payload)) == (6, PROTO_UDP, data)


# ---- timeouts --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("version", [4, 6])
def test_an_incomplete_datagram_times_out_with_icmp_time_exceeded(version):
    st_ = stack()
    peer, me = (PEER4, ME4.ip) if version == 4 else (PEER6, ME6.ip)
    make = v4_fragment if version == 4 else v6_fragment
    timeout = TIMEOUT_V4 if version == 4 else TIMEOUT_V6
    segment = udp(peer.packed, me.packed, 53, 4000, bytes(2000))
    first, last = (make(peer, me, 11, o, m, p) for o, p, m in cut(segment, [1200]))
    st_.receive_packet(first, 10.0)
    assert st_.next_timer() == 10.0 + timeout
    st_.handle_timers(10.0 + timeout - 0.1)
    assert st_.fragments.datagrams == 1 and not st_.packets_to_send(0.0)
    st_.handle_timers(10.0 + timeout)
    assert st_.drops == {"fragment_timeout": 1} and st_.next_timer() is None and st_.fragments.held_bytes == 0
    (error,) = st_.packets_to_send(10.0 + timeout)
    _, src, dst, proto, message, _ = parse(error)
    assert (src, dst) == (me.packed, peer.packed)
    if version == 4:
        assert proto == PROTO_ICMP and bytes(message[:2]) == bytes((11, 1))  # time exceeded, reassembly
    else:
        assert proto == PROTO_ICMPV6 and bytes(message[:2]) == bytes((3, 1))
    assert icmp.checksum_ok(version, message, src, dst)
    assert bytes(message[8:]) == first[:len(message) - 8]  # it quotes the first fragment
    st_.receive_packet(last, 10.0 + timeout + 1)  # the rest, too late: a new datagram that never completes
    assert st_.fragments.datagrams == 1


def test_no_time_exceeded_without_the_first_fragment_and_late_timers_are_honoured():
    st_ = stack()
    st_.receive_packet(v4_fragment(PEER4, ME4.ip, 1, 1600, False, bytes(10)), 0.0)
    st_.handle_timers(TIMEOUT_V4)
    assert st_.drops == {"fragment_timeout": 1} and not st_.packets_to_send(TIMEOUT_V4)
    # The runtime's timer may fire late: a fragment after the deadline does not join the expired datagram.
    first = v4_fragment(PEER4, ME4.ip, 2, 0, True, udp(PEER4.packed, ME4.ip.packed, 1, 4000, bytes(8)))
    st_.receive_packet(first, 100.0)
    st_.receive_packet(v4_fragment(PEER4, ME4.ip, 2, 16, False, bytes(8)), 100.0 + TIMEOUT_V4)
    assert st_.drops["fragment_timeout"] == 2 and st_.fragments.datagrams == 1


def test_the_deadlines_of_both_versions_and_tcp_join_next_timer():
    st_ = stack()
    st_.receive_packet(v6_fragment(PEER6, ME6.ip, 1, 8, False, bytes(8)), 0.0)
    st_.receive_packet(v4_fragment(PEER4, ME4.ip, 1, 8, False, bytes(8)), 5.0)
    assert st_.next_timer() == 5.0 + TIMEOUT_V4
    st_.handle_timers(5.0 + TIMEOUT_V4)
    assert st_.next_timer() == TIMEOUT_V6
    st_.tcp_connect(PEER4, 80, 6.0)
    assert st_.next_timer() < TIMEOUT_V6


# ---- bounds ----------------------------------------------------------------------------------------------
def test_a_source_over_its_bound_evicts_its_own_oldest_datagrams_not_anothers():
    per_source = 3 * (DATAGRAM_OVERHEAD + FRAGMENT_OVERHEAD + 1000)
    reassembler = Reassembler(max_bytes_per_source=per_source, max_bytes=10 * per_source)
    other = parse_fragment(v4_fragment(OTHER4, ME4.ip, 1, 0, True, bytes(1000)))
    assert reassembler.add(other, 0.0) is None
    for ident in range(1, 6):
        reassembler.add(parse_fragment(v4_fragment(PEER4, ME4.ip, ident, 0, True, bytes(1000))), float(ident))
        assert reassembler._source_bytes[PEER4.packed] <= per_source
    assert reassembler.drops == {"fragment_evicted": 2} and reassembler.datagrams == 4
    # The survivors are the newest three of PEER4 and OTHER4's one, which completes.
    last = parse_fragment(v4_fragment(OTHER4, ME4.ip, 1, 1000, False, bytes(8)))
    assert reassembler.add(last, 10.0) is not None
    for ident, kept in ((1, False), (2, False), (5, True)):
        key = (PEER4.packed, ME4.ip.packed, ident, PROTO_UDP)
        assert (key in reassembler._pending[4]) is kept


def test_the_total_bound_evicts_the_oldest_datagram():
    cost = DATAGRAM_OVERHEAD + FRAGMENT_OVERHEAD + 1000
    reassembler = Reassembler(max_bytes=3 * cost, max_bytes_per_source=3 * cost)
    sources = [ipaddress.ip_address(f"198.18.0.{i}") for i in range(10, 15)]
    for index, source in enumerate(sources):
        reassembler.add(parse_fragment(v4_fragment(source, ME4.ip, 1, 0, True, bytes(1000))), float(index))
        assert reassembler.held_bytes <= 3 * cost
    assert reassembler.drops == {"fragment_evicted": 2}
    assert {key[0] for key in reassembler._pending[4]} == {s.packed for s in sources[2:]}


def test_too_many_fragments_discard_the_datagram():
    reassembler = Reassembler(max_fragments=4)
    for index in range(5):
        reassembler.add(parse_fragment(v4_fragment(PEER4, ME4.ip, 1, index * 8, True, bytes(8))), 0.0)
    assert reassembler.drops == {"fragment_too_many": 1} and reassembler.datagrams == 0


def test_the_ping_of_death_and_malformed_fragments_are_dropped():
    """A fragment reaching past 65,535 bytes (RFC 8200 4.5; the IPv4 "ping of death"); one with M set and
    a length not a multiple of 8; an IPv6 first fragment without the UDP header (RFC 7112)."""
    st_ = stack()
    st_.receive_packet(v4_fragment(PEER4, ME4.ip, 1, 65528, False, bytes(8)), 0.0)
    st_.receive_packet(v6_fragment(PEER6, ME6.ip, 1, 65528, False, bytes(16)), 0.0)
    assert st_.drops == {"fragment_too_long": 2}
    st_.drops.clear()
    st_.receive_packet(v4_fragment(PEER4, ME4.ip, 1, 0, True, bytes(12)), 0.0)
    st_.receive_packet(v6_fragment(PEER6, ME6.ip, 1, 8, True, bytes(12)), 0.0)
    assert st_.drops == {"malformed_fragment": 2}
    st_.drops.clear()
    hop_by_hop = bytes((0, 0)) + bytes(6)
    tiny = v6_fragment(PEER6, ME6.ip, 1, 0, True, bytes((PROTO_UDP, 0)) + bytes(6), proto=60)  # dest opts only
    st_.receive_packet(tiny, 0.0)
    st_.receive_packet(v6_fragment(PEER6, ME6.ip, 2, 0, True, bytes(8), before=hop_by_hop), 0.0)  # holds it
    assert st_.drops == {"fragment_incomplete": 1} and st_.fragments.datagrams == 1
    st_.drops.clear()
    st_.receive_packet(v4_fragment(PEER4, OTHER4, 1, 0, True, bytes(8)), 0.0)
    assert st_.drops == {"not_for_us": 1}


def test_a_reassembled_ipv4_datagram_past_65535_bytes_is_dropped():
    """Each fragment fits, but the first one's longer header (options) makes the whole too long."""
    reassembler = Reassembler()
    options = bytes(20)
    header = IPV4_HEADER.pack(0x4A, 0, 40 + 1000, 1, 0x2000, 64, PROTO_UDP, 0, PEER4.packed, ME4.ip.packed)
    first = header[:10] + internet_checksum(header + options).to_bytes(2, "big") + header[12:] + options
    assert reassembler.add(parse_fragment(first + bytes(1000)), 0.0) is None
    last = parse_fragment(v4_fragment(PEER4, ME4.ip, 1, 65512, False, bytes(3)))
    reassembler.add(last, 0.0)
    filler = [parse_fragment(v4_fragment(PEER4, ME4.ip, 1, o, True, bytes(min(1000, 65512 - o))))
              for o in range(1000, 65512, 1000)]
    assert all(isinstance(f, Fragment) for f in filler)
    assert not any(reassembler.add(f, 0.0) for f in filler)
    assert reassembler.drops == {"fragment_too_long": 1} and reassembler.datagrams == 0


def test_an_atomic_fragment_is_processed_alone():
    """RFC 6946: offset 0 and M clear: a whole packet at once, even while fragments with its Identification
    wait (they are untouched)."""
    st_ = stack()
    sock = st_.udp_open(4000, family=6)
    pending = v6_fragment(PEER6, ME6.ip, 42, 0, True, udp(PEER6.packed, ME6.ip.packed, 1, 4000, bytes(100))[:64])
    st_.receive_packet(pending, 0.0)
    atomic = v6_fragment(PEER6, ME6.ip, 42, 0, False, udp(PEER6.packed, ME6.ip.packed, 2, 4000, b"atomic"))
    st_.receive_packet(atomic, 0.0)
    assert sock.recvfrom() == (b"atomic", (PEER6, 2))
    assert st_.fragments.datagrams == 1 and not st_.drops


def test_a_fragment_header_inside_a_reassembled_packet_is_not_taken_apart_again():
    st_ = stack()
    inner = FRAGMENT_HEADER.pack(PROTO_UDP, 0, 0, 1) + udp(PEER6.packed, ME6.ip.packed, 1, 4000, bytes(8))
    st_.receive_packet(v6_fragment(PEER6, ME6.ip, 5, 0, False, inner, proto=44), 0.0)
    assert st_.drops == {"nested_fragment": 1}


# ---- sending -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("version", [4, 6])
def test_big_datagrams_leave_in_fragments_of_the_path_mtu_and_come_back_whole(version):
    a = Stack([ipaddress.ip_interface("198.18.0.1/32"), ipaddress.ip_interface("fd77::1/128")], mtu=1420,
              rng=lambda n: bytes(n))
    b = stack()
    peer = ME4.ip if version == 4 else ME6.ip
    sender, receiver = a.udp_open(5000, family=version), b.udp_open(6000, family=version)
    limit = 65507 if version == 4 else 65527
    for size in (1392, 2000, 8000, 65000, limit):
        data = random.Random(size).randbytes(size)
        sender.sendto(data, (peer, 6000), 0.0)
        packets = a.packets_to_send(0.0)
        assert all(len(p) <= 1420 for p in packets)
        assert len(packets) == (1 if size + 8 + (20 if version == 4 else 40) <= 1420 else len(packets))
        deliver(b, reversed(packets))
        assert receiver.recvfrom() == (data, (PEER4 if version == 4 else PEER6, 5000))
    with pytest.raises(OSError) as raised:
        sender.sendto(bytes(limit + 1), (peer, 6000), 0.0)
    assert raised.value.errno == 90
    assert not b.drops


def test_a_lower_path_mtu_makes_smaller_fragments_and_small_datagrams_keep_df():
    st_ = stack()
    quoted = IPv4Builder().build(ME4.ip.packed, PEER4.packed, PROTO_UDP, bytes(8))
    error = icmp.build_error(4, icmp.V4_UNREACHABLE, icmp.V4_CODE_FRAG_NEEDED, 1000, quoted)
    st_.receive_packet(IPv4Builder().build(PEER4.packed, ME4.ip.packed, PROTO_ICMP, error), 0.0)
    sock = st_.udp_open(family=4)
    sock.sendto(bytes(900), (PEER4, 53), 0.0)
    (whole,) = st_.packets_to_send(0.0)
    assert IPV4_HEADER.unpack_from(whole)[4] == 0x4000  # DF: path MTU discovery
    sock.sendto(bytes(3000), (PEER4, 53), 0.0)
    packets = st_.packets_to_send(0.0)
    assert max(len(p) for p in packets) <= 1000 and len(packets) == 4


def test_identifications_count_per_destination_from_a_random_start():
    """RFC 6864 / RFC 7739: unique per (source, destination, protocol) and not predictable across them."""
    draws = itertools.count(1)
    ids = FragmentIds(lambda n: next(draws).to_bytes(n, "big"), max_destinations=2)
    a, b, c, me = PEER4.packed, OTHER4.packed, bytes(4), ME4.ip.packed
    assert [ids.next(me, a, PROTO_UDP) for _ in range(3)] == [1, 2, 3]
    assert ids.next(me, b, PROTO_UDP) == 2  # its own random start (the second draw)
    assert ids.next(me, a, PROTO_UDP) == 4
    ids.next(me, c, PROTO_UDP)  # a third destination: the least recently used (b) is forgotten
    assert ids.next(me, b, PROTO_UDP) == 4  # a new random start
    wrap = FragmentIds(lambda n: b"\x00\x00\xff\xff")
    assert [wrap.next(me, a, PROTO_UDP) for _ in range(2)] == [0xFFFF, 0]  # 16 bits for IPv4
    wide = FragmentIds(lambda n: b"\xff\xff\xff\xff")
    assert [wide.next(ME6.ip.packed, PEER6.packed, PROTO_UDP) for _ in range(2)] == [0xFFFFFFFF, 0]


def test_fragmented_datagrams_take_their_identification_from_the_stacks_rng():
    st_ = stack(rng=lambda n: bytes(n - 2) + b"\x12\x34")
    st_.udp_open(7000, family=6).sendto(bytes(3000), (PEER6, 53), 0.0)
    packets = st_.packets_to_send(0.0)
    assert {FRAGMENT_HEADER.unpack_from(p, 40)[3] for p in packets} == {0x1234}


@pytest.mark.parametrize("version", [4, 6])
def test_a_big_echo_request_in_fragments_is_answered_in_fragments(version):
    st_ = stack()
    peer, me = (PEER4, ME4.ip) if version == 4 else (PEER6, ME6.ip)
    request = icmp.build_echo(version, True, 7, 1, bytes(range(256)) * 12, peer.packed, me.packed)
    proto = PROTO_ICMP if version == 4 else PROTO_ICMPV6
    make = v4_fragment if version == 4 else v6_fragment
    deliver(st_, [make(peer, me, 3, o, m, p, proto=proto) for o, p, m in cut(request, [1000, 1000, 1000])])
    replies = st_.packets_to_send(0.0)
    assert len(replies) == 3 and all(len(p) <= 1420 for p in replies)
    b = Stack([ipaddress.ip_interface(f"{peer}/{32 if version == 4 else 128}")], verify_checksums=True)
    b.send_echo(me, 7, 1, b"", 0.0)  # (to have an address; its packet is dropped)
    b.packets_to_send(0.0)
    deliver(b, replies)
    (reply,) = b.events()
    assert (reply.ident, reply.seq, reply.payload) == (7, 1, bytes(range(256)) * 12)
    with pytest.raises(OSError):
        st_.send_echo(peer, 1, 1, bytes(65528), 0.0)


def test_a_udp_socket_queues_a_bounded_number_of_bytes():
    from wgmagic.netstack.udp import UDP_QUEUE_BYTES

    a = Stack([ipaddress.ip_interface("198.18.0.1/32")])
    b = stack()
    sender, receiver = a.udp_open(5000), b.udp_open(6000)
    for _ in range(UDP_QUEUE_BYTES // 60000 + 3):
        sender.sendto(bytes(60000), (ME4.ip, 6000), 0.0)
    deliver(b, a.packets_to_send(0.0))
    assert receiver.queued_bytes <= UDP_QUEUE_BYTES and b.drops["udp_queue_full"] >= 1
    while receiver.recvfrom() is not None:
        pass
    assert receiver.queued_bytes == 0


# ---- hypothesis ------------------------------------------------------------------------------------------
@st.composite
def fragmented(draw):
    """A random datagram cut at random multiples of 8, its fragments in a random order with duplicates."""
    version = draw(st.sampled_from([4, 6]))
    size = draw(st.integers(1, 65507 if version == 4 else 65527))
    data = draw(st.binary(min_size=min(size, 64), max_size=min(size, 64))) * (size // 64 + 1)
    data = data[:size]
    sizes = draw(st.lists(st.integers(1, 2000).map(lambda n: n * 8), min_size=0, max_size=40))
    pieces = cut(data, sizes or [len(data) + 8])
    order = draw(st.permutations(range(len(pieces))))
    duplicates = draw(st.lists(st.integers(0, len(pieces) - 1), max_size=5))
    return version, data, [pieces[i] for i in [*order, *duplicates]]


@settings(max_examples=200, deadline=None)
@given(fragmented(), st.integers(0, 0xFFFF))
def test_any_fragmentation_in_any_order_reassembles_to_the_original(case, ident):
    version, data, pieces = case
    peer, me = (PEER4, ME4.ip) if version == 4 else (PEER6, ME6.ip)
    make = v4_fragment if version == 4 else v6_fragment
    reassembler = Reassembler()
    wholes = []
    for offset, piece, more in pieces:
        fragment = parse_fragment(make(peer, me, ident, offset, more, piece, proto=253))
        if isinstance(fragment, str):  # a datagram that fits one piece is not a fragment
            assert fragment == "not_a_fragment" and {offset for offset, _, _ in pieces} == {0}
            return
        whole = reassembler.add(fragment, 0.0)
        if whole is not None:
            wholes.append(whole)
    assert len(wholes) >= 1
    parsed = parse(wholes[0], True)
    assert not isinstance(parsed, str)
    assert (parsed[0], parsed[3], bytes(parsed[4])) == (version, 253, data)
    # Duplicates of the last fragments after completion open a new datagram that never completes; nothing else.
    assert reassembler.datagrams <= 1 and set(reassembler.drops) <= {"fragment_duplicate"}


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([4, 6]), st.integers(0, 3), st.integers(0, 3), st.integers(0, 8191),
                          st.booleans(), st.binary(max_size=300), st.floats(0, 200)), max_size=60),
       st.binary(max_size=200))
def test_random_fragments_never_raise_and_memory_stays_bounded(items, garbage):
    """Fragments from a few sources with colliding identifications, random offsets, flags, lengths and times
    (and plain garbage): never an exception, the bounds always hold, and everything goes at the deadline."""
    max_bytes, per_source = 8 * 1024, 4 * 1024
    st_ = stack()
    st_.fragments = Reassembler(st_.drops, max_bytes=max_bytes, max_bytes_per_source=per_source, max_fragments=16)
    now = 0.0
    for version, source, ident, offset8, more, data, dt in items:
        now += dt
        if version == 4:
            peer = ipaddress.ip_address(f"198.18.0.{20 + source}")
            packet = v4_fragment(peer, ME4.ip, ident, offset8 * 8, more, data)
        else:
            peer = ipaddress.ip_address(f"fd77::{20 + source}")
            packet = v6_fragment(peer, ME6.ip, ident, offset8 * 8, more, data)
        st_.receive_packet(packet, now)
        st_.receive_packet(packet[:len(packet) // 2] + garbage, now)
        if st_.next_timer() is not None and st_.next_timer() <= now:
            st_.handle_timers(now)
        fragments = st_.fragments
        assert fragments.held_bytes <= max_bytes
        assert all(v <= per_source for v in fragments._source_bytes.values())
        charged = sum(d.charge for queue in fragments._pending.values() for d in queue.values())
        assert charged == fragments.held_bytes
        assert fragments.datagrams <= max_bytes // DATAGRAM_OVERHEAD
    assert "internal_error" not in st_.drops
    st_.handle_timers(now + TIMEOUT_V6)
    assert st_.fragments.datagrams == 0 and st_.fragments.held_bytes == 0 and st_.next_timer() is None


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200), st.sampled_from([b"\x45\x00", b"\x46\x00", b"\x60\x00\x00\x00\x00\x10\x2c",
                                                 b"\x60\x00\x00\x00\x00\x30\x00", b""]))
def test_parse_fragment_never_raises(data, prefix):
    result = parse_fragment(prefix + data)
    assert isinstance(result, (str, Fragment))
    if isinstance(result, Fragment):
        assert result.offset + len(result.data) <= 65535 and (not result.more or len(result.data) % 8 == 0)


@pytest.mark.parametrize("shape", ["one_fragment_datagrams", "tiny_fragments", "full_fragments"])
def test_the_charge_is_what_the_memory_really_costs(shape):
    """Real memory (tracemalloc) of a reassembly filled to its bound stays within 1.5 times `max_bytes`, for
    the costliest shapes: a datagram per fragment, 8-byte fragments, 1,400-byte fragments."""
    import tracemalloc

    max_bytes = 1024 * 1024
    fragments = []
    for i in range(8000):
        if shape == "one_fragment_datagrams":
            fragments.append(v6_fragment(ipaddress.ip_address(f"fd77::{i % 500 + 100:x}"), ME6.ip, i, 8, True,
                                         bytes(8)))
        elif shape == "tiny_fragments":
            source = ipaddress.ip_address(f"198.18.{i // 100 % 250}.{i % 100 + 1}")
            fragments.append(v4_fragment(source, ME4.ip, i // 2000, 8 * (i // 100 % 20 + 1), True, bytes(8)))
        else:
            source = ipaddress.ip_address(f"198.18.0.{i % 40 + 10}")
            fragments.append(v4_fragment(source, ME4.ip, i // 40, 1400 * (i // 200 % 40), True, bytes(1400)))
    parsed = [parse_fragment(f) for f in fragments]
    tracemalloc.start()
    try:
        reassembler = Reassembler(max_bytes=max_bytes, max_bytes_per_source=max_bytes // 4)
        before = tracemalloc.get_traced_memory()[0]
        for fragment in parsed:
            reassembler.add(fragment, 0.0)
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert reassembler.drops["fragment_evicted"] > 0 and max_bytes // 2 < reassembler.held_bytes <= max_bytes
    assert used <= 1.5 * max_bytes, (used, reassembler.held_bytes, reassembler.datagrams)
