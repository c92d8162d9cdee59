"""mac1/mac2 and cookie replies (whitepaper section 5.4.4 and 5.4.7).

mac1 proves the sender knows our public key; mac2 (only checked under load) proves it can receive at its
source address, because the cookie it keys with was sent there.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable

from cryptography.exceptions import InvalidTag

from wgmagic.wireguard import crypto

LABEL_MAC1 = b"mac1----"
LABEL_COOKIE = b"cookie--"


class CookieChecker:
    """Our side as the receiver of handshake messages: checks MACs, makes cookie replies."""

    def __init__(self, own_public: bytes, rng: Callable[[int], bytes] = os.urandom,
                 refresh: float = 120.0) -> None:
        self.mac1_key = crypto.hash_(LABEL_MAC1 + own_public)
        self.cookie_key = crypto.hash_(LABEL_COOKIE + own_public)
        self.rng = rng
        self.refresh = refresh
        self._secret = b""
        self._secret_born = float("-inf")

    def __repr__(self) -> str:
        return "<CookieChecker>"

    def mac1_ok(self, message: bytes, mac1_at: int) -> bool:
        """Whether the message's mac1 (at byte `mac1_at`) is MAC(HASH(LABEL_MAC1 || our public), message before
        it) (whitepaper 5.4.4)."""
        expected = crypto.mac(self.mac1_key, message[:mac1_at])
        return hmac.compare_digest(expected, message[mac1_at:mac1_at + 16])

    def _cookie_for(self, source: tuple[str, int], now: float) -> bytes:
        if now - self._secret_born >= self.refresh:
            self._secret, self._secret_born = self.rng(32), now
        return crypto.mac(self._secret, _source_bytes(source))

    def mac2_ok(self, message: bytes, mac2_at: int, source: tuple[str, int], now: float) -> bool:
        """Whether the message's mac2 is keyed with the cookie we would give `source` (ip, port) now; False when
        no live secret exists (whitepaper 5.4.4, 5.4.7)."""
        if now - self._secret_born >= self.refresh:
            return False  # no live secret: no cookie we gave out can still be valid
        cookie = crypto.mac(self._secret, _source_bytes(source))
        expected = crypto.mac(cookie, message[:mac2_at])
        return hmac.compare_digest(expected, message[mac2_at:mac2_at + 16])

    def cookie_reply(self, message: bytes, mac1_at: int, sender_index: int, source: tuple[str, int],
                     now: float) -> bytes:
        """A cookie reply message (type 3) for a handshake message from `source`: the cookie encrypted with
        XChaCha20-Poly1305 under HASH(LABEL_COOKIE || our public), with the message's mac1 as associated data
        (whitepaper 5.4.7)."""
        from wgmagic.wireguard.messages import build_cookie_reply

        nonce = self.rng(24)
        cookie = self._cookie_for(source, now)
        mac1 = message[mac1_at:mac1_at + 16]
        return build_cookie_reply(sender_index, nonce, crypto.xaead_encrypt(self.cookie_key, nonce, cookie, mac1))


class CookieGenerator:
    """Our side as the sender of handshake messages to one peer: adds mac1, and mac2 while a cookie is fresh."""

    def __init__(self, peer_public: bytes, refresh: float = 120.0) -> None:
        self.mac1_key = crypto.hash_(LABEL_MAC1 + peer_public)
        self.cookie_key = crypto.hash_(LABEL_COOKIE + peer_public)
        self.refresh = refresh
        self._cookie: bytes | None = None
        self._cookie_born = float("-inf")
        self.last_mac1: bytes | None = None

    def __repr__(self) -> str:
        return f"<CookieGenerator cookie={'held' if self._cookie else 'none'}>"

    def add_macs(self, message: bytearray, mac1_at: int, now: float) -> bytes:
        """Fill mac1 (and mac2 while a cookie from the peer is younger than `refresh` seconds) into `message` at
        `mac1_at`; returns the finished bytes (whitepaper 5.4.4)."""
        mac1 = crypto.mac(self.mac1_key, bytes(message[:mac1_at]))
        message[mac1_at:mac1_at + 16] = mac1
        self.last_mac1 = mac1
        if self._cookie is not None and now - self._cookie_born < self.refresh:
            message[mac1_at + 16:mac1_at + 32] = crypto.mac(self._cookie, bytes(message[:mac1_at + 16]))
        return bytes(message)

    def consume_reply(self, nonce: bytes, encrypted_cookie: bytes, now: float) -> bool:
        """Decrypt a cookie reply against the last mac1 we sent; True and the cookie is kept if it authenticates
        (whitepaper 5.4.7)."""
        if self.last_mac1 is None:
            return False
        try:
            cookie = crypto.xaead_decrypt(self.cookie_key, nonce, encrypted_cookie, self.last_mac1)
        except InvalidTag:
            return False
        self._cookie, self._cookie_born = cookie, now
        return True


def _source_bytes(source: tuple[str, int]) -> bytes:
    import ipaddress

    return ipaddress.ip_address(source[0]).packed + source[1].to_bytes(2, "big")
