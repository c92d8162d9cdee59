"""Carries out path_policy.py's decisions for the engine: the Endpoint's next address, the transport switch of
`--via auto` mid-session, and the probes of the primary transport while on the fallback.

Owns: the probe socket (a transport of the primary kind, built from transport.py's registry, open only while
the session is on the fallback) and the log lines said on each switch (WARNING when the tunnel leaves its
primary transport, INFO when it comes back; once per switch). Never decides (the policy does) and never writes
protocol state but through the device's own methods. Engine's loop only.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from wgmagic.runtime import fallback
from wgmagic.runtime.path_policy import PathAction, PathDecision, PathPolicy, PeerPath
from wgmagic.runtime.transport import (
    Transport,
    TransportHooks,
    TransportKind,
    TransportSettings,
    kind_for,
    transport_factory,
)
from wgmagic.via import Via, ViaMode

if TYPE_CHECKING:
    from wgmagic.runtime.engine import Engine

logger = logging.getLogger(__name__)


class PathWatch:
    """The engine's path policy and its probe socket (see the module). `policy` starts without a transport
    fallback (the Endpoint's addresses only) until `follow(via)` says the session is `--via auto URL`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.policy = PathPolicy(kind_for(engine.via))
        self.via: Via | None = None  # the auto choice being followed
        self.probe: Transport | None = None
        self._restore_pending = False  # a move was made for an outage: the next handshake ends it

    def follow(self, via: Via) -> None:
        """The session was asked for with `via` (auto with a URL: move between its rungs for the whole session;
        anything else: nothing to follow)."""
        ladder = [kind_for(rung.via) for rung in fallback.plan(via, 0.0).rungs]  # the one ladder, connect()'s
        if via.mode is not ViaMode.AUTO or len(ladder) < 2:
            return
        self.via = via
        self.policy.follow(ladder[0], ladder[-1], self.engine.carrier.transport.kind, self.engine.now())
        self.engine.pump()  # re-arm the timer for the first probe

    def next_deadline(self) -> float | None:
        return self.policy.next_deadline()

    def peers(self, now: float) -> list[PeerPath]:
        """What the device shows of each peer now (read only)."""
        views = []
        for key in self.engine.peers:
            peer = self.engine.device.peer(key)
            endpoint = peer.endpoint if peer.endpoint != TransportSettings.peer_address else None
            views.append(PeerPath(key, endpoint, tuple(peer.candidates.addresses), peer.candidates.index,
                                  peer.has_session(now), peer.unanswered_at is not None,
                                  peer.retransmit_at is not None and now >= peer.retransmit_at))
        return views

    def check(self, now: float) -> None:
        """Ask the policy and carry out what it decides (before the device's timers fire)."""
        for decision in self.policy.decide(now, self.peers(now)):
            if decision.action is PathAction.NEXT_ADDRESS and decision.public_key and decision.address:
                self.engine.counters["path_next_address"] += 1
                logger.info("peer %s: %s (%s)", _short(decision.public_key), decision.reason,
                            _address(decision.address))
                self.engine.device.set_endpoint(decision.public_key, decision.address, now)
                self._restore_pending = True
            elif decision.action is PathAction.SWITCH and decision.kind is not None:
                self._switch(decision, now)
            elif decision.action is PathAction.PROBE and decision.public_key and decision.address:
                self._probe(decision, now)

    def _switch(self, decision: PathDecision, now: float) -> None:
        engine, kind = self.engine, decision.kind
        assert kind is not None and self.via is not None
        self._close_probe()
        if kind is self.policy.primary:
            engine.counters["path_back_to_primary"] += 1
            logger.info("tunnel: %s", decision.reason)
            engine.via = None  # UDP, as Tunnel.via says it
            engine.carrier.switch(kind)
        else:
            engine.counters["path_to_fallback"] += 1
            self._restore_pending = True
            logger.warning("tunnel: %s (%s)", decision.reason, self.via)
            engine.carrier.switch(kind, Via(_mode_of(kind), self.via.url, self.via.ca_file))
        # A fresh handshake over the new transport now: the peer moves to the new way when it arrives
        # (whitepaper 2.1 roaming) and its answer, one round trip later, tells the liveness watch the peer
        # answers, well before its connections would be failed (liveness.py) or time out.
        for key in engine.peers:
            engine.device.initiate_handshake(key, now, force=True)
        engine.pump(now)

    def handshake_completed(self, now: float) -> None:
        """A handshake completed (inside the engine's pump): after a move made for an outage, the inner TCP's
        connections in retransmission backoff resend now instead of at their doubled RTO (Stack.path_restored),
        so what was in flight arrives well inside the user timeout."""
        if self._restore_pending:
            self._restore_pending = False
            self.engine.counters["path_restored"] += 1
            self.engine.stack.path_restored(now)

    def _probe(self, decision: PathDecision, now: float) -> None:
        engine, key, address = self.engine, decision.public_key, decision.address
        assert key is not None and address is not None and decision.kind is not None
        if self.probe is None:
            self.probe = self._open_probe(decision.kind)
            if self.probe is None:
                return
        engine.pump(now)  # what is queued leaves over the transport in use first
        engine.device.initiate_handshake(key, now, force=True)
        datagrams = [(data, address) for data, _ in engine.device.datagrams_to_send()]
        engine.counters["path_probes"] += 1
        self.probe.send(datagrams)

    def _open_probe(self, kind: TransportKind) -> Transport | None:
        engine = self.engine

        def receive(data: bytes, addr: tuple[str, int], now: float) -> None:
            peers = [engine.device.peer(key) for key in engine.peers]
            before = [peer.last_receive for peer in peers]
            engine.device.receive_datagram(data, addr, now)
            if any(peer.last_receive != seen for peer, seen in zip(peers, before, strict=True)):
                self.policy.probe_answered(now)  # authenticated: the primary answers again
                engine.loop.call_soon(self._answered)  # switched outside the probe's own read

        hooks = TransportHooks(engine.loop, receive, engine.pump, engine.counters, lambda: None,
                               lambda _message: None, lambda: None)
        try:
            probe = transport_factory(kind)(hooks, TransportSettings())
            probe.open()
        except OSError as exc:
            engine.counters["path_probe_unavailable"] += 1
            logger.info("tunnel: cannot probe %s: %s", kind, exc)
            return None
        return probe

    def _answered(self) -> None:
        if not self.engine.closed:
            self.check(self.engine.now())

    def _close_probe(self) -> None:
        if self.probe is not None:
            self.probe.close()
            self.probe = None

    def close(self) -> None:
        self._close_probe()


def _mode_of(kind: TransportKind) -> ViaMode:
    """The `--via` word of a transport kind (a WebSocket-kind plugin may share the WebSocket's)."""
    try:
        return ViaMode(kind.value)
    except ValueError:
        return ViaMode.WEBSOCKET


def _short(public_key: bytes) -> str:
    import base64

    return base64.b64encode(public_key).decode()[:8]


def _address(address: tuple[str, int]) -> str:
    from wgmagic.addresses import format_address

    return format_address(address)
