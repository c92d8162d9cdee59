"""What the stack tells its caller: frozen dataclasses deriving from `NetstackEvent`, pulled with `events()`.

Dispatch with `isinstance` (each class below is also importable from the module that raised it before:
`wgmagic.netstack.stack` and `wgmagic.netstack.tcp.connection`). Events that name a connection or socket
compare by identity (`eq=False`): two `TcpReadable` for the same connection are two events.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING

from wgmagic.netstack.wire.icmp import IcmpKind

if TYPE_CHECKING:
    from wgmagic.netstack.tcp.connection import TcpConnection
    from wgmagic.netstack.tcp.listener import TcpListener
    from wgmagic.netstack.udp import UdpSocket

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, eq=False)
class NetstackEvent:
    """Base class of every event `Stack.events()` and `TcpConnection.events()` return."""


@dataclass(frozen=True, eq=False)
class TcpEvent(NetstackEvent):
    """An event of one TCP connection (`conn`)."""

    conn: TcpConnection


@dataclass(frozen=True, eq=False)
class TcpConnected(TcpEvent):
    """The three-way handshake completed: the connection is ESTABLISHED (RFC 9293 3.5)."""


@dataclass(frozen=True, eq=False)
class TcpReadable(TcpEvent):
    """Data (or the peer's FIN: `conn.eof`) arrived; `conn.recv` returns it."""


@dataclass(frozen=True, eq=False)
class TcpWritable(TcpEvent):
    """The send buffer has room again after `send` found it full (or on connect)."""


@dataclass(frozen=True, eq=False)
class TcpClosed(TcpEvent):
    """The connection is over for the user: `error` is None after an orderly close (TIME_WAIT included), else
    ConnectionResetError, ConnectionRefusedError, ConnectionAbortedError, TimeoutError or OSError."""

    error: BaseException | None


@dataclass(frozen=True, eq=False)
class TcpAccepted(NetstackEvent):
    """A listener queued a new connection (its SYN arrived); `listener.accept()` returns it."""

    listener: TcpListener


@dataclass(frozen=True, eq=False)
class UdpReadable(NetstackEvent):
    """A datagram was queued on `sock`; `sock.recvfrom()` returns it."""

    sock: UdpSocket


@dataclass(frozen=True)
class EchoReply(NetstackEvent):
    """An ICMP echo reply (RFC 792, RFC 4443 4.2) from `src` for our (`ident`, `seq`); `now` is when it arrived
    (seconds, the caller's clock)."""

    src: IPAddress
    ident: int
    seq: int
    payload: bytes
    now: float


@dataclass(frozen=True)
class IcmpUnreachable(NetstackEvent):
    """An ICMP destination-unreachable or packet-too-big reported by `src` (RFC 792, RFC 4443 3.1-3.2).

    `kind` is an `IcmpKind` (a str: "unreachable", "port_unreachable", "too_big"); `mtu` is the next-hop MTU
    in bytes that a "too_big" carries (RFC 1191, RFC 8201), else None."""

    src: IPAddress
    kind: IcmpKind
    mtu: int | None


__all__ = ["EchoReply", "IcmpKind", "IcmpUnreachable", "NetstackEvent", "TcpAccepted", "TcpClosed",
           "TcpConnected", "TcpEvent", "TcpReadable", "TcpWritable", "UdpReadable"]
