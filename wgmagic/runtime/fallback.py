"""Which transport a tunnel tries, in which order, and how long each waits: the one fallback policy.

Owns: the ladder `connect()` climbs (UDP, then the WebSocket for "auto"), the wait on each rung, the words
said on switching or giving up, and the WebSocket the doctor probes after UDP failed. Pure decisions on `Via`
values (wgmagic/via.py) and plain numbers: no socket or clock here; `connect()` carries a ladder out with
`climb` on the tunnel it is handed, and the doctor asks `websocket_probe`. A new transport is a new rung
here and a module beside runtime/websocket.py.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from wgmagic.errors import ConfigError, HandshakeTimeoutError
from wgmagic.via import Via, ViaMode, choose_via, mask_url

if TYPE_CHECKING:
    from wgmagic.config import WireGuardConfig

logger = logging.getLogger(__name__)
AUTO_UDP_WAIT = 3.0  # --via auto: seconds without a UDP handshake answer before switching to the WebSocket


@dataclass(frozen=True)
class Rung:
    """One transport to try: carry the datagrams over `via` (mode "udp" or "websocket") and wait up to `wait`
    seconds for a handshake answer."""

    via: Via
    wait: float


@dataclass(frozen=True)
class Ladder:
    """The rungs `connect()` climbs in order; `exhausted`: what to add to the error when the last one fails."""

    rungs: tuple[Rung, ...]
    exhausted: str | None = None

    @property
    def first(self) -> Rung:
        """The rung the tunnel starts on."""
        return self.rungs[0]

    def switch_note(self, failed: Rung, next_rung: Rung) -> str:
        """The sentence said (logged, and to connect's `note`) when `failed` got no answer and `next_rung` is
        tried next; never a password (the URL is masked)."""
        target = f"the WebSocket {mask_url(next_rung.via.url)}" if next_rung.via.url else "the next transport"
        return (f"no answer over UDP within {failed.wait:g} s (UDP may be blocked on this network): switching to "
                f"{target}")


def config_via(config: WireGuardConfig) -> str | None:
    """The config's `#@wgmagic Via = ...` comment (of its first peer that has one), or None."""
    return next((p.via for p in config.peers if getattr(p, "via", None)), None)


def choose(config: WireGuardConfig, via: str | Via | None = None, *, ca_file: str | None = None) -> Via:
    """The transport asked for: `via` > $WGMAGIC_VIA > the config's comment > UDP (see via.choose_via); with one
    peer, "fly" and a Fly.io gateway under "auto" are worked out from that peer's Endpoint and AllowedIPs.
    ConfigError for a WebSocket with several peers (it carries one peer's datagrams)."""
    peer = config.peers[0] if len(config.peers) == 1 else None
    choice = choose_via(via, config_via(config), ca_file=ca_file, peer=peer)
    if choice.mode is ViaMode.WEBSOCKET and len(config.peers) != 1:
        raise ConfigError(f"a WebSocket carries the datagrams of one peer; this config has {len(config.peers)}",
                          source=config.source)
    return choice


def plan(choice: Via, timeout: float) -> Ladder:
    """The ladder for `choice` with `timeout` seconds for the handshake on the transport finally used.

    udp: UDP for `timeout`; websocket: the WebSocket for `timeout`; auto with a URL: UDP for AUTO_UDP_WAIT (at
    most `timeout`), then the WebSocket for `timeout`; auto without one: UDP for `timeout`, and the error says
    that only UDP was tried and where a URL would come from."""
    if choice.mode is ViaMode.WEBSOCKET:
        return Ladder((Rung(choice, timeout),))
    udp = Via(ViaMode.UDP, None, choice.ca_file)
    if choice.mode is ViaMode.AUTO and choice.url:
        websocket = Via(ViaMode.WEBSOCKET, choice.url, choice.ca_file)
        return Ladder((Rung(udp, min(AUTO_UDP_WAIT, timeout)), Rung(websocket, timeout)))
    if choice.mode is ViaMode.AUTO:
        return Ladder((Rung(udp, timeout),), exhausted=(
            "(via auto: only UDP was tried, since no WebSocket URL was given: none after auto, in $WGMAGIC_VIA, "
            "or in the config's `#@wgmagic Via = wss://...` under [Peer])"))
    return Ladder((Rung(udp, timeout),))


def websocket_probe(config: WireGuardConfig) -> Via | None:
    """The WebSocket the doctor tries after a connect over UDP failed, to tell "UDP is blocked here" from
    "neither works": the URL known from any source (as "auto" would take it), unless the transport chosen was
    already that WebSocket; None when no URL is known. Raises ConfigError for a bad Via text."""
    chosen, known = choose(config), choose(config, "auto")
    if chosen.mode is ViaMode.WEBSOCKET or known.url is None:
        return None
    return Via(ViaMode.WEBSOCKET, known.url, known.ca_file)


class Switchable(Protocol):
    """What `climb` needs of a tunnel (runtime.tunnel.Tunnel is one)."""

    name: str

    def wait_handshake(self, timeout: float = ...) -> float | None: ...

    def switch_to_websocket(self, via: Via) -> None: ...


def climb(tunnel: Switchable, ladder: Ladder, note: Callable[[str], None] | None = None) -> float | None:
    """Wait for a handshake on each rung of `ladder` in turn, switching the tunnel's transport between them;
    returns the handshake RTT in seconds (None: a session was up already). When the last rung gets no answer,
    its HandshakeTimeoutError, with the ladder's `exhausted` words added. `note(sentence)` hears each switch."""
    for index, rung in enumerate(ladder.rungs):
        if index:
            tunnel.switch_to_websocket(rung.via)
        try:
            return tunnel.wait_handshake(timeout=rung.wait)
        except HandshakeTimeoutError as exc:
            if index + 1 < len(ladder.rungs):
                message = ladder.switch_note(rung, ladder.rungs[index + 1])
                logger.warning("tunnel %r: %s", tunnel.name, message)
                if note is not None:
                    note(message)
                continue
            if ladder.exhausted:
                raise type(exc)(f"{exc} {ladder.exhausted}", explanation=exc.explanation) from None
            raise
    raise AssertionError("a ladder has at least one rung")
