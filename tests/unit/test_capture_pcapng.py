"""The pcapng writer of `%wg capture` (wgmagic/runtime/services/capture.py): its output parsed back."""

from __future__ import annotations

import io
import ipaddress
import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from pcapng import FileScanner, blocks

from wgmagic.netstack.wire.checksum import internet_checksum, transport_checksum
from wgmagic.runtime.services.capture import (
    INBOUND,
    LINKTYPE_RAW,
    OUTBOUND,
    WIREGUARD_HEADER,
    Record,
    header_length,
    udp_packet,
    udp_packet_length,
    write_pcapng,
)


def _tcp_packet(payload: bytes, options: bytes = b"") -> bytes:
    header = struct.pack("!HHIIBBHHH", 40000, 5432, 1, 2, (5 + len(options) // 4) << 4, 0x18, 65535, 0, 0)
    segment = header + options + payload
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(segment), 0, 0x4000, 64, 6, 0,
                       bytes([198, 18, 0, 2]), bytes([198, 18, 0, 1])) + segment


def _read(data: bytes) -> list[object]:
    return list(FileScanner(io.BytesIO(data)))


records_strategy = st.lists(st.builds(
    Record,
    timestamp=st.floats(min_value=0, max_value=4e9, allow_nan=False),
    interface=st.sampled_from([0, 1]),
    inbound=st.booleans(),
    data=st.binary(max_size=200),
    length=st.integers(min_value=200, max_value=65535),
), max_size=20)


@settings(max_examples=60, deadline=None)
@given(records=records_strategy, outer=st.booleans())
def test_every_record_comes_back_with_its_interface_time_direction_and_lengths(records, outer):
    stream = io.BytesIO()
    written = write_pcapng(stream, records, outer=outer)
    parsed = _read(stream.getvalue())
    shb, *rest = parsed
    assert isinstance(shb, blocks.SectionHeader)
    interfaces = [b for b in rest if isinstance(b, blocks.InterfaceDescription)]
    packets = [b for b in rest if isinstance(b, blocks.EnhancedPacket)]
    assert [i.link_type for i in interfaces] == [LINKTYPE_RAW] * (2 if outer else 1)
    expected = [r for r in records if (outer or r.interface == 0) and r.data]
    assert written == len(packets) == len(expected)
    for record, packet in zip(expected, packets, strict=True):
        assert packet.interface_id == record.interface
        assert packet.packet_data == record.data
        assert packet.packet_len == record.length
        micros = (packet.timestamp_high << 32) | packet.timestamp_low
        assert micros == round(record.timestamp * 1_000_000)
        assert packet.options["epb_flags"].inout == ("inbound" if record.inbound else "outbound")


def test_direction_flags_are_the_pcapng_values():
    assert (INBOUND, OUTBOUND) == (1, 2)


@given(payload=st.binary(max_size=300), words=st.integers(min_value=0, max_value=10))
def test_header_length_cuts_a_tcp_packet_after_its_options(payload, words):
    packet = _tcp_packet(payload, b"\x01" * (4 * words))
    assert header_length(packet) == 20 + 20 + 4 * words
    assert packet[:header_length(packet)].endswith(b"\x01" * (4 * words))


@given(st.binary(max_size=120))
def test_header_length_never_raises_and_stays_inside_the_packet(data):
    assert 0 <= header_length(data) <= len(data)


def test_header_length_of_udp_icmp_and_ipv6():
    v6 = struct.pack("!IHBB16s16s", 6 << 28, 8 + 5, 17, 64, b"\xfd" + b"\0" * 15, b"\xfd" + b"\1" * 15)
    assert header_length(v6 + b"\0" * 8 + b"hello") == 48
    v4_icmp = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 36, 0, 0, 64, 1, 0, b"\1" * 4, b"\2" * 4) + b"\x08" * 16
    assert header_length(v4_icmp) == 28


@given(payload=st.binary(max_size=200), v6=st.booleans(), sport=st.integers(1, 65535), dport=st.integers(1, 65535))
def test_outer_udp_packets_carry_valid_checksums(payload, v6, sport, dport):
    src, dst = ("fd00::1", "fd00::2") if v6 else ("127.0.0.1", "127.0.0.2")
    packet = udp_packet((src, sport), (dst, dport), payload)
    header = 40 if v6 else 20
    if not v6:
        assert internet_checksum(packet[:20]) == 0
    udp = packet[header:]
    assert struct.unpack("!HHH", udp[:6]) == (sport, dport, 8 + len(payload))
    assert transport_checksum(ipaddress.ip_address(src), ipaddress.ip_address(dst), 17, udp) == 0
    assert udp[8:] == payload


@given(payload=st.binary(max_size=1500), v6=st.booleans(), keep=st.integers(0, 1600))
def test_a_cut_outer_packet_keeps_the_whole_datagrams_lengths_and_checksum(payload, v6, keep):
    """Issue 21: the rebuilt headers of a cut datagram carry its original lengths (IPv4 total length / IPv6
    payload length, UDP length) and the checksum of the whole datagram, as a snaplen-cut capture does."""
    src, dst = (("fd00::1", 51820), ("fd00::2", 40000)) if v6 else (("198.18.0.1", 51820), ("198.18.0.2", 40000))
    whole = udp_packet(src, dst, payload)
    cut = udp_packet(src, dst, payload, keep)
    header = 40 if v6 else 20
    assert len(whole) == udp_packet_length(src, payload) == header + 8 + len(payload)
    assert cut == whole[:header + 8 + keep]
    if v6:
        assert struct.unpack_from("!H", cut, 4)[0] == 8 + len(payload)
    else:
        assert struct.unpack_from("!H", cut, 2)[0] == len(whole)
        assert internet_checksum(cut[:20]) == 0
    assert struct.unpack_from("!H", cut, header + 4)[0] == 8 + len(payload)


def test_a_cut_wireguard_data_message_still_says_how_long_it_was():
    message = struct.pack("<IIQ", 4, 7, 3) + bytes(64)  # transport data: type 4, receiver, counter, 64 bytes
    packet = udp_packet(("127.0.0.1", 51820), ("127.0.0.1", 40000), message, WIREGUARD_HEADER)
    assert len(packet) == 20 + 8 + 16
    assert struct.unpack_from("!H", packet, 2)[0] == 20 + 8 + 80 == udp_packet_length(("127.0.0.1", 1), message)
    assert struct.unpack_from("!H", packet, 24)[0] == 8 + 80
