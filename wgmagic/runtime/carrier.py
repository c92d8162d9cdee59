"""The engine's transport: which one carries the datagrams now, built from the registry, and switched.

transport.py says which transports exist (`TRANSPORTS`), fallback.py in which order to try them (`plan`);
this module holds the one in use for an engine, builds it with the engine's hooks, switches to another when
told (--via auto's fallback), and turns what the transport reports (it reopened, it failed, ICMP port
unreachable) into calls on the device and the handshake waiters. Owns: the current transport and its hooks,
among them the outer tap a packet capture sets (`tap_received`), which every transport it builds keeps.
Never decides to switch by itself (the caller of `switch` does, from the ladder). Engine's loop only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from wgmagic.errors import TransportError
from wgmagic.runtime.transport import (
    Receive,
    Transport,
    TransportFactory,
    TransportHooks,
    TransportKind,
    TransportSettings,
    kind_for,
    transport_factory,
)
from wgmagic.via import Via

if TYPE_CHECKING:
    from wgmagic.runtime.engine import Engine


class Carrier:
    """The transport in use for `engine` (`transport`), of `kind`; `factory` replaces the registry's (tests).
    `error`: why the transport could not be opened (one sentence, no secret), or None."""

    def __init__(self, engine: Engine, kind: TransportKind, factory: TransportFactory | None = None) -> None:
        self.engine = engine
        self.factory = factory
        self.error: str | None = None
        self.outer_tap: Receive | None = None  # a capture's view of received datagrams (tap_received)
        self.transport = self._make(kind)

    def _make(self, kind: TransportKind) -> Transport:
        engine, via = self.engine, self.engine.via
        hooks = TransportHooks(engine.loop, self._receive(), engine.pump, engine.counters,
                               self._refused, self._failed, self._reopened)
        runtime = next(iter(engine.peers.values()), None)
        settings = TransportSettings(engine.config.interface.listen_port or 0, via.url if via else None,
                                     via.ca_file if via else None,
                                     (runtime.resolved_endpoint if runtime else None) or TransportSettings.peer_address)
        return (self.factory or transport_factory(kind))(hooks, settings)

    def _receive(self) -> Receive:
        """What a transport hands each received datagram to: the device, after the outer tap while one is set
        (no tap: the device's own method, nothing in between on the hot path)."""
        receive, tap = self.engine.device.receive_datagram, self.outer_tap
        if tap is None:
            return receive

        def tapped(data: bytes, addr: tuple[str, int], now: float) -> None:
            tap(data, addr, now)
            receive(data, addr, now)

        return tapped

    def tap_received(self, tap: Receive | None) -> None:
        """Show every datagram received from now on to tap(data, (host, port), now) before the device, over the
        transport in use and every one `switch` builds later (a capture's outer interface); None: stop."""
        self.outer_tap = tap
        self.transport.receive = self._receive()

    def switch(self, kind: TransportKind, via: Via | None = None) -> None:
        """Close the transport in use and carry the datagrams the `kind` way from now on; the handshakes start
        again over it."""
        engine = self.engine
        self.transport.close()
        if via is not None:
            engine.via = via
        self.transport = self._make(kind)
        self.transport.open()
        now = engine.now()
        for key in engine.peers:
            engine.device.initiate_handshake(key, now)
        engine.pump(now)

    def carry(self, via: Via) -> None:
        """Carry the datagrams the way `via` names (transport.kind_for: --via auto's WebSocket rung) from now
        on; the handshakes start again over it."""
        self.switch(kind_for(via), via)

    def _reopened(self) -> None:
        """The transport came back (a new relay socket, so a new endpoint at the peer): tell the peer now with
        an authenticated keepalive (whitepaper 6.5), instead of waiting for the next data."""
        now = self.engine.now()
        for key in self.engine.peers:
            self.engine.device.send_keepalive(key, now)
        self.engine.pump(now)

    def _failed(self, message: str) -> None:
        """The transport could not be opened: whoever waits for a first handshake fails with the cause."""
        self.error = message
        for peer in self.engine.peers.values():
            peer.handshake_waiters.fail(TransportError(message))

    def _refused(self) -> None:
        """ICMP port unreachable for something sent: the device decides where to go next (endpoint.py). What it
        queues leaves with the batch's pump, once the transport has drained the socket's error queue (a send
        before that would fail with the same refusal)."""
        self.engine.endpoint_refused(self.engine.now())
