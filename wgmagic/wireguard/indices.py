"""The receiver-index table (whitepaper 5.4.1, wireguard-go's indextable.go): a random 32-bit index per
handshake in flight and per keypair, so a message's receiver field finds its peer and keys in one lookup.

Owns: drawing unused indices from the injected randomness, and the index -> (peer, keypair) map. Never
decides what a message means; the device does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from wgmagic.wireguard.keypair import Keypair
    from wgmagic.wireguard.peer import Peer

Entry = tuple["Peer", "Keypair | None"]  # keypair None: a handshake we initiated, not yet answered


class IndexTable:
    """index (int, 0..2**32-1) -> (peer, keypair or None). `rng(n) -> n bytes` draws new indices."""

    def __init__(self, rng: Callable[[int], bytes]) -> None:
        self.rng = rng
        self._entries: dict[int, Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def new_index(self) -> int:
        """An index no live handshake or keypair holds (whitepaper 5.4.2: chosen at random)."""
        while True:
            index = int.from_bytes(self.rng(4), "little")
            if index not in self._entries:
                return index

    def get(self, index: int) -> Entry | None:
        return self._entries.get(index)

    def set(self, index: int, peer: Peer, keypair: Keypair | None) -> None:
        self._entries[index] = (peer, keypair)

    def forget(self, index: int) -> None:
        self._entries.pop(index, None)

    def retire(self, keypair: Keypair | None) -> None:
        """Forget a keypair's index (its messages are then dropped as `unknown_receiver_index`)."""
        if keypair is not None:
            self._entries.pop(keypair.local_index, None)
