"""What the device tells its caller: frozen dataclasses deriving from `WireGuardEvent`, pulled with
`Device.events()`. Dispatch with `isinstance`; each class is also importable from `wgmagic.wireguard.peer`."""

from __future__ import annotations

from dataclasses import dataclass

from wgmagic.wireguard.endpoint import EndpointReason


@dataclass(frozen=True)
class WireGuardEvent:
    """Base class of every device event; `peer_public_key` (32 bytes) names the peer it concerns."""

    peer_public_key: bytes


@dataclass(frozen=True)
class HandshakeCompleted(WireGuardEvent):
    """A handshake completed and its keypair is current (whitepaper 5.4.2-5.4.3; as responder, once the
    initiator's first transport message confirmed it). `rtt`: seconds from our initiation to the response
    (None as responder); `initiator`: whether we initiated."""

    rtt: float | None
    initiator: bool


@dataclass(frozen=True)
class HandshakeAttemptsExhausted(WireGuardEvent):
    """REKEY_ATTEMPT_TIME passed without a response (whitepaper 6.4): queued packets were dropped.
    `attempts`: initiations sent in this try."""

    attempts: int


@dataclass(frozen=True)
class PeerEndpointChanged(WireGuardEvent):
    """The device now sends to the peer at `endpoint` (ip, port). `reason`: ROAMED (an authenticated message
    came from there, whitepaper 2.1), NEXT_ADDRESS (the Endpoint name's next address, see endpoint.py) or SET
    (the caller's `Device.set_endpoint`)."""

    endpoint: tuple[str, int]
    reason: EndpointReason = EndpointReason.ROAMED


__all__ = ["HandshakeAttemptsExhausted", "HandshakeCompleted", "PeerEndpointChanged", "WireGuardEvent"]
