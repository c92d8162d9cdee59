"""The Internet checksum (RFC 1071) and the pseudo-headers TCP, UDP and ICMPv6 sum over."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv6Address

_PSEUDO_V4 = struct.Struct("!4s4sxBH")
_PSEUDO_V6 = struct.Struct("!16s16sI3xB")


def ones_complement_sum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """Sum 16-bit big-endian words with end-around carry; odd lengths are padded with a zero byte.

    Since 2**16 == 1 (mod 0xFFFF), that sum is the whole buffer read as one big integer modulo 0xFFFF, which
    keeps the work in C (about 1 us for 1420 bytes, against 100+ us for a loop over words).
    """
    if len(data) % 2:
        data = bytes(data) + b"\x00"
    total = int.from_bytes(data, "big") + initial
    if not total:
        return 0
    folded = total % 0xFFFF
    return folded or 0xFFFF


def internet_checksum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """The 16-bit one's complement of the one's complement sum; 0 stays 0xFFFF-free as RFC 1071 says."""
    return (~ones_complement_sum(data, initial)) & 0xFFFF


def pseudo_header_sum(src: IPv4Address | IPv6Address | bytes, dst: IPv4Address | IPv6Address | bytes,
                      protocol: int, length: int) -> int:
    """Partial sum of the IPv4 (RFC 793) or IPv6 (RFC 8200 section 8.1) pseudo-header."""
    s = src.packed if not isinstance(src, (bytes, bytearray)) else bytes(src)
    d = dst.packed if not isinstance(dst, (bytes, bytearray)) else bytes(dst)
    if len(s) == 4:
        return ones_complement_sum(_PSEUDO_V4.pack(s, d, protocol, length))
    return ones_complement_sum(_PSEUDO_V6.pack(s, d, length, protocol))


def transport_checksum(src: IPv4Address | IPv6Address | bytes, dst: IPv4Address | IPv6Address | bytes,
                       protocol: int, segment: bytes | bytearray | memoryview) -> int:
    """Checksum for a TCP/UDP/ICMPv6 segment whose checksum field is zero (or, to verify, as received:
    a correct segment then gives 0)."""
    return internet_checksum(segment, pseudo_header_sum(src, dst, protocol, len(segment)))
