"""`parse_fragment` (netstack/wire/ip.py) reads what `parse` checked: IPv6 header chains of every shape (extension
headers of any length, as many as allowed and more, a Fragment header or none, cut anywhere) never make it
raise, and a Fragment it returns points at its own Fragment header (RFC 8200 4.5)."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from wgmagic.netstack.wire.ip import FRAGMENT_HEADER, IPV6_HEADER, Fragment, parse, parse_fragment

HOP_BY_HOP, ROUTING, FRAGMENT, DEST_OPTS, UDP = 0, 43, 44, 60, 17
SRC, DST = bytes(15) + b"\x01", bytes(15) + b"\x02"


@st.composite
def ipv6_chains(draw: st.DrawFn) -> bytes:
    """An IPv6 packet: 0-10 extension headers (each 8 to 64 bytes), then maybe a Fragment header, then data;
    its Payload Length true, or off by a little; the packet maybe cut short."""
    kinds = draw(st.lists(st.sampled_from([HOP_BY_HOP, ROUTING, DEST_OPTS]), max_size=10))  # 8 at most pass
    fragment = draw(st.booleans())
    chain = [*kinds, FRAGMENT] if fragment else kinds
    body = b""
    for index, _kind in enumerate(chain):
        following = chain[index + 1] if index + 1 < len(chain) else UDP
        if chain[index] == FRAGMENT:
            field = draw(st.integers(0, 0x1FFF)) << 3 | draw(st.integers(0, 1))  # offset, M
            body += FRAGMENT_HEADER.pack(following, 0, field, draw(st.integers(0, 2**32 - 1)))
        else:
            units = draw(st.integers(0, 7))
            body += bytes([following, units]) + bytes(6 + 8 * units)
    body += bytes(8 * draw(st.integers(0, 8))) if draw(st.booleans()) else draw(st.binary(max_size=64))
    length = max(0, len(body) + draw(st.sampled_from([0, 0, 0, 0, -1, 1, -8, 8, -16])))
    packet = IPV6_HEADER.pack(6 << 28, min(length, 0xFFFF), chain[0] if chain else UDP, 64, SRC, DST) + body
    return packet[:draw(st.integers(0, len(packet)))] if draw(st.integers(0, 3)) == 0 else packet


@settings(max_examples=1000, deadline=None)
@given(ipv6_chains())
def test_parse_fragment_never_raises_on_any_ipv6_header_chain(packet):
    result = parse_fragment(packet)
    assert isinstance(result, (str, Fragment))
    if isinstance(result, Fragment):
        assert parse(packet) == "fragment"
        assert result.version == 6 and result.header[result.next_at] == FRAGMENT
        assert result.header[-8] == result.proto  # its Fragment header names what follows
        assert not result.more or len(result.data) % 8 == 0
    elif parse(packet) != "fragment":
        assert result == (parse(packet) if isinstance(parse(packet), str) else "not_a_fragment")


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 0x1FFF), st.booleans(), st.binary(max_size=64), st.booleans())
def test_an_ipv4_fragment_with_a_bad_checksum_is_dropped_as_such(offset, more, data, corrupt):
    from wgmagic.netstack.wire.checksum import internet_checksum

    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(data), 7, (0x2000 if more else 0) | offset or 1, 64,
                         UDP, 0, bytes(4), bytes(3) + b"\x01")
    header = header[:10] + internet_checksum(header).to_bytes(2, "big") + header[12:]
    if corrupt:
        header = header[:8] + bytes([header[8] ^ 1]) + header[9:]
    result = parse_fragment(header + data)
    if corrupt:
        assert result == "bad_checksum"
    else:
        assert result in ("malformed_fragment", "fragment_too_long") or isinstance(result, Fragment)
