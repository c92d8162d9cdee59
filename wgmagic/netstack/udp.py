"""UDP (RFC 768) on the user-space stack: the socket a `Stack` binds, its bounded receive queue, the datagram
parser and the port-unreachable answer. Sans-I/O; the stack demultiplexes, this module holds what a UDP
socket is. No socket, no clock.
"""

from __future__ import annotations

import ipaddress
import struct
from collections import deque
from typing import Protocol

from wgmagic.netstack.wire import icmp
from wgmagic.netstack.wire.checksum import transport_checksum
from wgmagic.netstack.wire.ip import PROTO_ICMP, PROTO_ICMPV6, PROTO_UDP

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_UDP = struct.Struct("!HHHH")
UDP_QUEUE = 256
UDP_QUEUE_BYTES = 1024 * 1024  # per socket, besides UDP_QUEUE: 16 datagrams of 64 KiB
# The largest UDP payload: a datagram's length fields are 16 bits (RFC 768; RFC 791 Total Length includes the
# 20-byte header, RFC 8200 Payload Length does not count the 40-byte one). No jumbograms (RFC 2675).
UDP_MAX_PAYLOAD = {4: 65535 - 20 - 8, 6: 65535 - 8}

__all__ = ["UDP_MAX_PAYLOAD", "UDP_QUEUE", "UDP_QUEUE_BYTES", "UdpHost", "UdpSocket", "parse_datagram",
           "port_unreachable"]


class UdpHost(Protocol):
    """What a UdpSocket asks of the stack it is bound on."""

    def emit_datagram(self, src: bytes, dst: bytes, proto: int, payload: bytes) -> None: ...

    def unbind_udp(self, local: bytes, port: int) -> None: ...


def _address(raw: bytes) -> IPAddress:
    return ipaddress.IPv4Address(raw) if len(raw) == 4 else ipaddress.IPv6Address(raw)


def parse_datagram(segment: memoryview) -> tuple[int, int, bytes] | None:
    """(source port, destination port, payload) of a UDP datagram, or None when it is malformed (shorter than
    its header, or a length field outside 8..len(segment))."""
    if len(segment) < 8:
        return None
    sport, dport, length, _checksum = _UDP.unpack_from(segment)
    if length < 8 or length > len(segment):
        return None
    return sport, dport, bytes(segment[8:length])


def port_unreachable(version: int, src: bytes, dst: bytes, packet: bytes | memoryview) -> tuple[int, bytes]:
    """(protocol, ICMP message) answering a datagram to a port nobody is bound on (RFC 792, RFC 4443 3.1),
    quoting as much of it as RFC 1812 / RFC 4443 allow; sent from `dst` back to `src`."""
    quoted = bytes(packet)[:576 if version == 4 else 1232]
    if version == 4:
        return PROTO_ICMP, icmp.build_error(4, icmp.V4_UNREACHABLE, icmp.V4_CODE_PORT_UNREACHABLE, 0, quoted)
    return PROTO_ICMPV6, icmp.build_error(6, icmp.V6_UNREACHABLE, icmp.V6_CODE_PORT_UNREACHABLE, 0, quoted, dst, src)


class UdpSocket:
    """A UDP socket bound to (local address, port) on a `Stack` (RFC 768). Received datagrams queue up to
    UDP_QUEUE datagrams and UDP_QUEUE_BYTES bytes (more are dropped and counted); each raises `UdpReadable`."""

    def __init__(self, stack: UdpHost, local: bytes, port: int) -> None:
        self.stack = stack
        self.local = local
        self.port = port
        self.queue: deque[tuple[bytes, tuple[IPAddress, int]]] = deque()
        self.queued_bytes = 0
        self.dropped = 0
        self.closed = False

    def __repr__(self) -> str:
        return f"<UdpSocket {_address(self.local)}:{self.port}>"

    def sendto(self, data: bytes, target: tuple[IPAddress, int], now: float) -> None:
        """Send one datagram of at most 65,507 (IPv4) or 65,527 (IPv6) bytes to (ip, port) at `now`; one
        bigger than the path MTU leaves in fragments (RFC 791, RFC 8200 4.5). Raises OSError: closed (EBADF),
        address family mismatch (EAFNOSUPPORT), longer than a UDP datagram can be (EMSGSIZE)."""
        if self.closed:
            raise OSError(9, "UDP socket closed")
        dst = target[0].packed
        if len(dst) != len(self.local):
            raise OSError(97, "address family mismatch")
        limit = UDP_MAX_PAYLOAD[4 if len(dst) == 4 else 6]
        if len(data) > limit:
            raise OSError(90, f"datagram of {len(data)} bytes exceeds the UDP maximum of {limit}")
        segment = bytearray(_UDP.pack(self.port, target[1], 8 + len(data), 0) + data)
        checksum = transport_checksum(self.local, dst, PROTO_UDP, segment) or 0xFFFF
        segment[6:8] = checksum.to_bytes(2, "big")
        self.stack.emit_datagram(self.local, dst, PROTO_UDP, bytes(segment))

    def enqueue(self, payload: bytes, source: tuple[IPAddress, int]) -> bool:
        """Queue a received datagram; False (dropped and counted in `dropped`) when the queue is full."""
        if len(self.queue) >= UDP_QUEUE or self.queued_bytes + len(payload) > UDP_QUEUE_BYTES:
            self.dropped += 1
            return False
        self.queued_bytes += len(payload)
        self.queue.append((payload, source))
        return True

    def recvfrom(self) -> tuple[bytes, tuple[IPAddress, int]] | None:
        """The oldest queued (data, (ip, port)), or None."""
        if not self.queue:
            return None
        item = self.queue.popleft()
        self.queued_bytes -= len(item[0])
        return item

    def close(self) -> None:
        """Unbind; later datagrams to the port get ICMP port unreachable."""
        self.closed = True
        self.stack.unbind_udp(self.local, self.port)
