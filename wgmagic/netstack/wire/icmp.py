"""ICMPv4 (RFC 792) and ICMPv6 (RFC 4443) messages: echo, unreachable, too big. Parse and build only."""

from __future__ import annotations

import struct
from enum import Enum

from wgmagic.netstack.wire.checksum import internet_checksum, transport_checksum
from wgmagic.netstack.wire.ip import PROTO_ICMPV6

ICMP_HEADER = struct.Struct("!BBHHH")
V4_ECHO_REPLY, V4_UNREACHABLE, V4_ECHO_REQUEST = 0, 3, 8
V4_CODE_PORT_UNREACHABLE, V4_CODE_FRAG_NEEDED = 3, 4
V6_UNREACHABLE, V6_TOO_BIG, V6_ECHO_REQUEST, V6_ECHO_REPLY = 1, 2, 128, 129
V6_CODE_PORT_UNREACHABLE = 4


class IcmpKind(str, Enum):
    """The kinds of ICMP error the stack tells apart; a str, so comparisons with the plain names still hold.

    UNREACHABLE: any destination unreachable (ICMPv4 type 3, ICMPv6 type 1) but a port's; PORT_UNREACHABLE:
    code 3 (v4, RFC 792) or 4 (v6, RFC 4443 3.1); TOO_BIG: fragmentation needed (v4 code 4, RFC 1191) or
    packet too big (ICMPv6 type 2, RFC 4443 3.2).
    """

    __str__ = str.__str__
    __format__ = str.__format__

    UNREACHABLE = "unreachable"
    PORT_UNREACHABLE = "port_unreachable"
    TOO_BIG = "too_big"


def build_echo(version: int, request: bool, ident: int, seq: int, payload: bytes, src: bytes = b"",
               dst: bytes = b"") -> bytes:
    """An ICMP echo request or reply (RFC 792; RFC 4443 4.1-4.2) with its checksum; for IPv6, `src`/`dst`
    (raw addresses) are needed for the pseudo-header."""
    if version == 4:
        kind = V4_ECHO_REQUEST if request else V4_ECHO_REPLY
    else:
        kind = V6_ECHO_REQUEST if request else V6_ECHO_REPLY
    return _with_checksum(version, ICMP_HEADER.pack(kind, 0, 0, ident, seq) + payload, src, dst)


def _with_checksum(version: int, message: bytes, src: bytes, dst: bytes) -> bytes:
    # ICMPv6 sums over a pseudo-header (RFC 4443 2.3); ICMPv4 over the message alone.
    checksum = internet_checksum(message) if version == 4 else transport_checksum(src, dst, PROTO_ICMPV6, message)
    return message[:2] + checksum.to_bytes(2, "big") + message[4:]


def build_error(version: int, kind: int, code: int, rest: int, quoted: bytes, src: bytes = b"",
                dst: bytes = b"") -> bytes:
    """An ICMP error quoting (the start of) the offending packet."""
    quoted = quoted[:548] if version == 4 else quoted[:1232]
    return _with_checksum(version, struct.pack("!BBHI", kind, code, 0, rest) + quoted, src, dst)


def checksum_ok(version: int, message: bytes | memoryview, src: bytes, dst: bytes) -> bool:
    """Whether an ICMP message's checksum verifies (IPv6: over the pseudo-header, RFC 4443 2.3)."""
    if version == 4:
        return internet_checksum(message) == 0
    return transport_checksum(src, dst, PROTO_ICMPV6, message) == 0
