"""What each of a peer's timers does when it expires (whitepaper 6; wireguard-go's timers.go `expired*`).

The deadlines live on the `Peer` (absolute seconds, None when not armed); the device arms them as protocol
events happen and calls `fire_due(device, now)` from `Device.handle_timers`. Each handler is named after the
timer it serves. Owns: the expiry rules. Never does I/O; `now` comes in. Knows the device only through
`ExpiryHost`, what it uses of it (no import of device.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from wgmagic.wireguard import liveness
from wgmagic.wireguard.events import HandshakeAttemptsExhausted

if TYPE_CHECKING:
    from collections import Counter
    from collections.abc import Mapping

    from wgmagic.wireguard.events import WireGuardEvent
    from wgmagic.wireguard.indices import IndexTable
    from wgmagic.wireguard.peer import Peer
    from wgmagic.wireguard.timers import Timers


class ExpiryHost(Protocol):
    """What expiry.py uses of the device whose timers fire (`wgmagic.wireguard.device.Device` is one): its
    peers by public key, its timer constants, its drop counters by reason, its receiver-index table, and the
    actions a timer takes. `now` is seconds, the device's clock."""

    @property
    def peers(self) -> Mapping[bytes, Peer]: ...

    @property
    def timers(self) -> Timers: ...

    @property
    def drops(self) -> Counter[str]: ...

    @property
    def indices(self) -> IndexTable: ...

    def send_initiation(self, peer: Peer, now: float, *, retry: bool) -> None:
        """A handshake initiation to `peer`; unless `retry`, none while one is in flight or recent."""
        ...

    def send_keepalive_to(self, peer: Peer, now: float, *, persistent: bool = False) -> None:
        """A keepalive to `peer` if a session is up; else, if `persistent`, a handshake."""
        ...

    def move_endpoint(self, peer: Peer, endpoint: tuple[str, int]) -> None:
        """Send to `peer` at `endpoint` (its name's next address) from now on, and report the move."""
        ...

    def announce(self, event: WireGuardEvent) -> None:
        """Queue `event` for the device's next events()."""
        ...


def fire_due(device: ExpiryHost, now: float) -> None:
    """Fire every peer timer due at `now`, in wireguard-go's order."""
    for peer in device.peers.values():
        if peer.retransmit_at is not None and now >= peer.retransmit_at:
            retransmit_handshake(device, peer, now)
        if peer.new_handshake_at is not None and now >= peer.new_handshake_at:
            new_handshake(device, peer, now)
        if peer.keepalive_at is not None and now >= peer.keepalive_at:
            peer.keepalive_at = None
            device.send_keepalive_to(peer, now)  # a passive keepalive: data came, we had nothing to say (6.5)
        if peer.persistent_at is not None and now >= peer.persistent_at:
            persistent_keepalive(device, peer, now)
        if peer.zero_keys_at is not None and now >= peer.zero_keys_at:
            zero_key_material(device, peer)


def retransmit_handshake(device: ExpiryHost, peer: Peer, now: float, *, move: bool = True) -> None:
    """REKEY_TIMEOUT (+ jitter) without a response (6.4): resend, to the Endpoint name's next address if it
    has one (endpoint.py; `move` False: the caller just moved it); after REKEY_ATTEMPT_TIME give up, drop what
    was staged and report it."""
    if move and not peer.has_session(now):
        moved = peer.candidates.next_on_timeout(peer.endpoint)
        if moved is not None:
            device.move_endpoint(peer, moved)
    peer.retransmit_at = None
    if peer.handshake_attempts < device.timers.max_handshake_attempts:
        peer.handshake_attempts += 1
        device.send_initiation(peer, now, retry=True)
        return
    attempts = peer.handshake_attempts + 1
    peer.handshake_attempts = 0
    if peer.staged:
        device.drops["handshake_gave_up"] += len(peer.staged)
        peer.staged.clear()
    if peer.handshake is not None:
        device.indices.forget(peer.handshake.sender_index)
        peer.handshake = None
    if peer.zero_keys_at is None:
        peer.zero_keys_at = now + 3 * device.timers.reject_after_time
    liveness.handshake_gave_up(peer, now)
    device.announce(HandshakeAttemptsExhausted(peer.public_key, attempts))


def new_handshake(device: ExpiryHost, peer: Peer, now: float) -> None:
    """Data went out and nothing came back for KEEPALIVE_TIMEOUT + REKEY_TIMEOUT (6.2): the session may be dead
    on the other side; mark it unanswered (liveness.py) and start a handshake."""
    peer.new_handshake_at = None
    liveness.data_unanswered(peer, now)
    peer.last_handshake_sent = None
    device.send_initiation(peer, now, retry=False)


def persistent_keepalive(device: ExpiryHost, peer: Peer, now: float) -> None:
    """PersistentKeepalive seconds without sending (6.5): send one, bringing a session up if needed."""
    peer.persistent_at = None
    device.send_keepalive_to(peer, now, persistent=True)
    if peer.persistent_keepalive and peer.persistent_at is None:
        peer.persistent_at = now + peer.persistent_keepalive


def zero_key_material(device: ExpiryHost, peer: Peer) -> None:
    """3 x REJECT_AFTER_TIME without a new session (6.3): erase every keypair and the handshake in flight."""
    peer.zero_keys_at = None
    for keypair in (peer.previous, peer.current, peer.next):
        device.indices.retire(keypair)
    peer.previous = peer.current = peer.next = None
    if peer.handshake is not None:
        device.indices.forget(peer.handshake.sender_index)
        peer.handshake = None
