"""The tunnel's I/O owner: the WireGuard device, the IP stack and the transport, driven on one asyncio loop.

Owns: the pump (device <-> stack <-> transport), the one armed timer, and the dispatch of events to whoever
waits for them. Everything else is a decision made elsewhere and carried out here: which address and whether a
peer answers (the WireGuard device: wgmagic/wireguard/endpoint.py, liveness.py), what to do about a silent
peer (liveness.py), which transport (transport.py's registry and ladder), waiters (waiters.py), DNS
(resolver.py, dnscache.py). Never blocks, never starts a thread, never writes protocol state from outside.

The contract (docs/layers.md): every method runs on `loop`, which may be the tunnel's own thread
(runtime/loop.py) or any asyncio loop the caller runs (runtime/aio.py); the same code either way. Time is
`clock()` (default time.monotonic; a test passes its own and steps `receive_datagrams`, `pump` and
`handle_timer` by hand). The hot path: the transport drains its socket into the device until it would block,
then calls `pump` once: the whole batch goes through the device and the stack, which answer once for the batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from wgmagic.config import WireGuardConfig
from wgmagic.errors import HandshakeTimeoutError, PortUnreachableError, TunnelClosedError
from wgmagic.explain import Explanation
from wgmagic.netstack.events import EchoReply, NetstackEvent, TcpClosed, TcpEvent, UdpReadable
from wgmagic.netstack.stack import Stack
from wgmagic.netstack.tcp.config import TUNNEL_CONFIG, TcpConfig
from wgmagic.netstack.tcp.connection import TcpConnection
from wgmagic.netstack.udp import UdpSocket
from wgmagic.runtime import metrics
from wgmagic.runtime.addresses import Routes
from wgmagic.runtime.carrier import Carrier
from wgmagic.runtime.dnscache import DnsCache
from wgmagic.runtime.liveness import LivenessWatch
from wgmagic.runtime.metrics import MetricsRecorder
from wgmagic.runtime.path_watch import PathWatch
from wgmagic.runtime.peers import PeerRuntime, describe_no_handshake
from wgmagic.runtime.seams import IPAddress, StreamHandler, Tap
from wgmagic.runtime.suspend import SuspendAwareDevice, SuspendClock
from wgmagic.runtime.transport import TransportFactory, TransportKind, TransportSettings, kind_for
from wgmagic.runtime.waiters import EchoWaiters, wait_handshake
from wgmagic.via import Via
from wgmagic.wireguard.device import Device
from wgmagic.wireguard.endpoint import EndpointReason
from wgmagic.wireguard.events import HandshakeAttemptsExhausted, HandshakeCompleted, PeerEndpointChanged
from wgmagic.wireguard.timers import Timers

if TYPE_CHECKING:
    from wgmagic.runtime.resolver import DnsLookup

OUTER_STALL_HOLD = 0.05  # seconds an inner retransmission waits while the outer TCP repairs a loss
MAX_PUMP_ROUNDS = 64  # rounds of one pump before it lets the loop serve others (then goes on next turn)
Address = tuple[str, int]



def _never_suspended() -> float:
    return 0.0

class Engine:
    """One tunnel's protocol objects and the I/O that drives them, on `loop` (see the module's contract).

    config: the parsed WireGuard config; endpoints: per peer public key, its Endpoint's addresses in order
    (a list; or one (host, port); or None). via: how the datagrams travel (None: UDP); tcp_config: the TCP knobs
    of every connection (default TUNNEL_CONFIG); clock() -> seconds, monotonic; transport: a factory to use
    instead of the registry's (tests). Raises OSError from `open()` when the UDP port cannot be bound.
    """

    def __init__(self, config: WireGuardConfig, endpoints: dict[bytes, Any], *,
                 loop: asyncio.AbstractEventLoop, timers: Timers | None = None, via: Via | None = None,
                 tcp_config: TcpConfig | None = None, clock: Callable[[], float] = time.monotonic,
                 transport: TransportFactory | None = None) -> None:
        self.config = config
        self.loop = loop
        self.clock = clock
        self.via = via
        kind = kind_for(via)
        # WireGuard's ages count suspended time (runtime/suspend.py); TCP's stay on `clock`. A test's own clock
        # has no suspend unless it says so.
        suspended = SuspendClock().suspended if clock is time.monotonic else _never_suspended
        self.device = SuspendAwareDevice(config.interface.private_key, timers=timers or Timers(),
                                         wall_clock=time.time, suspended=suspended)
        self.peers: dict[bytes, PeerRuntime] = {}
        for peer in config.peers:
            given = endpoints.get(peer.public_key)
            candidates = list(given) if isinstance(given, list) else ([given] if given else [])
            endpoint = candidates[0] if candidates else None
            if endpoint is None and kind is TransportKind.WEBSOCKET:
                endpoint = TransportSettings.peer_address  # no Endpoint: the WebSocket is the way to the peer
            self.device.add_peer(peer.public_key, preshared_key=peer.preshared_key, allowed_ips=peer.allowed_ips,
                                 endpoint=endpoint, candidates=candidates,
                                 persistent_keepalive=peer.persistent_keepalive)
            self.peers[peer.public_key] = PeerRuntime(peer.public_key, peer.endpoint, endpoint)
        self.routes = Routes(config.interface.addresses, self.device.allowed_ips)
        self.stack = Stack(config.interface.addresses, mtu=config.mtu, tcp_options=tcp_config or TUNNEL_CONFIG)
        self.counters: Counter[str] = Counter()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_deadline: float | None = None
        self._pump_handle: asyncio.Handle | None = None  # the pump pump_soon scheduled
        self._pumping = self._pump_again = False
        self.echoes = EchoWaiters(loop)
        # Stack events no one else consumes (TcpAccepted, IcmpUnreachable): handler(event) -> True if taken.
        self.event_handlers: list[Callable[[NetstackEvent], bool]] = []
        self.close_handlers: list[Callable[[TunnelClosedError], None]] = []  # told once, when the engine closes
        self.udp_handlers: dict[int, Callable[[UdpSocket], None]] = {}  # id(stack UDP socket) -> reader
        self.streams: dict[int, StreamHandler] = {}  # id(TcpConnection) -> what consumes its events
        self.lookups: set[DnsLookup] = set()  # DNS lookups under way (resolver.py)
        self.dns_cache = DnsCache()
        self.closed = False
        self.liveness = LivenessWatch(self.device, self.stack, self.peers, self.counters)
        self.metrics = MetricsRecorder(self)
        self.tap: Tap | None = None  # a packet capture (runtime/services/capture.py), or None
        self.carrier = Carrier(self, kind, transport)
        self.paths = PathWatch(self)  # which address and transport mid-session (path_policy.py decides)

    def now(self) -> float:
        """The engine's clock (seconds, monotonic): the `now` every protocol object is given."""
        return self.clock()

    # ---- lifecycle -------------------------------------------------------------------------------------
    def open(self) -> None:
        """Open the transport (OSError when a UDP port cannot be bound) and start the metrics."""
        self.carrier.transport.open()
        self.metrics.start()
        self.pump()

    def close(self) -> None:
        """Send what is queued, fail every waiter, stream and lookup with TunnelClosedError, tell the
        close_handlers, close the transport. Idempotent."""
        if self.closed:
            return
        if self._pump_handle is not None:  # what was queued (a forward's resets) leaves before the socket closes
            self._pump_handle.cancel()
            self._pump_handle = None
            self.pump()
        self.closed = True
        self.metrics.stop()
        self.paths.close()
        if self._timer:
            self._timer.cancel()
        error = TunnelClosedError("the tunnel was closed")
        self.echoes.fail(error)
        for peer in self.peers.values():
            peer.handshake_waiters.fail(error, retrieved=True)
        for lookup in list(self.lookups):
            lookup.fail(error)
        for handler in list(self.streams.values()):
            handler.loop_failed(error)
        self.streams.clear()
        for on_close in list(self.close_handlers):
            with contextlib.suppress(Exception):
                on_close(error)
        self.carrier.transport.close()

    # ---- the transport (transport.py says which, carrier.py holds it: `carrier.transport`, `carrier.switch`;
    # path_watch.py moves it mid-session: `paths.follow(via)`) ---------------------------------------------
    @property
    def local_port(self) -> int:
        """The transport's local port (UDP) or its TCP connection's (WebSocket); 0 while it has none."""
        return self.carrier.transport.local_port

    # ---- the hot path: transport.receive -> device -> stack -> device -> transport.send ---------------
    def receive_datagrams(self, datagrams: Sequence[tuple[bytes, Address]], now: float) -> None:
        """Feed datagrams as the transport would, then pump once (tests and in-memory transports)."""
        for data, addr in datagrams:
            self.carrier.transport.receive(data, addr, now)
        self.pump(now)

    def pump(self, now: float | None = None) -> None:
        """Move everything that is ready between the device, the stack and the transport.

        Events are delivered in the round that produced them, and what their handlers queue leaves in the
        same pump. Never re-entered: a call from inside (a handler sending) makes the running pump go round
        once more instead. Callers outside the hot path use `pump_soon`."""
        if self.closed:
            return
        if self._pumping:
            self._pump_again = True
            return
        if now is None:
            now = self.clock()
        device, stack = self.device, self.stack
        self._pumping = True
        try:
            for _ in range(MAX_PUMP_ROUNDS):
                self._pump_again = False
                moved = False
                packets = device.packets_received()
                if packets:
                    moved = True
                    if self.tap is not None:
                        self.tap.inner(packets, True, now)
                    for packet in packets:
                        stack.receive_packet(packet, now)
                self._dispatch(device, stack.events(), now)
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
                    self.carrier.transport.send(datagrams)
                if not self._pump_again and not (moved and (stack.pending() or device.pending())):
                    break  # nothing queued: another round would find nothing to move
            else:
                self._pump_again = True  # still moving: let the loop serve others, then go on
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

    def next_deadline(self) -> float | None:
        """The earliest deadline of the device's and the stack's timers (seconds, `clock`), or None."""
        deadlines = (self.device.next_timer(), self.stack.next_timer(), self.paths.next_deadline())
        return min((d for d in deadlines if d is not None), default=None)

    def _reschedule(self) -> None:
        deadline = self.next_deadline()
        armed = self._timer_deadline if self._timer is not None else None
        if deadline is None or (armed is not None and armed <= deadline):
            # The armed timer fires at or before what is due now (or nothing is due): keep it. Firing early
            # finds nothing due and arms the then-earliest deadline, so the deadlines that move on every
            # segment (the RTO on a send, the delayed ACK on a receive) cost no cancel and re-arm each.
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_deadline = deadline
        self._timer = self.loop.call_later(max(0.0, deadline - self.clock()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = self._timer_deadline = None
        self.handle_timer(self.clock())

    def handle_timer(self, now: float) -> None:
        """Fire what is due at `now`: liveness, the device's and the stack's timers; then pump."""
        if self.closed:
            return
        self.liveness.check(now)
        self.paths.check(now)  # before the device's timers: a retransmission due goes the new way
        if self.carrier.transport.outer_stalled():
            # TCP over TCP: the outer connection is repairing a loss; what the inner TCP sent is delayed, not
            # lost. Hold its retransmission timers a little and look again.
            self.counters["inner_rto_deferred"] += 1
            self.stack.defer_retransmissions(now + OUTER_STALL_HOLD)
        self.device.handle_timers(now)
        self.stack.handle_timers(now)
        self.pump(now)

    # ---- events ---------------------------------------------------------------------------------------
    def _dispatch(self, device: Device, stack_events: list[NetstackEvent], now: float) -> None:
        """Hand each event to whoever waits for it, in the round that produced it; device events are counted
        per class as `event_<ClassName>`."""
        counters = self.counters
        for event in device.events():
            counters[f"event_{type(event).__name__}"] += 1
            peer = self.peers.get(event.peer_public_key)
            if peer is None:
                continue
            if isinstance(event, HandshakeCompleted):
                peer.handshakes += 1
                if event.rtt is not None:
                    peer.last_handshake_rtt = event.rtt
                peer.handshake_waiters.resolve(event.rtt)
                self.paths.handshake_completed(now)
            elif isinstance(event, HandshakeAttemptsExhausted):
                peer.attempts_exhausted += 1
                explanation = self.describe_no_handshake(peer)
                peer.handshake_waiters.fail(HandshakeTimeoutError(str(explanation), explanation=explanation))
            elif isinstance(event, PeerEndpointChanged):
                peer.resolved_endpoint = event.endpoint
                if event.reason is EndpointReason.NEXT_ADDRESS:
                    counters["endpoint_next_address"] += 1
        streams = self.streams
        for stack_event in stack_events:
            if isinstance(stack_event, TcpEvent):
                handler = streams.get(id(stack_event.conn))
                if handler is not None:
                    handler.tcp_event(stack_event)
                    self.stack.wake(handler.conn)
                    if isinstance(stack_event, TcpClosed) and handler.forget_after_close():
                        streams.pop(id(handler.conn), None)
                    continue
            elif isinstance(stack_event, UdpReadable):
                self._udp_readable(stack_event.sock)
                continue
            elif isinstance(stack_event, EchoReply):
                self.echoes.reply((stack_event.src.packed, stack_event.ident, stack_event.seq), self.clock())
                continue
            for other in self.event_handlers:
                if other(stack_event):
                    break

    def _udp_readable(self, sock: UdpSocket) -> None:
        handler = self.udp_handlers.get(id(sock))
        if handler is not None:
            handler(sock)
            return
        while sock.recvfrom() is not None:  # a socket whose reader is gone (a finished lookup's)
            self.counters["dns_unexpected_source"] += 1

    def endpoint_refused(self, now: float) -> None:
        """ICMP port unreachable came back for something sent (carrier.py): the device moves on (endpoint.py);
        whoever waits for the handshake of a peer refused at every address of its Endpoint (REFUSALS_IN_A_ROW
        initiations each) fails at once with PortUnreachableError, unless it also waits for a peer not refused
        (connect waits for any peer). The device keeps retrying, as wireguard-go does."""
        self.device.endpoint_refused(now)
        refused = [p for p in self.peers.values()
                   if len(p.handshake_waiters) and self.device.peer(p.public_key).candidates.refused_everywhere()]
        if not refused:
            return
        others = [p for p in self.peers.values() if all(p is not r for r in refused)]
        elsewhere = {f for p in others for f in p.handshake_waiters}
        for peer in refused:
            explanation = self.describe_no_handshake(peer)
            peer.handshake_waiters.fail(PortUnreachableError(str(explanation), explanation=explanation),
                                        keep=elsewhere)

    def describe_no_handshake(self, peer: PeerRuntime) -> Explanation:
        """Why `peer` has not answered the handshake (peers.describe_no_handshake)."""
        return describe_no_handshake(peer, self.device.peer(peer.public_key), self.carrier.transport)

    def no_handshake_error(self, peer: PeerRuntime, waited: float) -> HandshakeTimeoutError:
        """The error for a wait of `waited` seconds that ended without a handshake with `peer`: PortUnreachableError
        when its Endpoint has refused (ICMP port unreachable), as when the refusals end the wait first."""
        explanation = self.describe_no_handshake(peer)
        kind = PortUnreachableError if self.device.peer(peer.public_key).candidates.refusing else HandshakeTimeoutError
        return kind(f"{explanation} (gave up after {waited:g} s)", explanation=explanation)

    # ---- what services, relays and the Tunnel call (on the loop); AllowedIPs checks ask `routes`, DNS is
    # resolver.resolve(engine, name) -------------------------------------------------------------------
    def wait_handshake(self, public_key: bytes | None = None) -> asyncio.Future[float | None]:
        """A future for the next handshake with the peer (default: any); see waiters.wait_handshake."""
        return wait_handshake(self, public_key)

    def send_echo(self, dst: IPAddress, ident: int, seq: int, payload: bytes) -> asyncio.Future[float]:
        """Send an ICMP echo request; the future gets the reply's arrival time (seconds, `clock`)."""
        now = self.clock()
        self.stack.send_echo(dst, ident, seq, payload, now)  # raises before a waiter exists if it cannot leave
        fut = self.echoes.add((dst.packed, ident, seq), now)
        self.pump(now)
        return fut

    @property
    def last_echo(self) -> tuple[float, float] | None:
        """(when, rtt) of the newest answered ICMP echo, seconds."""
        return self.echoes.last

    def pump_conn(self, conn: TcpConnection, now: float | None = None) -> None:
        """After the user side touched a connection (sent, read, closed): it sends what it now has to say in
        this loop turn's pump (`pump_soon`). `now` is unused."""
        self.stack.wake(conn)
        self.pump_soon()

    def send_now(self, conn: TcpConnection, now: float | None = None) -> None:
        """The user side of `conn` just wrote: its segments leave in this call, as a write() on a kernel socket
        transmits at once. Inside a pump this is `pump_conn` (the running pump goes round once more)."""
        self.stack.wake(conn)
        if self._pumping or self.closed:
            self.pump_soon()
            return
        if self._pump_handle is not None:  # the pump scheduled for this turn happens now instead
            self._pump_handle.cancel()
            self._pump_handle = None
        self.pump(now)

    def register_stream(self, conn: TcpConnection, handler: StreamHandler) -> None:
        self.streams[id(conn)] = handler

    def forget_stream(self, conn: TcpConnection) -> None:
        self.streams.pop(id(conn), None)

    # ---- figures for Tunnel.stats() and peer_report() (report.py; read only: metrics.py and liveness.py work
    # them out) -------------------------------------------------------------------------------------------
    def tcp_stats(self) -> dict[str, int]:
        return metrics.tcp_stats(self)

    def handshake_age(self) -> float | None:
        return metrics.handshake_age(self)

    def last_handshake_rtt(self) -> float | None:
        return metrics.last_handshake_rtt(self)

    def peer_silent_since(self, since: float) -> bool:
        """liveness.LivenessWatch.silent_since at the engine's `now`."""
        return self.liveness.silent_since(since, self.clock())

    def peer_not_answering_reason(self, public_key: bytes, now: float) -> str | None:
        """Why the peer counts as not answering (a sentence), or None while it answers."""
        return self.liveness.reason(public_key, now)
