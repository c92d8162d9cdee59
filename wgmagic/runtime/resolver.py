"""Drives a sans-I/O `wgmagic.netstack.dns.Resolver` on the loop thread: no polling.

The resolver says what to send; a `DnsLookup` does it with the stack (a UDP socket per address family, a TCP
connection when an answer comes back truncated), feeds back what arrives as the stack's events deliver it,
and arms one loop timer at the resolver's `next_timer()`. The outcome lands in `future`. `resolve(engine,
name)` is the whole of it, with the engine's DNS cache (dnscache.py) in front.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from wgmagic.netstack.dns import CloseTcp, OpenTcp, Resolver, SendTcp, SendUdp
from wgmagic.netstack.events import TcpClosed, TcpConnected, TcpEvent, TcpReadable
from wgmagic.netstack.tcp.connection import TcpConnection
from wgmagic.netstack.tcp.state import TcpState
from wgmagic.netstack.udp import UdpSocket

if TYPE_CHECKING:
    from wgmagic.runtime.engine import Engine


async def resolve(engine: Engine, name: str, *, timeout: float = 2.0, attempts: int = 2,
                  lifetime: float | None = None) -> list[Any]:
    """Resolve `name` through the tunnel's DNS servers (a `wgmagic.netstack.dns.Resolver`: search domains, A
    then AAAA, the servers in turn, TCP when truncated), on the engine's loop. timeout: seconds a query waits
    before the next server; lifetime: seconds for the whole resolution (None: bounded by the retries alone).
    Answers are kept in `engine.dns_cache`. Raises NameNotFoundError, DNSTimeoutError, TunnelClosedError."""
    cached = engine.dns_cache.get(name, engine.now())
    if cached is not None:
        return cached
    interface = engine.config.interface
    resolver = Resolver(name, interface.dns_servers, engine.now(), search=interface.dns_search,
                        timeout=timeout, attempts=attempts, lifetime=lifetime)
    lookup = DnsLookup(engine, resolver)
    if not lookup.cleaned:
        engine.lookups.add(lookup)
    try:
        found = await lookup.future
    finally:
        lookup.cancel()
    engine.dns_cache.put(name, found, engine.now())
    return list(found)


class _DnsStream:
    """Stands in engine.streams for the resolver's TCP connection (RFC 7766)."""

    def __init__(self, lookup: DnsLookup, stream: int, conn: TcpConnection) -> None:
        self.lookup = lookup
        self.stream = stream
        self.conn = conn

    def tcp_event(self, event: TcpEvent) -> None:
        lookup, now = self.lookup, self.lookup.engine.now()
        if isinstance(event, TcpConnected):
            lookup.resolver.tcp_connected(self.stream, now)
        elif isinstance(event, TcpReadable):
            data = self.conn.recv(65537)
            if data:
                lookup.resolver.receive_tcp(self.stream, data, now)
            if self.conn.eof:
                lookup.resolver.tcp_closed(self.stream, None, now)
        elif isinstance(event, TcpClosed):
            lookup.resolver.tcp_closed(self.stream, event.error, now)
        lookup.step()

    def forget_after_close(self) -> bool:
        return True

    def loop_failed(self, error: BaseException) -> None:
        self.lookup.fail(error)


class DnsLookup:
    """One resolution on the engine's loop; `future` gets the addresses or the resolver's error."""

    def __init__(self, engine: Engine, resolver: Resolver) -> None:
        self.engine = engine
        self.resolver = resolver
        self.future: asyncio.Future[tuple[Any, ...]] = engine.loop.create_future()
        self.sockets: dict[int, UdpSocket] = {}  # address family (4 or 6) -> stack UDP socket
        self.streams: dict[int, _DnsStream] = {}
        self.timer: asyncio.TimerHandle | None = None
        self.cleaned = False
        self.step()

    def step(self) -> None:
        """Carry out what the resolver asks, then settle the future or arm the timer."""
        engine, resolver = self.engine, self.resolver
        now = self.engine.now()
        for action in resolver.actions():
            if isinstance(action, SendUdp):
                sock = self._socket(action.server.version)
                if sock is None:
                    resolver.send_failed(now)
                    continue
                sock.sendto(action.data, (action.server, 53), now)
            elif isinstance(action, OpenTcp):
                try:
                    conn = engine.stack.tcp_connect(action.server, 53, now, timeout=resolver.timeout)
                except OSError as exc:
                    resolver.tcp_closed(action.stream, exc, now)
                    continue
                handler = _DnsStream(self, action.stream, conn)
                self.streams[action.stream] = handler
                engine.register_stream(conn, handler)
            elif isinstance(action, SendTcp):
                handler = self.streams[action.stream]
                handler.conn.send(action.data)
                engine.stack.wake(handler.conn)
            elif isinstance(action, CloseTcp):
                self._close_stream(action.stream, now)
        if resolver.pending():  # what feeding back send_failed / tcp_closed asked for
            self.step()
            return
        if resolver.done:
            self._settle()
        else:
            self._arm()
        engine.pump_soon()

    def _socket(self, family: int) -> UdpSocket | None:
        sock = self.sockets.get(family)
        if sock is None:
            try:
                sock = self.engine.stack.udp_open(family=family)
            except OSError:
                return None
            self.sockets[family] = sock
            self.engine.udp_handlers[id(sock)] = self._on_udp
        return sock

    def _on_udp(self, sock: UdpSocket) -> None:
        now = self.engine.now()
        while (item := sock.recvfrom()) is not None:
            data, source = item
            self.resolver.receive_udp(data, source, now)
        self.step()

    def _close_stream(self, stream: int, now: float) -> None:
        handler = self.streams.pop(stream, None)
        if handler is None:
            return
        self.engine.forget_stream(handler.conn)
        if handler.conn.state not in (TcpState.CLOSED, TcpState.TIME_WAIT):
            handler.conn.close(now)
            self.engine.stack.wake(handler.conn)

    def _arm(self) -> None:
        deadline = self.resolver.next_timer()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if deadline is not None:
            self.timer = self.engine.loop.call_later(max(0.0, deadline - self.engine.now()), self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        self.resolver.handle_timer(self.engine.now())
        self.step()

    def _cleanup(self) -> None:
        if self.cleaned:
            return
        self.cleaned = True
        self.engine.lookups.discard(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        now = self.engine.now()
        for stream in list(self.streams):
            self._close_stream(stream, now)
        for sock in self.sockets.values():
            self.engine.udp_handlers.pop(id(sock), None)
            sock.close()
        self.sockets.clear()
        counters = self.engine.counters
        for reason, count in self.resolver.drops.items():
            counters[f"dns_{reason}"] += count
        counters["dns_tcp_fallbacks"] += self.resolver.tcp_fallbacks

    def _settle(self) -> None:
        self._cleanup()
        if self.future.done():
            return
        if self.resolver.error is not None:
            self.future.set_exception(self.resolver.error)
        else:
            self.future.set_result(self.resolver.addresses)

    def fail(self, error: BaseException) -> None:
        """The tunnel is closing: stop and raise `error` to the waiter."""
        self._cleanup()
        if not self.future.done():
            self.future.set_exception(error)

    def cancel(self) -> None:
        """The waiter went away: release the sockets and the timer."""
        if not self.cleaned:
            self._cleanup()
            with contextlib.suppress(Exception):
                self.engine.pump_soon()
