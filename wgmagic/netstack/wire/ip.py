"""IPv4 (RFC 791) and IPv6 (RFC 8200) headers: parse with validation, build. Nothing else.

`parse` returns a tuple (version, src bytes, dst bytes, protocol, payload memoryview, hop limit) or a drop
reason string; it never raises on bytes from the network. A fragment is "fragment" there; `parse_fragment`
reads it (`Fragment`) for the reassembly in `wgmagic.netstack.fragments`, and `build_ipv4_fragments` /
`build_ipv6_fragments` cut a datagram bigger than the MTU.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from wgmagic.netstack.wire.checksum import internet_checksum

IPV4_HEADER = struct.Struct("!BBHHHBBH4s4s")
IPV6_HEADER = struct.Struct("!IHBB16s16s")
PROTO_ICMP, PROTO_TCP, PROTO_UDP, PROTO_ICMPV6 = 1, 6, 17, 58
_HOP_BY_HOP, _ROUTING, _FRAGMENT, _DEST_OPTS, _NO_NEXT = 0, 43, 44, 60, 59
_MAX_EXTENSION_HEADERS = 8
DEFAULT_TTL = 64
FRAGMENT_HEADER = struct.Struct("!BBHI")  # RFC 8200 4.5: next header, reserved, offset|res|M, identification
IPV4_MAX_TOTAL = 65535  # RFC 791: Total Length is 16 bits, the header included
IPV6_MAX_PAYLOAD = 65535  # RFC 8200: Payload Length is 16 bits (no jumbograms, RFC 2675)
# The least an upper-layer header takes, which the first fragment must hold whole (RFC 8200 4.5, RFC 7112).
_UPPER_HEADER_MIN = {PROTO_TCP: 20, PROTO_UDP: 8, PROTO_ICMPV6: 4}

Parsed = tuple[int, bytes, bytes, int, memoryview, int]


def parse(packet: bytes | memoryview, verify_checksum: bool = True) -> Parsed | str:
    """Validate an IPv4 (RFC 791) or IPv6 (RFC 8200) packet: (version, src, dst, protocol, payload, hop limit),
    with IPv6 extension headers walked (at most 8) and the payload cut to the header's length; or a drop
    reason string ("empty", "bad_version", "malformed_ipv4", "malformed_ipv6", "bad_checksum", "fragment",
    "no_next_header", "too_many_extension_headers"). Never raises."""
    if not packet:
        return "empty"
    version = packet[0] >> 4
    if version == 4:
        return _parse_v4(packet, verify_checksum)
    if version == 6:
        return _parse_v6(packet)
    return "bad_version"


def _parse_v4(packet: bytes | memoryview, verify_checksum: bool) -> Parsed | str:
    if len(packet) < 20:
        return "malformed_ipv4"
    vihl, _, total, _, frag, ttl, proto, _, src, dst = IPV4_HEADER.unpack_from(packet)
    ihl = (vihl & 0x0F) * 4
    if ihl < 20 or total < ihl or total > len(packet):
        return "malformed_ipv4"
    if frag & 0x3FFF:  # MF set or a non-zero offset: we do not reassemble
        return "fragment"
    if verify_checksum and internet_checksum(packet[:ihl]) != 0:
        return "bad_checksum"
    view = memoryview(packet)
    return 4, src, dst, proto, view[ihl:total], ttl


def _parse_v6(packet: bytes | memoryview) -> Parsed | str:
    if len(packet) < 40:
        return "malformed_ipv6"
    _, payload_len, next_header, hop_limit, src, dst = IPV6_HEADER.unpack_from(packet)
    end = 40 + payload_len
    if end > len(packet):
        return "malformed_ipv6"
    offset = 40
    for _ in range(_MAX_EXTENSION_HEADERS):
        if next_header in (_HOP_BY_HOP, _ROUTING, _DEST_OPTS):
            if offset + 8 > end:
                return "malformed_ipv6"
            following = packet[offset]
            length = (packet[offset + 1] + 1) * 8
            if offset + length > end:
                return "malformed_ipv6"
            next_header, offset = following, offset + length
        elif next_header == _FRAGMENT:
            return "fragment"
        else:
            break
    else:
        return "too_many_extension_headers"
    if next_header == _NO_NEXT:
        return "no_next_header"
    view = memoryview(packet)
    return 6, src, dst, next_header, view[offset:end], hop_limit


class Fragment(NamedTuple):
    """One fragment as `parse_fragment` reads it (RFC 791 for IPv4, RFC 8200 4.5 for IPv6).

    `ident`: the Identification (16 bits in IPv4, 32 in IPv6); `offset`: where `data` starts in the
    fragmentable part, in bytes; `more`: the MF / M flag; `proto`: IPv4's Protocol, or the Next Header of
    the Fragment header (what follows in the reassembled packet); `header`: the bytes before `data` (IPv4:
    the header, options included; IPv6: the unfragmentable part and the Fragment header); `next_at`: IPv6
    only, the index in `header` of the Next Header byte that names the Fragment header (6 when none
    precedes it), -1 for IPv4."""

    version: int
    src: bytes
    dst: bytes
    ident: int
    offset: int
    more: bool
    proto: int
    header: bytes
    next_at: int
    data: memoryview


def parse_fragment(packet: bytes | memoryview, verify_checksum: bool = True) -> Fragment | str:
    """Read a packet `parse` called "fragment": a `Fragment`, or a drop reason: `parse`'s, or
    "malformed_fragment" (M set and a length not a multiple of 8, RFC 8200 4.5; no data), "fragment_too_long"
    (offset + length past the 65,535 bytes a datagram may have: the "ping of death"), "fragment_incomplete"
    (IPv6: a first fragment that does not hold the headers through the upper-layer header, RFC 7112),
    "not_a_fragment". Never raises."""
    parsed = parse(packet, verify_checksum)  # the header's lengths and the extension headers, checked once
    if parsed != "fragment":
        return parsed if isinstance(parsed, str) else "not_a_fragment"
    return _fragment_v4(packet, verify_checksum) if packet[0] >> 4 == 4 else _fragment_v6(packet)


def _fragment_v4(packet: bytes | memoryview, verify_checksum: bool) -> Fragment | str:
    """An IPv4 fragment whose header's lengths `parse` checked (the checksum is checked here: `parse` leaves
    a fragment before it)."""
    vihl, _, total, ident, frag, _, proto, _, src, dst = IPV4_HEADER.unpack_from(packet)
    ihl = (vihl & 0x0F) * 4
    if verify_checksum and internet_checksum(packet[:ihl]) != 0:
        return "bad_checksum"
    offset, more, length = (frag & 0x1FFF) * 8, bool(frag & 0x2000), total - ihl
    if length == 0 or (more and length % 8):
        return "malformed_fragment"
    if ihl + offset + length > IPV4_MAX_TOTAL:
        return "fragment_too_long"
    view = memoryview(packet)
    return Fragment(4, src, dst, ident, offset, more, proto, bytes(view[:ihl]), -1, view[ihl:total])


def _fragment_v6(packet: bytes | memoryview) -> Fragment | str:
    """An IPv6 packet whose header chain `parse` walked to a Fragment header: each extension header before it
    lies inside the payload, at most _MAX_EXTENSION_HEADERS of them."""
    _, payload_len, next_header, _, src, dst = IPV6_HEADER.unpack_from(packet)
    end = 40 + payload_len
    offset, next_at = 40, 6
    while next_header != _FRAGMENT:  # hop-by-hop, routing, destination options: walked and checked by parse
        next_header, next_at, offset = packet[offset], offset, offset + (packet[offset + 1] + 1) * 8
    if offset + 8 > end:
        return "malformed_ipv6"
    proto, _, field, ident = FRAGMENT_HEADER.unpack_from(packet, offset)
    start, more = field & 0xFFF8, bool(field & 1)
    data_at = offset + 8
    length = end - data_at
    if (more and (length == 0 or length % 8)) or (start and length == 0):
        return "malformed_fragment"
    if offset - 40 + start + length > IPV6_MAX_PAYLOAD:
        return "fragment_too_long"
    view = memoryview(packet)
    if start == 0 and more and not _holds_upper_header(view[data_at:end], proto):
        return "fragment_incomplete"
    return Fragment(6, src, dst, ident, start, more, proto, bytes(view[:data_at]), next_at, view[data_at:end])


def _holds_upper_header(data: memoryview, next_header: int) -> bool:
    """Whether a first fragment's data holds the rest of the header chain and the upper-layer header."""
    at = 0
    for _ in range(_MAX_EXTENSION_HEADERS):
        if next_header not in (_HOP_BY_HOP, _ROUTING, _DEST_OPTS):
            return at + _UPPER_HEADER_MIN.get(next_header, 0) <= len(data)
        if at + 8 > len(data):
            return False
        next_header, at = data[at], at + (data[at + 1] + 1) * 8
    return False


