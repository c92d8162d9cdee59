"""Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s as WireGuard uses it (whitepaper section 5.4.2 and 5.4.3).

Pure functions of keys and messages. The chaining key and hash never leave this module except inside
`InitiatorState`, whose repr shows neither.
"""

from __future__ import annotations

import hmac
import struct
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from wgmagic.wireguard import crypto
from wgmagic.wireguard.messages import Initiation, Response, build_initiation, build_response

CONSTRUCTION = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
IDENTIFIER = b"WireGuard v1 zx2c4 Jason@zx2c4.com"
INITIAL_CHAIN = crypto.hash_(CONSTRUCTION)
INITIAL_HASH = crypto.hash_(INITIAL_CHAIN + IDENTIFIER)
ZERO_PSK = bytes(32)
_TAI64_EPOCH = 2**62


def tai64n(wall_seconds: float) -> bytes:
    """The 12-byte TAI64N label of `wall_seconds` (seconds since the Unix epoch), whitepaper 5.4.2."""
    seconds = int(wall_seconds)
    nanos = int((wall_seconds - seconds) * 1e9)
    return struct.pack(">QI", _TAI64_EPOCH + seconds, nanos)


@dataclass
class InitiatorState:
    """What an initiator keeps between sending an initiation and receiving the response."""

    sender_index: int
    ephemeral_private: X25519PrivateKey = field(repr=False)
    chaining_key: bytes = field(repr=False)
    hash: bytes = field(repr=False)
    sent_at: float = 0.0


@dataclass
class SessionKeys:
    """A completed handshake's transport keys (32 bytes each, whitepaper 5.4.5) and the two indices."""

    send: bytes = field(repr=False)
    receive: bytes = field(repr=False)
    local_index: int = 0
    remote_index: int = 0


def _ephemeral(private: bytes | None) -> tuple[X25519PrivateKey, bytes]:
    if private is None:
        return crypto.dh_generate()
    key = X25519PrivateKey.from_private_bytes(private)
    return key, key.public_key().public_bytes_raw()


def create_initiation(static: crypto.StaticKey, peer_public: bytes, sender_index: int,
                      wall_seconds: float, precomputed_ss: bytes, *, ephemeral: bytes | None = None
                      ) -> tuple[bytearray, InitiatorState]:
    """The handshake initiation (whitepaper 5.4.2) to `peer_public` (32 bytes), with mac1/mac2 zeroed (the
    caller adds them, `cookie.CookieGenerator.add_macs`), and the state to keep for the response.

    `precomputed_ss` is DH(our static, peer static); `ephemeral` the 32-byte ephemeral private key (the
    caller's randomness; None: generated here); `wall_seconds` the wall clock for the TAI64N timestamp.
    """
    ck = INITIAL_CHAIN
    h = crypto.hash_(INITIAL_HASH + peer_public)
    e_priv, e_pub = _ephemeral(ephemeral)
    ck = crypto.kdf(ck, e_pub, 1)[0]
    h = crypto.hash_(h + e_pub)
    ck, key = crypto.kdf(ck, crypto.dh(e_priv, peer_public), 2)
    static_enc = crypto.aead_encrypt(key, 0, static.public, h)
    h = crypto.hash_(h + static_enc)
    ck, key = crypto.kdf(ck, precomputed_ss, 2)
    timestamp_enc = crypto.aead_encrypt(key, 0, tai64n(wall_seconds), h)
    h = crypto.hash_(h + timestamp_enc)
    message = build_initiation(sender_index, e_pub, static_enc, timestamp_enc)
    return message, InitiatorState(sender_index, e_priv, ck, h)


@dataclass
class ConsumedInitiation:
    """A decrypted initiation (responder side): the initiator's static public key, its TAI64N timestamp, its
    index and ephemeral, and the chaining key and hash to continue with (never shown in a repr)."""

    peer_public: bytes
    timestamp: bytes
    remote_index: int
    remote_ephemeral: bytes
    chaining_key: bytes = field(repr=False)
    hash: bytes = field(repr=False)


