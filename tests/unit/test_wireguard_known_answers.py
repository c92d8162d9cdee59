"""Known answers for WireGuard's crypto, each against a second source: the draft's published HChaCha20
vector, libsodium (PyNaCl) for X25519 / ChaCha20-Poly1305 / XChaCha20-Poly1305, `cryptography`'s HKDF for the
KDF chain, and a Noise_IKpsk2 handshake re-derived step by step here from the whitepaper (section 5.4)."""

from __future__ import annotations

import hashlib
import ipaddress
import struct

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

from wgmagic.wireguard import crypto
from wgmagic.wireguard.cookie import CookieChecker, CookieGenerator
from wgmagic.wireguard.handshake import (
    consume_initiation,
    consume_response,
    create_initiation,
    create_response,
    tai64n,
)
from wgmagic.wireguard.keypair import Keypair
from wgmagic.wireguard.messages import (
    INITIATION_MAC1_AT,
    INITIATION_MAC2_AT,
    RESPONSE_MAC1_AT,
    parse_cookie_reply,
    parse_initiation,
    parse_response,
)

sodium = pytest.importorskip("nacl.bindings")

# Fixed keys (any 32 bytes are a valid X25519 private key: clamping happens inside the DH).
I_STATIC = bytes.fromhex("e8b5c4c3ed2f1b8ba1c2d3e4f5061728394a5b6c7d8e9fa0b1c2d3e4f5061748")
R_STATIC = bytes.fromhex("58a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e4f")
I_EPHEMERAL = bytes.fromhex("c0ffee00112233445566778899aabbccddeeff00112233445566778899aabb4c")
R_EPHEMERAL = bytes.fromhex("d00dfeed0123456789abcdef0123456789abcdef0123456789abcdef01234567")
PSK = bytes(range(100, 132))
WALL = 1_700_000_000.25
I_INDEX, R_INDEX = 0x01020304, 0xA0B0C0D0


# ---- an independent derivation: the whitepaper's formulas with other libraries' primitives ---------------
def HASH(data: bytes) -> bytes:  # the whitepaper's names for its functions
    return hashlib.blake2s(data).digest()


def KDF(key: bytes, data: bytes, n: int) -> list[bytes]:
    out = HKDF(hashes.BLAKE2s(32), 32 * n, salt=key, info=b"").derive(data)  # RFC 5869 with HMAC-BLAKE2s
    return [out[i:i + 32] for i in range(0, 32 * n, 32)]


def DH(private: bytes, public: bytes) -> bytes:
    return sodium.crypto_scalarmult(private, public)


def PUB(private: bytes) -> bytes:
    return sodium.crypto_scalarmult_base(private)


def AEAD(key: bytes, counter: int, plain: bytes, aad: bytes) -> bytes:
    return sodium.crypto_aead_chacha20poly1305_ietf_encrypt(plain, aad, bytes(4) + struct.pack("<Q", counter), key)


def MAC(key: bytes, data: bytes) -> bytes:
    return hashlib.blake2s(data, key=key, digest_size=16).digest()


