"""The typed seams of the runtime: what the engine hands to services and relays, and what it asks of them.

`EngineAPI` is the part of `wgmagic.runtime.engine.Engine` a service (forward, SOCKS, expose, capture, UDP
forward, gateway), a relay (relay.py) or a DNS lookup (resolver.py) may use; `StreamHandler` is what consumes
one tunnel TCP connection's events (`SocketRelay`, a `HappyEyeballs` attempt, a DNS lookup's TCP stream).
Everything named here runs on the engine's loop only (see `docs/layers.md`, the engine's contract).
Owns: interfaces only; no behaviour, no I/O.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from wgmagic.netstack.events import TcpEvent
    from wgmagic.netstack.stack import Stack
    from wgmagic.netstack.tcp.connection import TcpConnection
    from wgmagic.netstack.udp import UdpSocket
    from wgmagic.runtime.addresses import Routes

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class StreamHandler(Protocol):
    """Consumes the events of one tunnel TCP connection, registered with `EngineAPI.register_stream`.

    tcp_event(event): a TcpConnected/TcpReadable/TcpWritable/TcpClosed for `conn`, in the pump round that
    produced it; forget_after_close(): after a TcpClosed, whether the engine may drop the registration;
    loop_failed(error): the engine is closing (error: TunnelClosedError); release everything, raise nothing."""

    @property
    def conn(self) -> TcpConnection: ...

    def tcp_event(self, event: TcpEvent) -> None: ...

    def forget_after_close(self) -> bool: ...

    def loop_failed(self, error: BaseException) -> None: ...


class Tap(Protocol):
    """A packet capture's view of what crosses the device (runtime/services/capture.py): inner IP packets in
    (`received` True) or out, and outer datagrams sent; `now` in seconds (the engine's clock)."""

    def inner(self, packets: list[bytes], received: bool, now: float) -> None: ...

    def outer_sent(self, datagrams: list[tuple[bytes, tuple[str, int]]], now: float) -> None: ...


class EngineAPI(Protocol):
    """What services and relays may use of the engine (its loop only; never from another thread).

    loop: the asyncio loop the engine runs on; stack: the IP stack (open TCP/UDP through it); counters: the
    tunnel's counters (`%wg stats`); streams / udp_handlers: who consumes a TCP connection's or stack UDP
    socket's events (register with `register_stream`); closed: True once `close` ran; tap: a capture, or None;
    routes: which addresses the tunnel reaches (`routes.select(addresses)`, `routes.no_route(name, addresses)`).
    After touching a connection call `pump_conn` (it sends in this loop turn) or `send_now` (it sends in the
    call, as a kernel socket's write does)."""

    loop: asyncio.AbstractEventLoop
    counters: Counter[str]
    closed: bool
    tap: Tap | None
    streams: dict[int, StreamHandler]
    udp_handlers: dict[int, Callable[[UdpSocket], None]]

    @property
    def stack(self) -> Stack: ...

    @property
    def routes(self) -> Routes: ...

    def now(self) -> float: ...

    def pump(self, now: float | None = None) -> None: ...

    def pump_soon(self) -> None: ...

    def pump_conn(self, conn: TcpConnection, now: float | None = None) -> None: ...

    def send_now(self, conn: TcpConnection, now: float | None = None) -> None: ...

    def register_stream(self, conn: TcpConnection, handler: StreamHandler) -> None: ...

    def forget_stream(self, conn: TcpConnection) -> None: ...

    def peer_silent_since(self, since: float) -> bool: ...