def consume_initiation(static: crypto.StaticKey, msg: Initiation) -> ConsumedInitiation | None:
    """Decrypt an initiation addressed to us (whitepaper 5.4.2, responder side); None if it does not
    authenticate. mac1 is the caller's to check first (`cookie.CookieChecker.mac1_ok`)."""
    try:
        ck = INITIAL_CHAIN
        h = crypto.hash_(INITIAL_HASH + static.public)
        ck = crypto.kdf(ck, msg.ephemeral, 1)[0]
        h = crypto.hash_(h + msg.ephemeral)
        ck, key = crypto.kdf(ck, static.dh(msg.ephemeral), 2)
        peer_public = crypto.aead_decrypt(key, 0, msg.static, h)
        h = crypto.hash_(h + msg.static)
        ck, key = crypto.kdf(ck, static.dh(peer_public), 2)
        timestamp = crypto.aead_decrypt(key, 0, msg.timestamp, h)
        h = crypto.hash_(h + msg.timestamp)
    except (InvalidTag, ValueError):
        return None  # ValueError: a low-order point gives an all-zero shared secret, which cryptography rejects
    return ConsumedInitiation(peer_public, timestamp, msg.sender, msg.ephemeral, ck, h)


def create_response(consumed: ConsumedInitiation, sender_index: int, psk: bytes | None, *,
                    ephemeral: bytes | None = None) -> tuple[bytearray, SessionKeys]:
    """The handshake response (whitepaper 5.4.3) to a consumed initiation, with mac1/mac2 zeroed, and the
    session's keys (responder's view: `send` is the responder-to-initiator key). `psk`: 32 bytes or None
    (all zeros); `ephemeral`: the 32-byte ephemeral private key (None: generated here)."""
    ck, h = consumed.chaining_key, consumed.hash
    e_priv, e_pub = _ephemeral(ephemeral)
    ck = crypto.kdf(ck, e_pub, 1)[0]
    h = crypto.hash_(h + e_pub)
    ck = crypto.kdf(ck, crypto.dh(e_priv, consumed.remote_ephemeral), 1)[0]
    ck = crypto.kdf(ck, crypto.dh(e_priv, consumed.peer_public), 1)[0]
    ck, tau, key = crypto.kdf(ck, psk or ZERO_PSK, 3)
    h = crypto.hash_(h + tau)
    empty = crypto.aead_encrypt(key, 0, b"", h)
    message = build_response(sender_index, consumed.remote_index, e_pub, empty)
    initiator_send, responder_send = crypto.kdf(ck, b"", 2)
    return message, SessionKeys(send=responder_send, receive=initiator_send, local_index=sender_index,
                                remote_index=consumed.remote_index)


def consume_response(state: InitiatorState, static: crypto.StaticKey, msg: Response,
                     psk: bytes | None) -> SessionKeys | None:
    """Finish the handshake as initiator (whitepaper 5.4.3); the session keys, or None if the response does
    not authenticate (wrong keys, wrong psk, low-order ephemeral)."""
    try:
        ck, h = state.chaining_key, state.hash
        ck = crypto.kdf(ck, msg.ephemeral, 1)[0]
        h = crypto.hash_(h + msg.ephemeral)
        ck = crypto.kdf(ck, crypto.dh(state.ephemeral_private, msg.ephemeral), 1)[0]
        ck = crypto.kdf(ck, static.dh(msg.ephemeral), 1)[0]
        ck, tau, key = crypto.kdf(ck, psk or ZERO_PSK, 3)
        h = crypto.hash_(h + tau)
        crypto.aead_decrypt(key, 0, msg.empty, h)
    except (InvalidTag, ValueError):
        return None
    initiator_send, responder_send = crypto.kdf(ck, b"", 2)
    return SessionKeys(send=initiator_send, receive=responder_send, local_index=state.sender_index,
                       remote_index=msg.sender)


def timestamp_newer(new: bytes, old: bytes | None) -> bool:
    """TAI64N timestamps compare as big-endian bytes; equal means a replayed initiation."""
    return old is None or (new > old and not hmac.compare_digest(new, old))
