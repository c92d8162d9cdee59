"""Whether a peer answers (whitepaper 6.2, 6.4): the device's own timers decide, the runtime only asks.

A live WireGuard peer answers data within KEEPALIVE_TIMEOUT (a passive keepalive at worst) and a handshake
initiation within a round trip. So a peer is *not answering* when WireGuard's own timers said so and nothing
came from it since: data went out and nothing came back for KEEPALIVE_TIMEOUT + REKEY_TIMEOUT (the device then
starts a new handshake, 6.2: `Peer.unanswered_at` is set when that timer fires) and that handshake also went
unanswered for REKEY_TIMEOUT (15 + 5 = 20 s with the whitepaper's constants); or the handshake retries gave up
after REKEY_ATTEMPT_TIME (`Peer.gave_up_at`). Idle tunnels are never "not answering": only unanswered traffic
counts. Any authenticated message from the peer clears both marks (`answered`), and the Endpoint's refusals
(endpoint.py: ICMP port unreachable counted per address).

Owns: the two marks' meaning. Never does I/O and never reads a clock: `now` comes in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from wgmagic.wireguard.peer import Peer
    from wgmagic.wireguard.timers import Timers


def data_unanswered(peer: Peer, now: float) -> None:
    """The new-handshake timer fired (data sent, KEEPALIVE_TIMEOUT + REKEY_TIMEOUT without an answer)."""
    if peer.unanswered_at is None:
        peer.unanswered_at = now


def handshake_gave_up(peer: Peer, now: float) -> None:
    """REKEY_ATTEMPT_TIME of retries went unanswered (whitepaper 6.4)."""
    peer.gave_up_at = now


def answered(peer: Peer) -> None:
    """An authenticated message came from the peer: whatever it left unanswered before is answered, and no
    address of its Endpoint is refusing."""
    peer.unanswered_at = peer.gave_up_at = None
    if peer.candidates.refusals:  # every authenticated packet comes here: no call when there is nothing to clear
        peer.candidates.answered()


def not_answering_since(peer: Peer, timers: Timers, now: float) -> float | None:
    """When the peer stopped answering (seconds, the caller's clock), or None while it answers.

    For unanswered data: the time the unanswered data was sent (the timer's start, KEEPALIVE_TIMEOUT +
    REKEY_TIMEOUT before it fired), once the handshake it started is REKEY_TIMEOUT late too. For handshakes
    that gave up: when they gave up."""
    if peer.unanswered_at is not None and now >= peer.unanswered_at + timers.rekey_timeout:
        return peer.unanswered_at - (timers.keepalive_timeout + timers.rekey_timeout)
    if peer.gave_up_at is not None and now >= peer.gave_up_at:
        return peer.gave_up_at
    return None
