"""Transport keys of one session: counters, the replay window, one AEAD object per direction."""

from __future__ import annotations

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

# wireguard-go and Linux keep a ring of 128 64-bit blocks and accept counters within 127 blocks of the newest.
REPLAY_WINDOW = 8192 - 64
_WINDOW_MASK = (1 << REPLAY_WINDOW) - 1


class ReplayWindow:
    """Sliding window of seen counters (RFC 6479 in spirit): bit i set means counter newest - i was seen."""

    __slots__ = ("bits", "newest", "started")

    def __init__(self) -> None:
        self.newest = 0
        self.bits = 0
        self.started = False

    def check(self, counter: int) -> bool:
        """Whether the counter is new; does not record it (record only after the packet authenticates)."""
        if not self.started or counter > self.newest:
            return True
        behind = self.newest - counter
        return behind < REPLAY_WINDOW and not (self.bits >> behind) & 1

    def record(self, counter: int) -> bool:
        if not self.started:
            self.started, self.newest, self.bits = True, counter, 1
            return True
        if counter > self.newest:
            shift = counter - self.newest
            self.bits = ((self.bits << shift) | 1) & _WINDOW_MASK if shift < REPLAY_WINDOW else 1
            self.newest = counter
            return True
        behind = self.newest - counter
        if behind >= REPLAY_WINDOW or (self.bits >> behind) & 1:
            return False
        self.bits |= 1 << behind
        return True


class Keypair:
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

    def __repr__(self) -> str:
        role = "initiator" if self.initiator else "responder"
        return f"<Keypair {role} local={self.local_index:#010x} sent={self.send_counter}>"