def reference_handshake(psk: bytes) -> dict[str, bytes]:
    """Whitepaper 5.4.2-5.4.5, written out from scratch."""
    c = HASH(b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s")
    h = HASH(c + b"WireGuard v1 zx2c4 Jason@zx2c4.com")
    s_i, s_r, e_i = PUB(I_STATIC), PUB(R_STATIC), PUB(I_EPHEMERAL)
    h = HASH(h + s_r)
    c = KDF(c, e_i, 1)[0]
    h = HASH(h + e_i)
    c, k = KDF(c, DH(I_EPHEMERAL, s_r), 2)
    static = AEAD(k, 0, s_i, h)
    h = HASH(h + static)
    c, k = KDF(c, DH(I_STATIC, s_r), 2)
    timestamp = AEAD(k, 0, struct.pack(">QI", 2**62 + int(WALL), int((WALL % 1) * 1e9)), h)
    h = HASH(h + timestamp)
    initiation = struct.pack("<I", 1) + struct.pack("<I", I_INDEX) + e_i + static + timestamp
    mac1 = MAC(HASH(b"mac1----" + s_r), initiation)
    initiation += mac1 + bytes(16)
    e_r = PUB(R_EPHEMERAL)
    c = KDF(c, e_r, 1)[0]
    h = HASH(h + e_r)
    c = KDF(c, DH(R_EPHEMERAL, e_i), 1)[0]
    c = KDF(c, DH(R_EPHEMERAL, s_i), 1)[0]
    c, tau, k = KDF(c, psk, 3)
    h = HASH(h + tau)
    empty = AEAD(k, 0, b"", h)
    response = struct.pack("<I", 2) + struct.pack("<II", R_INDEX, I_INDEX) + e_r + empty
    response += MAC(HASH(b"mac1----" + s_i), response) + bytes(16)
    t_send_i, t_send_r = KDF(c, b"", 2)
    return {"initiation": initiation, "response": response, "i_send": t_send_i, "r_send": t_send_r}


# ---- primitives ---------------------------------------------------------------------------------------------
def test_hchacha20_draft_vector():
    # draft-irtf-cfrg-xchacha-03 section 2.2.1
    key = bytes(range(32))
    nonce = bytes.fromhex("000000090000004a0000000031415927")
    assert crypto.hchacha20(key, nonce).hex() == (
        "82413b4227b27bfed30e42508a877d73a0f9e4d58a74a853c12ec41326d3ecdc")


@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=32, max_size=32), st.binary(min_size=24, max_size=24), st.binary(max_size=200),
       st.binary(max_size=40))
def test_xchacha20poly1305_agrees_with_libsodium(key, nonce, plain, aad):
    ours = crypto.xaead_encrypt(key, nonce, plain, aad)
    assert ours == sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(plain, aad, nonce, key)
    assert crypto.xaead_decrypt(key, nonce, ours, aad) == plain


@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=32, max_size=32), st.binary(max_size=100), st.integers(1, 3))
def test_kdf_is_hkdf_with_hmac_blake2s(key, data, n):
    assert crypto.kdf(key, data, n) == KDF(key, data, n)


