"""One peer's protocol state: keypairs (previous/current/next), handshake in flight, timers, staged packets.

Timers are absolute deadlines (None when not armed), following wireguard-go's timers.go: the device fires
the ones that are due in `handle_timers(now)`.
"""

from __future__ import annotations

import base64
import ipaddress
from collections import deque

from wgmagic.wireguard.cookie import CookieGenerator
from wgmagic.wireguard.endpoint import EndpointCandidates
from wgmagic.wireguard.events import HandshakeAttemptsExhausted, HandshakeCompleted, PeerEndpointChanged
from wgmagic.wireguard.handshake import InitiatorState
from wgmagic.wireguard.keypair import Keypair
from wgmagic.wireguard.timers import Timers

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

__all__ = ["HandshakeAttemptsExhausted", "HandshakeCompleted", "Peer", "PeerEndpointChanged"]


class Peer:
    """One peer's state (whitepaper 6): its keypairs (previous, current, next), the handshake in flight,
    absolute timer deadlines (seconds, None when not armed), packets staged until a session exists (at most
    `max_queued`, oldest dropped), and counters. Made by `Device.add_peer`; the preshared key never shows."""

    def __init__(self, public_key: bytes, *, preshared_key: bytes | None, allowed_ips: tuple[IPNetwork, ...],
                 endpoint: tuple[str, int] | None, candidates: list[tuple[str, int]] | None = None,
                 persistent_keepalive: float | None, precomputed_ss: bytes,
                 timers: Timers, max_queued: int) -> None:
        self.public_key = public_key
        self._psk = preshared_key
        self.allowed_ips = allowed_ips
        self.endpoint = endpoint
        # The Endpoint name's addresses (endpoint.py decides when to move on); `endpoint` is one of them or
        # where the peer roamed.
        self.candidates = EndpointCandidates(list(candidates) if candidates else ([endpoint] if endpoint else []))
        self.persistent_keepalive = persistent_keepalive or None
        self.precomputed_ss = precomputed_ss
        self.timers = timers
        self.cookies = CookieGenerator(public_key, timers.cookie_refresh_time)
        self.handshake: InitiatorState | None = None
        self.previous: Keypair | None = None
        self.current: Keypair | None = None
        self.next: Keypair | None = None
        self.staged: deque[bytes] = deque()
        self.max_queued = max_queued
        self.last_initiation_timestamp: bytes | None = None
        self.last_initiation_received: float | None = None
        self.handshake_attempts = 0
        self.last_handshake_sent: float | None = None
        self.last_handshake_time: float | None = None
        self.last_receive: float | None = None
        self.last_send: float | None = None
        self.rekey_requested_by_receive = False
        # timers (absolute deadlines)
        self.retransmit_at: float | None = None
        self.keepalive_at: float | None = None
        self.new_handshake_at: float | None = None
        self.zero_keys_at: float | None = None
        self.persistent_at: float | None = None
        # liveness marks (liveness.py): when data went unanswered, when handshake retries gave up
        self.unanswered_at: float | None = None
        self.gave_up_at: float | None = None
        # counters
        self.rx_bytes = self.tx_bytes = self.rx_packets = self.tx_packets = 0
        self.handshakes = 0
        self.handshake_initiations_sent = 0
        self.keepalives_sent = 0

    @property
    def preshared_key(self) -> bytes | None:
        """The 32-byte preshared key, or None (whitepaper 5.2); never shown in a repr."""
        return self._psk

    @property
    def public_key_b64(self) -> str:
        """The peer's public key in WireGuard's base64."""
        return base64.b64encode(self.public_key).decode()

    def __repr__(self) -> str:
        return (f"<Peer {self.public_key_b64[:8]}... endpoint={self.endpoint} "
                f"session={'yes' if self.current else 'no'}>")

    def usable(self, keypair: Keypair | None, now: float) -> bool:
        """Whether `keypair` may still send: younger than REJECT_AFTER_TIME, under REJECT_AFTER_MESSAGES."""
        return (keypair is not None and now - keypair.created < self.timers.reject_after_time
                and keypair.send_counter < self.timers.reject_after_messages)

    def has_session(self, now: float) -> bool:
        """Whether the current keypair is usable at `now`."""
        return self.usable(self.current, now)

    @property
    def handshake_in_flight(self) -> bool:
        """Whether an initiation of ours awaits its response (its retransmission is armed)."""
        return self.retransmit_at is not None

    def next_deadline(self) -> float | None:
        """The earliest armed timer of this peer (seconds), or None."""
        best = None
        for deadline in (self.retransmit_at, self.keepalive_at, self.new_handshake_at, self.zero_keys_at,
                         self.persistent_at):
            if deadline is not None and (best is None or deadline < best):
                best = deadline
        return best

    def stage(self, packet: bytes) -> bool:
        """Keep a packet until a session exists; the oldest goes when the queue is full (False then)."""
        dropped = len(self.staged) >= self.max_queued
        if dropped:
            self.staged.popleft()
        self.staged.append(packet)
        return not dropped

    def stats(self) -> dict[str, object]:
        """Counters and times of this peer (bytes, packets, seconds on the caller's clock)."""
        return {
            "endpoint": self.endpoint,
            "last_handshake": self.last_handshake_time,
            "last_receive": self.last_receive,
            "last_send": self.last_send,
            "rx_bytes": self.rx_bytes,
            "tx_bytes": self.tx_bytes,
            "rx_packets": self.rx_packets,
            "tx_packets": self.tx_packets,
            "handshakes": self.handshakes,
            "rekeys": max(0, self.handshakes - 1),
            "handshake_initiations_sent": self.handshake_initiations_sent,
            "keepalives_sent": self.keepalives_sent,
            "staged": len(self.staged),
            "session_age": None,
        }
