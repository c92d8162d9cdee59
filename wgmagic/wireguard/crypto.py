"""The primitives WireGuard is built from (whitepaper section 5.4): BLAKE2s, HKDF, X25519, (X)ChaCha20-Poly1305.

`cryptography` supplies X25519, ChaCha20-Poly1305 and the raw ChaCha20 block function; it has no XChaCha20,
so HChaCha20 is derived from a ChaCha20 keystream block (see hchacha20).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

KEY_LEN = 32
_SIGMA = struct.unpack("<4I", b"expand 32-byte k")
_WORDS16 = struct.Struct("<16I")
_NONCE = struct.Struct("<4xQ")


def hash_(data: bytes) -> bytes:
    """HASH(data): BLAKE2s-256 (whitepaper 5.4)."""
    return hashlib.blake2s(data).digest()


def mac(key: bytes, data: bytes) -> bytes:
    """Keyed BLAKE2s with a 16-byte digest: WireGuard's MAC (mac1, mac2, cookies)."""
    return hashlib.blake2s(data, key=key, digest_size=16).digest()


def hmac_(key: bytes, data: bytes) -> bytes:
    """HMAC(key, data) with BLAKE2s-256 (RFC 2104)."""
    return hmac.new(key, data, hashlib.blake2s).digest()


def kdf(key: bytes, data: bytes, n: int) -> list[bytes]:
    """HKDF with HMAC-BLAKE2s, n outputs of 32 bytes (KDF1..KDF3)."""
    prk = hmac_(key, data)
    outputs: list[bytes] = []
    previous = b""
    for i in range(1, n + 1):
        previous = hmac_(prk, previous + bytes((i,)))
        outputs.append(previous)
    return outputs


def aead_encrypt(key: bytes, counter: int, plaintext: bytes, aad: bytes) -> bytes:
    """AEAD(key, counter, plaintext, aad): ChaCha20-Poly1305 (RFC 8439) with the 64-bit little-endian
    counter as nonce (whitepaper 5.4); returns ciphertext || 16-byte tag."""
    return ChaCha20Poly1305(key).encrypt(_NONCE.pack(counter), plaintext, aad)


def aead_decrypt(key: bytes, counter: int, ciphertext: bytes, aad: bytes) -> bytes:
    """Raises cryptography.exceptions.InvalidTag when authentication fails."""
    return ChaCha20Poly1305(key).decrypt(_NONCE.pack(counter), ciphertext, aad)


def hchacha20(key: bytes, nonce16: bytes) -> bytes:
    """HChaCha20 (draft-irtf-cfrg-xchacha section 2.2).

    A ChaCha20 block is rounds(state) + state. With the 16-byte nonce in words 12..15 (which is how
    `cryptography` lays out its 16-byte counter||nonce), subtracting the known words 0..3 (constants) and
    12..15 (nonce) from the keystream leaves the rounds' output that HChaCha20 returns.
    """
    encryptor = Cipher(algorithms.ChaCha20(key, nonce16), mode=None).encryptor()
    block = _WORDS16.unpack(encryptor.update(bytes(64)))
    nonce_words = struct.unpack("<4I", nonce16)
    out = [(block[i] - _SIGMA[i]) & 0xFFFFFFFF for i in range(4)]
    out += [(block[12 + i] - nonce_words[i]) & 0xFFFFFFFF for i in range(4)]
    return struct.pack("<8I", *out)


def xaead_encrypt(key: bytes, nonce24: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """XAEAD: XChaCha20-Poly1305 (draft-irtf-cfrg-xchacha 2.3) with a 24-byte nonce; ciphertext || tag."""
    subkey = hchacha20(key, nonce24[:16])
    return ChaCha20Poly1305(subkey).encrypt(bytes(4) + nonce24[16:], plaintext, aad)


def xaead_decrypt(key: bytes, nonce24: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    """The inverse of xaead_encrypt; raises cryptography.exceptions.InvalidTag when authentication fails."""
    subkey = hchacha20(key, nonce24[:16])
    return ChaCha20Poly1305(subkey).decrypt(bytes(4) + nonce24[16:], ciphertext, aad)


class StaticKey:
    """An X25519 private key whose repr never shows it."""

    __slots__ = ("_private", "public")

    def __init__(self, private: bytes) -> None:
        if len(private) != KEY_LEN:
            raise ValueError("a WireGuard private key is 32 bytes")
        self._private = X25519PrivateKey.from_private_bytes(private)
        self.public = self._private.public_key().public_bytes_raw()

    def dh(self, public: bytes) -> bytes:
        """X25519 with a peer's 32-byte public key (RFC 7748). Raises ValueError for a low-order point."""
        return self._private.exchange(X25519PublicKey.from_public_bytes(public))

    def __repr__(self) -> str:
        return f"<StaticKey public={base64.b64encode(self.public).decode()[:8]}...>"


def generate_private_key() -> bytes:
    """32 random bytes as an X25519 private key (what `wg genkey` makes, before base64)."""
    return X25519PrivateKey.generate().private_bytes_raw()


def public_key(private: bytes) -> bytes:
    """The 32-byte X25519 public key of a private key."""
    return StaticKey(private).public


def generate_keypair() -> tuple[str, str]:
    """A new (private, public) pair in WireGuard's base64, as `wg genkey` and `wg pubkey` print them."""
    private = generate_private_key()
    return base64.b64encode(private).decode(), base64.b64encode(public_key(private)).decode()


def dh_generate() -> tuple[X25519PrivateKey, bytes]:
    """A fresh ephemeral X25519 key pair: (private key object, 32-byte public key)."""
    private = X25519PrivateKey.generate()
    return private, private.public_key().public_bytes_raw()


def dh(private: X25519PrivateKey, public: bytes) -> bytes:
    """X25519 of an ephemeral private key with a 32-byte public key. Raises ValueError for a low-order point."""
    return private.exchange(X25519PublicKey.from_public_bytes(public))


def encode_key(raw: bytes) -> str:
    """A 32-byte key in WireGuard's base64 form."""
    return base64.b64encode(raw).decode()
