"""What the runtime knows of each peer beyond the protocol, and how it words a peer that never answered.

The protocol state (keys, timers, the endpoint in use and its candidates, liveness marks) is the WireGuard
device's (`wgmagic.wireguard.peer.Peer`); the runtime keeps only what the user configured, what it last saw,
who waits for a handshake, and counts. Owns: `PeerRuntime`, `describe_no_handshake`. Loop thread only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from wgmagic import explain
from wgmagic.config import PeerConfig
from wgmagic.explain import Explanation
from wgmagic.runtime.transport import Transport, TransportKind
from wgmagic.runtime.waiters import Waiters
from wgmagic.wireguard.peer import Peer

Address = tuple[str, int]


@dataclass
class PeerRuntime:
    """One peer as the runtime sees it. configured_endpoint: the config's (host, port), a name or an address;
    resolved_endpoint: the (address, port) the device last reported using (PeerEndpointChanged);
    handshake_waiters: futures waiting for the next handshake (its RTT in seconds, or None as responder);
    declared_dead: the liveness check failed this peer's connections and the peer has not answered since."""

    public_key: bytes
    configured_endpoint: Address | None
    resolved_endpoint: Address | None
    handshake_waiters: Waiters[float | None] = field(default_factory=Waiters)
    last_handshake_rtt: float | None = None
    handshakes: int = 0
    attempts_exhausted: int = 0
    declared_dead: bool = False

    @property
    def public_key_b64(self) -> str:
        return PeerConfig(self.public_key).public_key_b64


def describe_no_handshake(runtime: PeerRuntime, peer: Peer, transport: Transport) -> Explanation:
    """Why the peer has not answered the handshake, from what the runtime and the device know (wgmagic.explain
    words it): the transport's state when it is not UDP, else the Endpoint, the addresses tried, a refusal."""
    key = runtime.public_key_b64
    where = runtime.configured_endpoint
    if transport.kind is not TransportKind.UDP:
        return explain.no_handshake(key, None, transport=transport.describe(), transport_state=transport.last_error)
    resolved = runtime.resolved_endpoint
    candidates = peer.candidates
    return explain.no_handshake(
        key, f"{where[0]}:{where[1]}" if where else None, refused=candidates.refusing,
        tried=[host for host, _ in candidates.addresses],
        address=resolved[0] if resolved and where and resolved[0] != where[0] else None)
