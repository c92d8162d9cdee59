"""IPv4 (RFC 791) and IPv6 (RFC 8200) headers: parse with validation, build. Nothing else.

`parse` returns a tuple (version, src bytes, dst bytes, protocol, payload memoryview, hop limit) or a drop
reason string; it never raises on bytes from the network.
"""

from __future__ import annotations

import struct

from wgmagic.netstack.wire.checksum import internet_checksum

IPV4_HEADER = struct.Struct("!BBHHHBBH4s4s")
IPV6_HEADER = struct.Struct("!IHBB16s16s")
PROTO_ICMP, PROTO_TCP, PROTO_UDP, PROTO_ICMPV6 = 1, 6, 17, 58
_HOP_BY_HOP, _ROUTING, _FRAGMENT, _DEST_OPTS, _NO_NEXT = 0, 43, 44, 60, 59
_MAX_EXTENSION_HEADERS = 8
DEFAULT_TTL = 64

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


class IPv4Builder:
    """Builds IPv4 headers with DF set (we rely on path MTU discovery, never fragment)."""

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
