"""The tunnel's engine: the WireGuard device, the IP stack and the UDP socket, driven on the loop thread.

Everything here runs on the tunnel's loop thread only; `Tunnel` (tunnel.py) is the thread-safe face. The hot
path: the transport (transport.py) drains the UDP socket into the device until it would block, then calls
`pump` once: the whole batch goes through the device and the stack, and the stack answers once for the batch
(one ACK for many segments).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from wgmagic.config import WireGuardConfig
from wgmagic.errors import (
    DNSTimeoutError,
    HandshakeTimeoutError,
    NameNotFoundError,
    NoRouteError,
    TransportError,
    TunnelClosedError,
)
from wgmagic.netstack.stack import Stack
from wgmagic.runtime.streams import StreamBuffers
from wgmagic.runtime.transport import UdpTransport
from wgmagic.wireguard.device import Device
from wgmagic.wireguard.timers import Timers

OUTER_STALL_HOLD = 0.05  # seconds an inner retransmission waits while the outer TCP repairs a loss


@dataclass
class PeerRuntime:
    """What the runtime knows of a peer beyond the protocol: where it was configured and how it is doing."""

    public_key: bytes
    configured_endpoint: tuple[str, int] | None
    resolved_endpoint: tuple[str, int] | None
    handshake_waiters: list[asyncio.Future[float | None]] = field(default_factory=list)
    last_handshake_rtt: float | None = None
    handshakes: int = 0
    attempts_exhausted: int = 0
    endpoint_refused: bool = False


class Engine:
    def __init__(self, config: WireGuardConfig, endpoints: dict[bytes, tuple[str, int] | None], *,
                 loop: asyncio.AbstractEventLoop, timers: Timers | None = None, via: Any = None) -> None:
        self.config = config
        self.loop = loop
        self.device = Device(config.interface.private_key, timers=timers or Timers(), wall_clock=time.time)
        self.peers: dict[bytes, PeerRuntime] = {}
        for peer in config.peers:
            endpoint = endpoints.get(peer.public_key)
            self.device.add_peer(peer.public_key, preshared_key=peer.preshared_key,
                                 allowed_ips=peer.allowed_ips, endpoint=endpoint,
                                 persistent_keepalive=peer.persistent_keepalive)
            self.peers[peer.public_key] = PeerRuntime(peer.public_key, peer.endpoint, endpoint)
        self.stack = Stack(config.interface.addresses, mtu=config.mtu)
        self.counters: Counter[str] = Counter()
        self.via = via  # websocket.Via, or None for plain UDP
        self.transport_error: str | None = None
        self.transport: Any
        if via is not None and via.mode == "websocket":
            self.transport = self._websocket_transport(via)
        else:
            self.transport = UdpTransport(loop, config.interface.listen_port or 0, self.device.receive_datagram,
                                          self.pump, self._endpoint_refused, self.counters)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_deadline: float | None = None
        self._echo_waiters: dict[tuple[bytes, int, int], asyncio.Future[float]] = {}
        self.event_handlers: list[Callable[[object], bool]] = []
        self.udp_handlers: dict[int, Callable[[Any], None]] = {}  # id(stack UDP socket) -> reader (gateway DNS)
        # id(TcpConnection) -> what consumes its events: a socket's StreamBuffers, or a forward's relay.
        self.streams: dict[int, Any] = {}
        self._udp_waiters: dict[int, tuple[Any, Any, asyncio.Future[bytes]]] = {}
        self._dns_cache: dict[str, tuple[float, tuple[Any, ...]]] = {}
        self.closed = False
        self.started_at = time.monotonic()
        self.last_echo: tuple[float, float] | None = None  # (when, rtt) of the newest answered ICMP echo
        self._echo_sent: dict[tuple[bytes, int, int], float] = {}
        from wgmagic.runtime.metrics import MetricsRecorder

        self.metrics = MetricsRecorder(self)

    # ---- lifecycle -------------------------------------------------------------------------------------
    def open(self) -> None:
        self.transport.open()
        self.metrics.start()
        self.pump()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.metrics.stop()
        if self._timer:
            self._timer.cancel()
        for fut in list(self._echo_waiters.values()):
            if not fut.done():
                fut.set_exception(TunnelClosedError("the tunnel was closed"))
        for peer in self.peers.values():
            for fut in peer.handshake_waiters:
                if not fut.done():
                    fut.set_exception(TunnelClosedError("the tunnel was closed"))
        closed_error = TunnelClosedError("the tunnel was closed")
        for buffers in list(self.streams.values()):
            buffers.loop_failed(closed_error)
        self.streams.clear()
        for handler in list(self.event_handlers):
            with contextlib.suppress(Exception):
                handler(TunnelClosedError("the tunnel was closed"))
        self.transport.close()

    @property
    def local_port(self) -> int:
        return self.transport.local_port

    # ---- the WebSocket transport (issue 13; runtime/websocket.py) ---------------------------------------
    def _websocket_transport(self, via: Any) -> Any:
        from wgmagic.runtime.websocket import WebSocketTransport

        peer = next(iter(self.peers.values()))
        address = peer.resolved_endpoint or ("websocket", 0)
        if peer.resolved_endpoint is None:  # no Endpoint in the config: the WebSocket is the way to the peer
            self.device.peer(peer.public_key).endpoint = address
            peer.resolved_endpoint = address
        return WebSocketTransport(self.loop, via.url, address, self.device.receive_datagram, self.pump,
                                  self.counters, ca_file=via.ca_file, on_error=self._transport_failed,
                                  on_open=self._transport_reopened)

    def switch_to_websocket(self, via: Any) -> None:
        """--via auto: leave UDP for the WebSocket at via.url (loop thread); the handshake starts again."""
        from wgmagic.runtime.websocket import Via

        self.transport.close()
        self.via = Via("websocket", via.url, via.ca_file)
        self.transport = self._websocket_transport(self.via)
        self.transport.open()
        now = time.monotonic()
        for peer in self.peers.values():
            self.device.initiate_handshake(peer.public_key, now)
        self.pump(now)

    def _transport_reopened(self) -> None:
        """The WebSocket came back (a new relay socket, so a new endpoint at the peer): tell the peer now."""
        now = time.monotonic()
        for peer in self.peers.values():
            self.device.send_keepalive(peer.public_key, now)
        self.pump(now)

    def _transport_failed(self, message: str) -> None:
        """The WebSocket could not be opened: fail whoever waits for a first handshake, with the cause."""
        self.transport_error = message
        error = TransportError(message)
        for peer in self.peers.values():
            for fut in peer.handshake_waiters:
                if not fut.done():
                    fut.set_exception(error)
            peer.handshake_waiters.clear()

    def _endpoint_refused(self) -> None:
        for peer in self.peers.values():
            peer.endpoint_refused = True

    # ---- the hot path: transport.receive -> device -> stack -> device -> transport.send ---------------
    def pump(self, now: float | None = None) -> None:
        """Move everything that is ready between the device, the stack and the socket."""
        if self.closed:
            return
        if now is None:
            now = time.monotonic()
        device, stack = self.device, self.stack
        for _ in range(64):
            moved = False
            packets = device.packets_received()
            if packets:
                moved = True
                for packet in packets:
                    stack.receive_packet(packet, now)
            self._dispatch(device.events(), stack.events())
            outgoing = stack.packets_to_send(now)
            if outgoing:
                moved = True
                for packet in outgoing:
                    if not device.send_packet(packet, now):
                        self.counters["no_route"] += 1
            datagrams = device.datagrams_to_send()
            if datagrams:
                moved = True
                self.transport.send(datagrams)
            if not moved:
                break
        self._reschedule()

    def _reschedule(self) -> None:
        deadline = self.device.next_timer()
        stack_deadline = self.stack.next_timer()
        if stack_deadline is not None and (deadline is None or stack_deadline < deadline):
            deadline = stack_deadline
        if deadline == self._timer_deadline and self._timer is not None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_deadline = deadline
        if deadline is not None:
            # asyncio's clock is time.monotonic, the same clock every `now` here comes from.
            self._timer = self.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_deadline = None
        now = time.monotonic()
        outer_stalled = getattr(self.transport, "outer_stalled", None)
        if outer_stalled is not None and outer_stalled():
            # TCP over TCP: the outer connection is repairing a loss; what the inner TCP sent is delayed, not
            # lost. Hold its retransmission timers a little and look again (the transport, not the inner TCP,
            # decides when the outer connection is dead).
            self.counters["inner_rto_deferred"] += 1
            self.stack.defer_retransmissions(now + OUTER_STALL_HOLD)
        self.device.handle_timers(now)
        self.stack.handle_timers(now)
        self.pump(now)

    # ---- events ---------------------------------------------------------------------------------------
    def _dispatch(self, device_events: list[object], stack_events: list[object]) -> None:
        for event in device_events:
            kind = type(event).__name__
            self.counters[f"event_{kind}"] += 1
            peer = self.peers.get(getattr(event, "peer_public_key", b""))
            if peer is None:
                continue
            if kind == "HandshakeCompleted":
                peer.handshakes += 1
                peer.endpoint_refused = False
                rtt = getattr(event, "rtt", None)
                if rtt is not None:
                    peer.last_handshake_rtt = rtt
                for fut in peer.handshake_waiters:
                    if not fut.done():
                        fut.set_result(rtt)
                peer.handshake_waiters.clear()
            elif kind == "HandshakeAttemptsExhausted":
                peer.attempts_exhausted += 1
                error = HandshakeTimeoutError(self.describe_no_handshake(peer))
                for fut in peer.handshake_waiters:
                    if not fut.done():
                        fut.set_exception(error)
                peer.handshake_waiters.clear()
            elif kind == "PeerEndpointChanged":
                peer.resolved_endpoint = event.endpoint  # type: ignore[attr-defined]
        for event in stack_events:
            kind = type(event).__name__
            if kind == "UdpReadable":
                self._udp_readable(event.sock)  # type: ignore[attr-defined]
                continue
            if kind == "EchoReply":
                key = (event.src.packed if hasattr(event.src, "packed") else bytes(event.src),  # type: ignore[attr-defined]
                       event.ident, event.seq)  # type: ignore[attr-defined]
                fut = self._echo_waiters.pop(key, None)
                answered = time.monotonic()
                sent = self._echo_sent.pop(key, None)
                if sent is not None:
                    self.last_echo = (answered, answered - sent)
                if fut is not None and not fut.done():
                    fut.set_result(answered)
                continue
            conn = getattr(event, "conn", None)
            buffers = self.streams.get(id(conn)) if conn is not None else None
            if buffers is not None:
                self._stream_event(kind, event, buffers)
                continue
            for handler in self.event_handlers:
                if handler(event):
                    break

    def _stream_event(self, kind: str, event: Any, handler: Any) -> None:
        handler.tcp_event(kind, event)
        self.stack.wake(handler.conn)
        if kind == "TcpClosed" and handler.forget_after_close():
            self.streams.pop(id(handler.conn), None)

    def describe_no_handshake(self, peer: PeerRuntime) -> str:
        from wgmagic.config import PeerConfig

        key = PeerConfig(peer.public_key).public_key_b64
        where = peer.configured_endpoint
        shown = f"{where[0]}:{where[1]}" if where else "(no Endpoint configured)"
        if getattr(self.transport, "kind", "udp") == "websocket":
            state = self.transport.last_error or f"the WebSocket is {self.transport.state}"
            return (f"no handshake answer from peer {key[:8]}... through the {self.transport.describe()}: "
                    f"{state}. Likely causes: the relay's --to is not this peer's WireGuard port, or this "
                    "client's public key is not configured on the peer.")
        if peer.resolved_endpoint and where and peer.resolved_endpoint[0] != where[0]:
            shown += f" ({peer.resolved_endpoint[0]})"
        if peer.endpoint_refused:
            causes = ("nothing is listening on that UDP port (the host answered 'port unreachable'): check the "
                      "Endpoint's port and that WireGuard runs on the peer")
        else:
            causes = ("the peer's PublicKey in this config is wrong (a peer silently drops handshakes it cannot "
                      "decrypt), or this client's public key is not configured on the peer; the Endpoint host "
                      "or port is wrong; or UDP to that port is blocked on this network (firewall, proxy)")
        return f"no handshake answer from peer {key[:8]}... at {shown}. Likely causes: {causes}."

    # ---- operations called from Tunnel (on the loop thread) -------------------------------------------
    def wait_handshake(self, public_key: bytes | None = None) -> asyncio.Future[float | None]:
        peers = [self.peers[public_key]] if public_key else list(self.peers.values())
        fut: asyncio.Future[float | None] = self.loop.create_future()
        now = time.monotonic()
        for peer in peers:
            if self.device.peer(peer.public_key).has_session(now):
                fut.set_result(peer.last_handshake_rtt)
                return fut
        for peer in peers:
            peer.handshake_waiters.append(fut)
            self.device.initiate_handshake(peer.public_key, now)
        self.pump(now)
        return fut

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        """Schedule fn on the loop thread from any thread (dropped once the loop is gone)."""
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(fn, *args)

    def pump_conn(self, conn: Any, now: float | None = None) -> None:
        """After the user side touched a connection (sent, read, closed): send what it now has to say."""
        self.stack.wake(conn)
        self.pump(now)

    def register_stream(self, conn: Any, handler: Any) -> None:
        self.streams[id(conn)] = handler

    def open_stream(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int, timeout: float,
                    label: str) -> StreamBuffers:
        now = time.monotonic()
        conn = self.stack.tcp_connect(address, port, now, timeout=timeout)
        buffers = StreamBuffers(conn, self.post, label)
        buffers.on_update = lambda: self.pump_conn(conn)
        self.streams[id(conn)] = buffers
        self.pump(now)
        return buffers

    def check_route(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
        """Raise NoRouteError unless some peer's AllowedIPs cover the address (cryptokey routing)."""
        for peer in self.config.peers:
            if any(address in net for net in peer.allowed_ips):
                return
        raise NoRouteError(f"{address} is not inside any peer's AllowedIPs; add it to AllowedIPs in the config")

    def tcp_stats(self) -> dict[str, int]:
        """Totals over live connections, plus what the runtime's socket buffers hold for them."""
        conns = list(self.stack.tcp.values())
        buffered = sum(c.stats()["buffered"] for c in conns)
        buffered += sum(len(h.rbuf) + len(h.wbuf) for h in self.streams.values() if hasattr(h, "rbuf"))
        return {"connections": len(conns), "buffered_bytes": buffered,
                "retransmits": sum(c.retransmits for c in conns) + self.stack.counters["tcp_retransmits_closed"]}

    def handshake_age(self) -> float | None:
        """Seconds since the most recent handshake with any peer."""
        now = time.monotonic()
        times = [self.device.peer(key).last_handshake_time for key in self.peers]
        known = [t for t in times if t is not None]
        return now - max(known) if known else None

    def last_handshake_rtt(self) -> float | None:
        return next((p.last_handshake_rtt for p in self.peers.values() if p.last_handshake_rtt is not None), None)

    def peer_silent_since(self, since: float) -> bool:
        """True when no peer has sent anything since `since` although a live one would have by now.

        A WireGuard peer that receives our packets and has nothing to send back still answers with a
        keepalive within KEEPALIVE_TIMEOUT, and a handshake initiation is answered within a round trip; so
        silence for longer than that while we were sending means the peer is down or unreachable.
        """
        now = time.monotonic()
        waited = now - since
        for stats in self.device.stats().get("peers", {}).values():
            last_receive, last_send = stats.get("last_receive"), stats.get("last_send")
            if last_receive is not None and last_receive >= since:
                return False
            if last_send is None or last_send < since:
                continue
            patience = self.device.timers.keepalive_timeout + 1.0
            if waited >= patience or last_send - (last_receive or since) >= patience:
                return True
        return False

    def peer_recently_answered(self, window: float) -> bool:
        """Whether any peer completed a handshake or sent data within `window` seconds."""
        now = time.monotonic()
        for stats in self.device.stats().get("peers", {}).values():
            last = stats.get("last_receive")
            if last is not None and now - last <= window:
                return True
        return False

    async def resolve_async(self, name: str, timeout: float = 2.0, attempts: int = 2) -> list[Any]:
        """Resolve through the tunnel's DNS servers: A then AAAA, search domains, TCP when truncated."""
        from wgmagic.netstack import dns as stub

        interface = self.config.interface
        if not interface.dns_servers:
            raise NameNotFoundError(f"cannot resolve {name!r}: the config has no DNS = server for the tunnel")
        cached = self._dns_cache.get(name)
        if cached and cached[0] > time.monotonic():
            return list(cached[1])
        failures: list[str] = []
        for candidate in stub.candidates(name, interface.dns_search):
            found: list[Any] = []
            nxdomain = False
            for rdtype in ("A", "AAAA"):
                answer = await self._dns_query(candidate, rdtype, timeout, attempts)
                if answer is None:
                    failures.append("timeout")
                    continue
                if answer.rcode == "NXDOMAIN":
                    nxdomain = True
                    break
                if answer.rcode != "NOERROR":
                    failures.append(answer.rcode)
                found.extend(answer.addresses)
            if found:
                self._dns_cache[name] = (time.monotonic() + 30.0, tuple(found))
                if len(self._dns_cache) > 256:
                    self._dns_cache.pop(next(iter(self._dns_cache)))
                return found
            if nxdomain:
                continue
        servers = ", ".join(str(s) for s in interface.dns_servers)
        if failures and all(f == "timeout" for f in failures):
            raise DNSTimeoutError(f"the tunnel's DNS server ({servers}) did not answer for {name!r}; "
                                  "check that DNS = is inside the peer's AllowedIPs and the server runs")
        raise NameNotFoundError(f"{name!r} not found by the tunnel's DNS ({servers})")

    async def _dns_query(self, name: str, rdtype: str, timeout: float, attempts: int) -> Any:
        from wgmagic.netstack import dns as stub

        for attempt in range(attempts):
            for server in self.config.interface.dns_servers:
                query_id = int.from_bytes(os.urandom(2), "big")
                try:
                    sock = self.stack.udp_open(family=server.version)
                except OSError:
                    continue
                waiter: asyncio.Future[bytes] = self.loop.create_future()
                self._udp_waiters[id(sock)] = (sock, server, waiter)
                try:
                    sock.sendto(stub.build_query(name, rdtype, query_id), (server, 53), time.monotonic())
                    self.pump()
                    try:
                        data = await asyncio.wait_for(waiter, timeout * (attempt + 1))
                    except asyncio.TimeoutError:
                        continue
                finally:
                    self._udp_waiters.pop(id(sock), None)
                    sock.close()
                answer = stub.parse_answer(data)
                if answer is None or answer.query_id != query_id or answer.question != name.lower():
                    self.counters["dns_mismatched"] += 1
                    continue
                if answer.truncated:
                    answer = await self._dns_query_tcp(server, name, rdtype, timeout) or answer
                return answer
        return None

    async def _dns_query_tcp(self, server: Any, name: str, rdtype: str, timeout: float) -> Any:
        from wgmagic.netstack import dns as stub

        buffers = self.open_stream(server, 53, timeout, f"DNS {server}:53")
        try:
            deadline = time.monotonic() + timeout
            while not buffers.connected.is_set():
                if time.monotonic() > deadline:
                    return None
                await asyncio.sleep(0.01)
            if buffers.error is not None:
                return None
            query_id = int.from_bytes(os.urandom(2), "big")
            buffers.wbuf += stub.frame_tcp(stub.build_query(name, rdtype, query_id))
            buffers.loop_push()
            self.pump_conn(buffers.conn)
            while time.monotonic() < deadline:
                message = stub.unframe_tcp(bytes(buffers.rbuf))
                if message is not None:
                    return stub.parse_answer(message)
                if buffers.eof:
                    return None
                await asyncio.sleep(0.01)
            return None
        finally:
            buffers.request_close()

    def _udp_readable(self, sock: Any) -> None:
        handler = self.udp_handlers.get(id(sock))
        if handler is not None:
            handler(sock)
            return
        entry = self._udp_waiters.get(id(sock))
        while True:
            item = sock.recvfrom()
            if item is None:
                return
            data, (source, port) = item
            if entry is None or source != entry[1] or port != 53 or entry[2].done():
                self.counters["dns_unexpected_source"] += 1
                continue
            entry[2].set_result(data)

    def send_echo(self, dst: ipaddress.IPv4Address | ipaddress.IPv6Address, ident: int, seq: int,
                  payload: bytes) -> asyncio.Future[float]:
        fut: asyncio.Future[float] = self.loop.create_future()
        key = (dst.packed, ident, seq)
        self._echo_waiters[key] = fut
        fut.add_done_callback(lambda _f: (self._echo_waiters.pop(key, None), self._echo_sent.pop(key, None)))
        now = time.monotonic()
        self._echo_sent[key] = now
        self.stack.send_echo(dst, ident, seq, payload, now)
        self.pump(now)
        return fut
