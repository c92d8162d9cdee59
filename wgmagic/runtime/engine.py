"""The tunnel's engine: the WireGuard device, the IP stack and the UDP socket, driven on the loop thread.

Everything here runs on the tunnel's loop thread only; `Tunnel` (tunnel.py) is the thread-safe face. The hot
path: the transport (transport.py) drains the UDP socket into the device until it would block, then calls
`pump` once: the whole batch goes through the device and the stack, and the stack answers once for the batch
(one ACK for many segments).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from wgmagic import explain
from wgmagic.addresses import format_address
from wgmagic.config import WireGuardConfig
from wgmagic.errors import (
    HandshakeTimeoutError,
    NoRouteError,
    PeerNotRespondingError,
    TransportError,
    TunnelClosedError,
)
from wgmagic.explain import Explanation
from wgmagic.netstack.events import EchoReply, NetstackEvent, TcpClosed, TcpEvent, UdpReadable
from wgmagic.netstack.stack import Stack
from wgmagic.netstack.tcp.config import TUNNEL_CONFIG, TcpConfig
from wgmagic.runtime.transport import Transport, UdpTransport
from wgmagic.wireguard.allowedips import AllowedIPs
from wgmagic.wireguard.device import Device
from wgmagic.wireguard.events import (
    HandshakeAttemptsExhausted,
    HandshakeCompleted,
    PeerEndpointChanged,
    WireGuardEvent,
)
from wgmagic.wireguard.timers import Timers

OUTER_STALL_HOLD = 0.05  # seconds an inner retransmission waits while the outer TCP repairs a loss


@dataclass
class PeerRuntime:
    """What the runtime knows of a peer beyond the protocol: where it was configured and how it is doing."""

    public_key: bytes
    configured_endpoint: tuple[str, int] | None
    resolved_endpoint: tuple[str, int] | None
    # The Endpoint name's addresses in the system resolver's order; the device uses one at a time.
    endpoint_candidates: list[tuple[str, int]] = field(default_factory=list)
    endpoint_index: int = 0
    endpoint_quick_moves: int = 0  # moves on "port unreachable" since the last timed one (bounded: no storm)
    handshake_waiters: list[asyncio.Future[float | None]] = field(default_factory=list)
    last_handshake_rtt: float | None = None
    handshakes: int = 0
    attempts_exhausted: int = 0
    endpoint_refused: bool = False
    # Liveness (whitepaper 6): when WireGuard's "data sent, nothing back for KEEPALIVE_TIMEOUT + REKEY_TIMEOUT"
    # timer fired (seconds, monotonic), when the handshake retries gave up (REKEY_ATTEMPT_TIME), and whether the
    # engine has declared the peer not answering (its TCP connections were failed then).
    unanswered_at: float | None = None
    gave_up_at: float | None = None
    declared_dead: bool = False


class Engine:
    def __init__(self, config: WireGuardConfig, endpoints: dict[bytes, Any], *,
                 loop: asyncio.AbstractEventLoop, timers: Timers | None = None, via: Any = None,
                 tcp_config: TcpConfig | None = None) -> None:
        """tcp_config: the TCP knobs of every connection through the tunnel (default TUNNEL_CONFIG: a 30 s user
        timeout and 15/5/3 keep-alives, see wgmagic.netstack.tcp.config.tunnel_config)."""
        self.config = config
        self.loop = loop
        self.device = Device(config.interface.private_key, timers=timers or Timers(), wall_clock=time.time)
        self.peers: dict[bytes, PeerRuntime] = {}
        for peer in config.peers:
            # endpoints: per peer, one (host, port) or a list of them (the Endpoint name's addresses in order).
            given = endpoints.get(peer.public_key)
            candidates = list(given) if isinstance(given, list) else ([given] if given else [])
            endpoint = candidates[0] if candidates else None
            self.device.add_peer(peer.public_key, preshared_key=peer.preshared_key,
                                 allowed_ips=peer.allowed_ips, endpoint=endpoint,
                                 persistent_keepalive=peer.persistent_keepalive)
            self.peers[peer.public_key] = PeerRuntime(peer.public_key, peer.endpoint, endpoint, candidates)
        self.stack = Stack(config.interface.addresses, mtu=config.mtu, tcp_options=tcp_config or TUNNEL_CONFIG)
        self.counters: Counter[str] = Counter()
        self.via = via  # websocket.Via, or None for plain UDP
        self.transport_error: str | None = None
        self.transport: Transport
        if via is not None and via.mode == "websocket":
            self.transport = self._websocket_transport(via)
        else:
            self.transport = UdpTransport(loop, config.interface.listen_port or 0, self.device.receive_datagram,
                                          self.pump, self._endpoint_refused, self.counters)
        self._timer: asyncio.TimerHandle | None = None
        self._pump_handle: asyncio.Handle | None = None  # the pump pump_soon scheduled
        self._pumping = False
        self._pump_again = False
        self._timer_deadline: float | None = None
        self._echo_waiters: dict[tuple[bytes, int, int], asyncio.Future[float]] = {}
        self.event_handlers: list[Callable[[object], bool]] = []
        self.udp_handlers: dict[int, Callable[[Any], None]] = {}  # id(stack UDP socket) -> reader (gateway DNS)
        # id(TcpConnection) -> what consumes its events (tcp_event(event), forget_after_close(), loop_failed(error),
        # conn): a forward's relay, a connection attempt, a DNS lookup's TCP stream.
        self.streams: dict[int, Any] = {}
        self.lookups: set[Any] = set()  # DNS lookups under way (wgmagic.runtime.resolver.DnsLookup)
        self._dns_cache: dict[str, tuple[float, tuple[Any, ...]]] = {}
        self.closed = False
        self.started_at = time.monotonic()
        self.last_echo: tuple[float, float] | None = None  # (when, rtt) of the newest answered ICMP echo
        self._echo_sent: dict[tuple[bytes, int, int], float] = {}
        from wgmagic.runtime.metrics import MetricsRecorder

        self.metrics = MetricsRecorder(self)
        # A packet capture's tap (runtime/services/capture.py), or None: pump hands it what crosses the device.
        self.tap: Any = None

    # ---- lifecycle -------------------------------------------------------------------------------------
    def open(self) -> None:
        self.transport.open()
        self.metrics.start()
        self.pump()

    def close(self) -> None:
        if self.closed:
            return
        if self._pump_handle is not None:  # what was queued (a forward's resets) leaves before the socket closes
            self._pump_handle.cancel()
            self._pump_handle = None
            self.pump()
        self.closed = True
        self.metrics.stop()
        if self._timer:
            self._timer.cancel()
        if self._pump_handle is not None:
            self._pump_handle.cancel()
            self._pump_handle = None
        for fut in list(self._echo_waiters.values()):
            if not fut.done():
                fut.set_exception(TunnelClosedError("the tunnel was closed"))
                fut.exception()  # marks it retrieved: a ping no longer waiting must not leave a warning behind
        for peer in self.peers.values():
            for fut in peer.handshake_waiters:
                if not fut.done():
                    fut.set_exception(TunnelClosedError("the tunnel was closed"))
                    fut.exception()  # retrieved: a waiter that gave up must not leave a warning behind
            peer.handshake_waiters.clear()
        closed_error = TunnelClosedError("the tunnel was closed")
        for lookup in list(self.lookups):
            lookup.fail(closed_error)
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
    def _websocket_transport(self, via: Any) -> Transport:
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
        from wgmagic.via import Via

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
        """ICMP port unreachable for something we sent: nothing listens at the endpoint."""
        for peer in self.peers.values():
            peer.endpoint_refused = True
        self._next_endpoint_if_unanswered(time.monotonic(), refused=True)

    # ---- the hot path: transport.receive -> device -> stack -> device -> transport.send ---------------
    def pump(self, now: float | None = None) -> None:
        """Move everything that is ready between the device, the stack and the socket.

        Events are delivered in the round that produced them, and what their handlers queue leaves in the
        same pump. Never re-entered: a call from inside (a handler sending) makes the running pump go round
        once more instead. Callers outside the hot path use `pump_soon`."""
        if self.closed:
            return
        if self._pumping:
            self._pump_again = True
            return
        if now is None:
            now = time.monotonic()
        device, stack = self.device, self.stack
        self._pumping = True
        try:
            for _ in range(64):
                self._pump_again = False
                moved = False
                packets = device.packets_received()
                if packets:
                    moved = True
                    if self.tap is not None:
                        self.tap.inner(packets, True, now)
                    for packet in packets:
                        stack.receive_packet(packet, now)
                self._dispatch(device.events(), stack.events())
                outgoing = stack.packets_to_send(now)
                if outgoing:
                    moved = True
                    if self.tap is not None:
                        self.tap.inner(outgoing, False, now)
                    for packet in outgoing:
                        if not device.send_packet(packet, now):
                            self.counters["no_route"] += 1
                datagrams = device.datagrams_to_send()
                if datagrams:
                    moved = True
                    if self.tap is not None:
                        self.tap.outer_sent(datagrams, now)
                    self.transport.send(datagrams)
                if not moved and not self._pump_again:
                    break
            else:
                self._pump_again = True  # 64 rounds still moving: let the loop serve others, then go on
        finally:
            self._pumping = False
        if self._pump_again:
            self._pump_again = False
            self.pump_soon()
        self._reschedule()

    def pump_soon(self) -> None:
        """Schedule one pump for this loop turn (as aioquic's `_transmit_soon`): however many connections
        were touched, they send together. Inside a running pump, that pump goes round once more."""
        if self._pumping:
            self._pump_again = True
        elif self._pump_handle is None and not self.closed:
            self._pump_handle = self.loop.call_soon(self._scheduled_pump)

    def _scheduled_pump(self) -> None:
        self._pump_handle = None
        self.pump()

    def _reschedule(self) -> None:
        deadline = self.device.next_timer()
        stack_deadline = self.stack.next_timer()
        if stack_deadline is not None and (deadline is None or stack_deadline < deadline):
            deadline = stack_deadline
        armed = self._timer_deadline if self._timer is not None else None
        if deadline is None or (armed is not None and armed <= deadline):
            # The armed timer fires at or before what is due now (or nothing is due): keep it. Firing early
            # finds nothing due and arms the then-earliest deadline, so the deadlines that move on every
            # segment (the RTO on a send, the delayed ACK on a receive) cost no cancel and re-arm each.
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
        self._next_endpoint_if_unanswered(now)
        self.check_peer_liveness(now)
        if self.transport.outer_stalled():
            # TCP over TCP: the outer connection is repairing a loss; what the inner TCP sent is delayed, not
            # lost. Hold its retransmission timers a little and look again (the transport, not the inner TCP,
            # decides when the outer connection is dead).
            self.counters["inner_rto_deferred"] += 1
            self.stack.defer_retransmissions(now + OUTER_STALL_HOLD)
        self.device.handle_timers(now)
        self.stack.handle_timers(now)
        self.pump(now)

    def _next_endpoint_if_unanswered(self, now: float, refused: bool = False) -> None:
        """Move a peer whose Endpoint name has several addresses to the next one when a handshake to the
        current one went unanswered (its retransmission is due: REKEY_TIMEOUT passed) or was refused (ICMP
        port unreachable), and resend the initiation there; the system resolver's order decides which first.
        A peer with a session, or one that roamed (an authenticated packet moved its endpoint), stays put."""
        for runtime in self.peers.values():
            if len(runtime.endpoint_candidates) < 2:
                continue
            peer = self.device.peer(runtime.public_key)
            if peer.has_session(now) or peer.retransmit_at is None:
                continue
            if not refused and now < peer.retransmit_at:
                continue
            quick = refused and runtime.endpoint_quick_moves < len(runtime.endpoint_candidates) - 1
            if refused and not quick:
                continue  # every address refused in a row: wait for the timed retransmission
            if peer.endpoint != runtime.endpoint_candidates[runtime.endpoint_index]:
                continue  # roamed
            runtime.endpoint_index = (runtime.endpoint_index + 1) % len(runtime.endpoint_candidates)
            peer.endpoint = runtime.endpoint_candidates[runtime.endpoint_index]
            runtime.resolved_endpoint = peer.endpoint
            runtime.endpoint_refused = False
            self.counters["endpoint_next_address"] += 1
            if quick:
                runtime.endpoint_quick_moves += 1
                peer.retransmit_at = now  # resend to the next address now, not after REKEY_TIMEOUT
            else:
                runtime.endpoint_quick_moves = 0
        if refused:
            self.device.handle_timers(now)

    # ---- events ---------------------------------------------------------------------------------------
    def _dispatch(self, device_events: list[WireGuardEvent], stack_events: list[NetstackEvent]) -> None:
        """Hand each event to whoever waits for it, in the round that produced it; counted per class as
        `event_<ClassName>` (device events)."""
        counters = self.counters
        for event in device_events:
            counters[f"event_{type(event).__name__}"] += 1
            peer = self.peers.get(event.peer_public_key)
            if peer is None:
                continue
            if isinstance(event, HandshakeCompleted):
                peer.handshakes += 1
                peer.endpoint_refused = False
                if event.rtt is not None:
                    peer.last_handshake_rtt = event.rtt
                for fut in peer.handshake_waiters:
                    if not fut.done():
                        fut.set_result(event.rtt)
                peer.handshake_waiters.clear()
            elif isinstance(event, HandshakeAttemptsExhausted):
                peer.attempts_exhausted += 1
                peer.gave_up_at = time.monotonic()
                explanation = self.describe_no_handshake(peer)
                error = HandshakeTimeoutError(str(explanation), explanation=explanation)
                for fut in peer.handshake_waiters:
                    if not fut.done():
                        fut.set_exception(error)
                peer.handshake_waiters.clear()
            elif isinstance(event, PeerEndpointChanged):
                peer.resolved_endpoint = event.endpoint
        streams = self.streams
        for event in stack_events:
            if isinstance(event, TcpEvent):
                handler = streams.get(id(event.conn))
                if handler is not None:
                    self._stream_event(event, handler)
                    continue
            elif isinstance(event, UdpReadable):
                self._udp_readable(event.sock)
                continue
            elif isinstance(event, EchoReply):
                self._echo_reply(event)
                continue
            for other in self.event_handlers:
                if other(event):
                    break

    def _echo_reply(self, event: EchoReply) -> None:
        key = (event.src.packed, event.ident, event.seq)
        fut = self._echo_waiters.pop(key, None)
        answered = time.monotonic()
        sent = self._echo_sent.pop(key, None)
        if sent is not None:
            self.last_echo = (answered, answered - sent)
        if fut is not None and not fut.done():
            fut.set_result(answered)

    def _stream_event(self, event: TcpEvent, handler: Any) -> None:
        handler.tcp_event(event)
        self.stack.wake(handler.conn)
        if isinstance(event, TcpClosed) and handler.forget_after_close():
            self.streams.pop(id(handler.conn), None)

    def describe_no_handshake(self, peer: PeerRuntime) -> Explanation:
        """Why `peer` has not answered the handshake, from what the runtime knows (wgmagic.explain words it)."""
        from wgmagic.config import PeerConfig

        key = PeerConfig(peer.public_key).public_key_b64
        where = peer.configured_endpoint
        transport = self.transport
        if transport.kind != "udp":
            return explain.no_handshake(key, None, transport=transport.describe(),
                                        transport_state=transport.last_error)
        resolved = peer.resolved_endpoint
        return explain.no_handshake(
            key, f"{where[0]}:{where[1]}" if where else None, refused=peer.endpoint_refused,
            tried=[host for host, _ in peer.endpoint_candidates],
            address=resolved[0] if resolved and where and resolved[0] != where[0] else None)

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
        try:
            for peer in peers:
                self.device.initiate_handshake(peer.public_key, now)
        except BaseException:
            # Nobody will await `fut` now: leave no waiter behind for close() to fail unretrieved ("Future
            # exception was never retrieved").
            for peer in peers:
                with contextlib.suppress(ValueError):
                    peer.handshake_waiters.remove(fut)
            fut.cancel()
            raise
        self.pump(now)
        return fut

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        """Schedule fn on the loop thread from any thread (dropped once the loop is gone)."""
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(fn, *args)

    def pump_conn(self, conn: Any, now: float | None = None) -> None:
        """After the user side touched a connection (sent, read, closed): it sends what it now has to say in
        this loop turn's pump (`pump_soon`). `now` is accepted for compatibility and unused."""
        self.stack.wake(conn)
        self.pump_soon()

    def send_now(self, conn: Any, now: float | None = None) -> None:
        """The user side of `conn` just wrote (a relay's local socket was readable): its segments leave in
        this call, as a write() on a kernel socket transmits at once, not one loop turn later. Inside a pump
        this is `pump_conn` (the running pump goes round once more)."""
        self.stack.wake(conn)
        if self._pumping or self.closed:
            self.pump_soon()
            return
        if self._pump_handle is not None:  # the pump scheduled for this turn happens now instead
            self._pump_handle.cancel()
            self._pump_handle = None
        self.pump(now)

    def register_stream(self, conn: Any, handler: Any) -> None:
        self.streams[id(conn)] = handler

    def check_route(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
        """Raise NoRouteError unless some peer's AllowedIPs cover the address (cryptokey routing) and the
        [Interface] has an Address of its family to send from."""
        if not self.select_addresses([address]):
            raise self.no_route(str(address), [address])

    @property
    def allowed_ips(self) -> AllowedIPs[Any]:
        """The device's cryptokey routing table (whitepaper 2.1): the one place AllowedIPs are checked."""
        return self.device.allowed_ips

    def select_addresses(self, addresses: list[Any]) -> list[Any]:
        """The addresses this tunnel can reach, in connection order (RFC 6724 section 6, RFC 8305 section 4);
        see wgmagic.runtime.addresses.select_destinations. Safe from any thread: it reads the device's
        AllowedIPs table, which is fixed once the tunnel is up."""
        from wgmagic.runtime.addresses import select_destinations

        return select_destinations(addresses, sources=self.config.interface.addresses,
                                   allowed_ips=self.allowed_ips)

    def no_route(self, name: str, addresses: list[Any]) -> NoRouteError:
        from wgmagic.runtime.addresses import describe_no_route

        return NoRouteError(describe_no_route(name, addresses, sources=self.config.interface.addresses,
                                              allowed_ips=self.allowed_ips))

    def tcp_stats(self) -> dict[str, int]:
        """Totals over live connections, plus what the runtime's socket buffers hold for them."""
        conns = list(self.stack.tcp.values())
        buffered = sum(c.stats()["buffered"] for c in conns)
        buffered += sum(len(getattr(h, "pending", b"")) for h in self.streams.values())  # relays' tunnel->local
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

    # ---- per-peer liveness (whitepaper 6) ---------------------------------------------------------------
    def peer_not_answering_since(self, public_key: bytes, now: float) -> float | None:
        """When the peer stopped answering (seconds, monotonic), or None while it answers.

        A live WireGuard peer answers data within KEEPALIVE_TIMEOUT (a passive keepalive at worst) and a
        handshake initiation within a round trip. So a peer is not answering when WireGuard's own timers said
        so and nothing came from it since: data went out and nothing came back for KEEPALIVE_TIMEOUT +
        REKEY_TIMEOUT (the device then starts a new handshake, whitepaper 6.2), and that handshake also went
        unanswered for REKEY_TIMEOUT (15 + 5 = 20 s with the whitepaper's constants); or the handshake retries
        gave up after REKEY_ATTEMPT_TIME. Idle tunnels are never "not answering": only unanswered traffic
        counts."""
        runtime = self.peers[public_key]
        last_receive = self.device.peer(public_key).last_receive
        timers = self.device.timers
        for since, patience in ((runtime.unanswered_at, timers.rekey_timeout), (runtime.gave_up_at, 0.0)):
            if since is not None and (last_receive is None or last_receive < since) and now >= since + patience:
                return since - (timers.keepalive_timeout + timers.rekey_timeout if patience else 0.0)
        return None

    def _fail_connections_after(self) -> float:
        """Seconds of silence after which check_peer_liveness fails the peer's TCP connections: one
        REKEY_TIMEOUT (the granularity of the handshake retries that wake the engine) before the TCP user
        timeout would fail them anyway, so they get the clear reason first and yet survive every outage TCP
        itself survives (a roaming endpoint, a relay that moved). No user timeout: when the handshake retries
        give up (REKEY_ATTEMPT_TIME)."""
        timers = self.device.timers
        user_timeout = getattr(self.stack.tcp_options, "user_timeout", None)
        return max(0.0, (user_timeout or timers.rekey_attempt_time) - timers.rekey_timeout)

    def check_peer_liveness(self, now: float) -> None:
        """Loop thread, on every timer: note WireGuard's "no answer to data" timer before the device fires it,
        forget what the peer answered since, and once a peer has been not answering for
        `_fail_connections_after()` seconds, fail every TCP connection routed to it (its AllowedIPs) with a
        PeerNotRespondingError (an ETIMEDOUT): relays reset their local sockets, callers get the reason instead
        of TCP's bare "connection timed out". Status shows "not answering" from the start of the silence."""
        for runtime in self.peers.values():
            peer = self.device.peer(runtime.public_key)
            if runtime.unanswered_at is None and peer.new_handshake_at is not None and now >= peer.new_handshake_at:
                runtime.unanswered_at = now
            last_receive = peer.last_receive
            if last_receive is not None:
                if runtime.unanswered_at is not None and last_receive >= runtime.unanswered_at:
                    runtime.unanswered_at = None
                if runtime.gave_up_at is not None and last_receive >= runtime.gave_up_at:
                    runtime.gave_up_at = None
            since = self.peer_not_answering_since(runtime.public_key, now)
            if since is None:
                runtime.declared_dead = False
                continue
            if runtime.declared_dead or now - since < self._fail_connections_after():
                continue
            runtime.declared_dead = True
            self.counters["peer_not_answering"] += 1
            message = self.describe_peer_not_answering(runtime, now - since)
            for conn in list(self.stack.tcp.values()):
                if conn.state != "CLOSED" and self.allowed_ips.routes(conn.remote[0]) is peer:
                    error = PeerNotRespondingError(message)
                    error.errno = errno.ETIMEDOUT
                    conn.time_out(error, now)
                    self.stack.wake(conn)
                    self.counters["tcp_failed_peer_not_answering"] += 1

    def peer_not_answering_reason(self, public_key: bytes, now: float) -> str | None:
        """describe_peer_not_answering's sentence while the peer is not answering, else None."""
        since = self.peer_not_answering_since(public_key, now)
        return None if since is None else self.describe_peer_not_answering(self.peers[public_key], now - since)

    def describe_peer_not_answering(self, runtime: PeerRuntime, silent_for: float) -> str:
        """The sentence a connection failed by check_peer_liveness carries (and %wg status's reason)."""
        from wgmagic.config import PeerConfig

        key = PeerConfig(runtime.public_key).public_key_b64
        where = runtime.resolved_endpoint or runtime.configured_endpoint
        return explain.peer_not_answering(key, format_address(where) if where else None, silent_for)

    def peer_recently_answered(self, window: float) -> bool:
        """Whether any peer completed a handshake or sent data within `window` seconds."""
        now = time.monotonic()
        for stats in self.device.stats().get("peers", {}).values():
            last = stats.get("last_receive")
            if last is not None and now - last <= window:
                return True
        return False

    async def resolve_async(self, name: str, timeout: float = 2.0, attempts: int = 2,
                            lifetime: float | None = None) -> list[Any]:
        """Resolve through the tunnel's DNS servers (a `wgmagic.netstack.dns.Resolver`: search domains, A then
        AAAA, the servers in turn, TCP when truncated). timeout: seconds a query waits before the next server;
        lifetime: seconds for the whole resolution (None: bounded by the retries alone). Answers are cached
        for CACHE_TTL seconds. Raises NameNotFoundError, DNSTimeoutError, TunnelClosedError."""
        from wgmagic.netstack.dns import CACHE_TTL, Resolver
        from wgmagic.runtime.resolver import DnsLookup

        cached = self._dns_cache.get(name)
        if cached and cached[0] > time.monotonic():
            return list(cached[1])
        interface = self.config.interface
        resolver = Resolver(name, interface.dns_servers, time.monotonic(), search=interface.dns_search,
                            timeout=timeout, attempts=attempts, lifetime=lifetime)
        lookup = DnsLookup(self, resolver)
        if not lookup.cleaned:
            self.lookups.add(lookup)
        try:
            found = await lookup.future
        finally:
            lookup.cancel()
        self._dns_cache[name] = (time.monotonic() + CACHE_TTL, tuple(found))
        if len(self._dns_cache) > 256:
            self._dns_cache.pop(next(iter(self._dns_cache)))
        return list(found)

    def _udp_readable(self, sock: Any) -> None:
        handler = self.udp_handlers.get(id(sock))
        if handler is not None:
            handler(sock)
            return
        while sock.recvfrom() is not None:  # a socket whose reader is gone (a finished lookup's)
            self.counters["dns_unexpected_source"] += 1

    def send_echo(self, dst: ipaddress.IPv4Address | ipaddress.IPv6Address, ident: int, seq: int,
                  payload: bytes) -> asyncio.Future[float]:
        now = time.monotonic()
        # Send first: a request that cannot leave (no Address of that family) raises here, before a waiter
        # exists that nobody would ever collect.
        self.stack.send_echo(dst, ident, seq, payload, now)
        fut: asyncio.Future[float] = self.loop.create_future()
        key = (dst.packed, ident, seq)
        self._echo_waiters[key] = fut
        fut.add_done_callback(lambda _f: (self._echo_waiters.pop(key, None), self._echo_sent.pop(key, None)))
        self._echo_sent[key] = now
        self.pump(now)
        return fut