def build_ipv4_fragments(src: bytes, dst: bytes, proto: int, payload: bytes, ident: int, mtu: int,
                         ttl: int = DEFAULT_TTL) -> list[bytes]:
    """`payload` cut into IPv4 fragments of at most `mtu` bytes each (RFC 791 3.2: data in multiples of 8
    but the last, DF clear, MF on all but the last, `ident` on all). ValueError if the datagram would be
    longer than 65,535 bytes or `mtu` below 28."""
    if 20 + len(payload) > IPV4_MAX_TOTAL or mtu < 28:
        raise ValueError(f"cannot fragment {len(payload)} bytes into an MTU of {mtu}")
    step = (mtu - 20) & ~7
    packets = []
    for start in range(0, len(payload), step):
        chunk = payload[start:start + step]
        field = (0x2000 if start + step < len(payload) else 0) | (start >> 3)
        header = IPV4_HEADER.pack(0x45, 0, 20 + len(chunk), ident, field, ttl, proto, 0, src, dst)
        checksum = internet_checksum(header)
        packets.append(header[:10] + checksum.to_bytes(2, "big") + header[12:] + chunk)
    return packets


def build_ipv6_fragments(src: bytes, dst: bytes, next_header: int, payload: bytes, ident: int, mtu: int,
                         hop_limit: int = DEFAULT_TTL) -> list[bytes]:
    """`payload` (the fragmentable part: here the upper-layer header and data) cut into IPv6 fragment packets
    of at most `mtu` bytes, each with a Fragment header (RFC 8200 4.5) holding `ident` (32 bits). ValueError
    if the payload is longer than 65,535 bytes or `mtu` below 56."""
    if len(payload) > IPV6_MAX_PAYLOAD or mtu < 56:
        raise ValueError(f"cannot fragment {len(payload)} bytes into an MTU of {mtu}")
    step = (mtu - 48) & ~7
    packets = []
    for start in range(0, len(payload), step):
        chunk = payload[start:start + step]
        field = start | (1 if start + step < len(payload) else 0)
        packets.append(IPV6_HEADER.pack(6 << 28, 8 + len(chunk), _FRAGMENT, hop_limit, src, dst)
                       + FRAGMENT_HEADER.pack(next_header, 0, field, ident) + chunk)
    return packets