def test_kdf_fixed_answer():
    # KDF1..3(C, X) of the construction's first chaining key, recorded from `cryptography`'s HKDF.
    c = HASH(b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s")
    assert c.hex() == "60e26daef327efc02ec335e2a025d2d016eb4206f87277f52d38d1988b78cd36"
    assert crypto.kdf(c, b"", 3) == KDF(c, b"", 3)


def test_x25519_and_aead_agree_with_libsodium():
    assert crypto.public_key(I_STATIC) == PUB(I_STATIC)
    assert crypto.StaticKey(I_STATIC).dh(PUB(R_STATIC)) == DH(R_STATIC, PUB(I_STATIC))
    key = bytes(range(32))
    assert crypto.aead_encrypt(key, 7, b"payload", b"ad") == AEAD(key, 7, b"payload", b"ad")


# ---- the handshake ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("psk", [None, PSK])
def test_full_handshake_against_fixed_keys(psk):
    expected = reference_handshake(psk or bytes(32))
    i_static, r_static = crypto.StaticKey(I_STATIC), crypto.StaticKey(R_STATIC)
    message, state = create_initiation(i_static, r_static.public, I_INDEX, WALL, i_static.dh(r_static.public),
                                       ephemeral=I_EPHEMERAL)
    initiation = CookieGenerator(r_static.public).add_macs(message, INITIATION_MAC1_AT, 0.0)
    assert initiation == expected["initiation"]

    consumed = consume_initiation(r_static, parse_initiation(initiation))
    assert consumed is not None and consumed.peer_public == i_static.public
    assert consumed.timestamp == tai64n(WALL)
    message, r_keys = create_response(consumed, R_INDEX, psk, ephemeral=R_EPHEMERAL)
    response = CookieGenerator(i_static.public).add_macs(message, RESPONSE_MAC1_AT, 0.0)
    assert response == expected["response"]

    i_keys = consume_response(state, i_static, parse_response(response), psk)
    assert i_keys is not None
    assert (i_keys.send, i_keys.receive) == (expected["i_send"], expected["r_send"])
    assert (r_keys.send, r_keys.receive) == (expected["r_send"], expected["i_send"])
    assert (i_keys.local_index, i_keys.remote_index) == (I_INDEX, R_INDEX)

    # The first transport message under those keys (whitepaper 5.4.6) is what libsodium makes of it.
    keypair = Keypair.from_session(i_keys, initiator=True, created=0.0)
    sealed = keypair.send_aead.encrypt(bytes(12), b"\x45" + bytes(15), None)
    assert sealed == AEAD(expected["i_send"], 0, b"\x45" + bytes(15), b"")


def test_handshake_with_the_wrong_psk_fails():
    i_static, r_static = crypto.StaticKey(I_STATIC), crypto.StaticKey(R_STATIC)
    message, state = create_initiation(i_static, r_static.public, I_INDEX, WALL, i_static.dh(r_static.public),
                                       ephemeral=I_EPHEMERAL)
    consumed = consume_initiation(r_static, parse_initiation(bytes(message)))
    response, _ = create_response(consumed, R_INDEX, PSK, ephemeral=R_EPHEMERAL)
    assert consume_response(state, i_static, parse_response(bytes(response)), None) is None


# ---- the cookie path (whitepaper 5.4.4 and 5.4.7) -----------------------------------------------------------
def test_mac1_cookie_reply_and_mac2_against_independent_bytes():
    r_static = crypto.StaticKey(R_STATIC)
    i_static = crypto.StaticKey(I_STATIC)
    source = ("198.18.0.7", 51820)
    secret, nonce = bytes(range(200, 232)), bytes(range(24))
    checker = CookieChecker(r_static.public, rng=lambda n: {24: nonce, 32: secret}[n], refresh=120.0)
    generator = CookieGenerator(r_static.public, refresh=120.0)

    message, _ = create_initiation(i_static, r_static.public, I_INDEX, WALL, i_static.dh(r_static.public),
                                   ephemeral=I_EPHEMERAL)
    first = generator.add_macs(bytearray(message), INITIATION_MAC1_AT, 10.0)
    mac1 = MAC(HASH(b"mac1----" + r_static.public), first[:INITIATION_MAC1_AT])
    assert first[INITIATION_MAC1_AT:INITIATION_MAC2_AT] == mac1
    assert first[INITIATION_MAC2_AT:] == bytes(16)  # no cookie yet: mac2 is zeros
    assert checker.mac1_ok(first, INITIATION_MAC1_AT)

    reply = checker.cookie_reply(first, INITIATION_MAC1_AT, I_INDEX, source, 10.0)
    cookie = MAC(secret, ipaddress.ip_address(source[0]).packed + struct.pack(">H", source[1]))
    encrypted = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(
        cookie, mac1, nonce, HASH(b"cookie--" + r_static.public))
    assert reply == struct.pack("<II", 3, I_INDEX) + nonce + encrypted

    parsed = parse_cookie_reply(reply)
    assert generator.consume_reply(parsed.nonce, parsed.encrypted_cookie, 11.0)
    second = generator.add_macs(bytearray(message), INITIATION_MAC1_AT, 11.0)
    assert second[INITIATION_MAC2_AT:] == MAC(cookie, second[:INITIATION_MAC2_AT])
    assert checker.mac2_ok(second, INITIATION_MAC2_AT, source, 11.0)
    assert not checker.mac2_ok(second, INITIATION_MAC2_AT, ("198.18.0.8", 51820), 11.0)
