"""Transport keys of one session (whitepaper 5.4.5-5.4.6): counters, the replay window, one AEAD per direction."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

if TYPE_CHECKING:
    from wgmagic.wireguard.handshake import SessionKeys

# wireguard-go and Linux keep a ring of 128 64-bit blocks and accept counters within 127 blocks of the newest.
REPLAY_WINDOW = 8192 - 64
_WINDOW_MASK = (1 << REPLAY_WINDOW) - 1


class ReplayWindow:
    """Sliding window of seen counters (RFC 6479 in spirit): bit i set means counter newest - i was seen.

    `full` is True while every counter of the window was seen (bits == the whole mask): the steady state of
    in-order traffic, where the next counter only moves `newest` on, without shifting a window-wide integer."""

    __slots__ = ("bits", "full", "newest", "started")

    def __init__(self) -> None:
        self.newest = 0
        self.bits = 0
        self.started = False
        self.full = False

    def check(self, counter: int) -> bool:
        """Whether the counter is new; does not record it (record only after the packet authenticates)."""
        if not self.started or counter > self.newest:
            return True
        behind = self.newest - counter
        return behind < REPLAY_WINDOW and not (self.bits >> behind) & 1

    def record(self, counter: int) -> bool:
        """Record an authenticated counter; False if it was seen or is too old (then drop the packet)."""
        if counter == self.newest + 1 and self.full:
            self.newest = counter  # the window stays full: (mask << 1 | 1) & mask == mask
            return True
        if not self.started:
            self.started, self.newest, self.bits = True, counter, 1
            return True
        if counter > self.newest:
            shift = counter - self.newest
            self.bits = ((self.bits << shift) | 1) & _WINDOW_MASK if shift < REPLAY_WINDOW else 1
            self.newest = counter
            self.full = shift == 1 and self.bits == _WINDOW_MASK
            return True
        behind = self.newest - counter
        if behind >= REPLAY_WINDOW or (self.bits >> behind) & 1:
            return False
        self.bits |= 1 << behind
        self.full = self.bits == _WINDOW_MASK
        return True


class Keypair:
    """One session's transport keys: `send_aead` / `receive_aead` (ChaCha20-Poly1305 with the session's
    keys, whitepaper 5.4.6), the next send counter, the receive replay window, our and the peer's index,
    and `created` (seconds, the caller's clock; the session expires REJECT_AFTER_TIME later)."""

    __slots__ = ("created", "initiator", "local_index", "receive_aead", "remote_index", "replay", "send_aead",
                 "send_counter")

    def __init__(self, send_key: bytes, receive_key: bytes, *, initiator: bool, local_index: int,
                 remote_index: int, created: float) -> None:
        self.send_aead = ChaCha20Poly1305(send_key)
        self.receive_aead = ChaCha20Poly1305(receive_key)
        self.send_counter = 0
        self.replay = ReplayWindow()
        self.initiator = initiator
        self.local_index = local_index
        self.remote_index = remote_index
        self.created = created

    @classmethod
    def from_session(cls, keys: SessionKeys, *, initiator: bool, created: float) -> Keypair:
        """The keypair of a completed handshake's `SessionKeys` (whitepaper 5.4.5)."""
        return cls(keys.send, keys.receive, initiator=initiator, local_index=keys.local_index,
                   remote_index=keys.remote_index, created=created)

    def __repr__(self) -> str:
        role = "initiator" if self.initiator else "responder"
        return f"<Keypair {role} local={self.local_index:#010x} sent={self.send_counter}>"