class IPv4Builder:
    """Builds IPv4 headers with DF set: a datagram that fits the path MTU goes whole (path MTU discovery,
    RFC 1191); the stack cuts larger ones with `build_ipv4_fragments` (DF clear, as Linux does for UDP)."""

    def __init__(self) -> None:
        self.identification = 0

    def build(self, src: bytes, dst: bytes, proto: int, payload: bytes, ttl: int = DEFAULT_TTL) -> bytes:
        """An IPv4 header (DF set, a new identification, `ttl`) followed by `payload` (RFC 791)."""
        ident = self.identification = (self.identification + 1) & 0xFFFF
        length = 20 + len(payload)
        header = IPV4_HEADER.pack(0x45, 0, length, ident, 0x4000, ttl, proto, 0, src, dst)
        # internet_checksum(header) inlined (the header is never all zeros: 0x45): RFC 1071 by one modulo.
        checksum = ~(int.from_bytes(header, "big") % 0xFFFF or 0xFFFF) & 0xFFFF
        return IPV4_HEADER.pack(0x45, 0, length, ident, 0x4000, ttl, proto, checksum, src, dst) + payload


def build_ipv6(src: bytes, dst: bytes, next_header: int, payload: bytes, hop_limit: int = DEFAULT_TTL) -> bytes:
    """An IPv6 header (RFC 8200 3) followed by `payload`."""
    return IPV6_HEADER.pack(6 << 28, len(payload), next_header, hop_limit, src, dst) + payload
