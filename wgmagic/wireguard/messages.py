"""The four WireGuard message formats (whitepaper section 5.4): parse and build, nothing else.

Parsers return None for anything malformed; the caller counts the drop. Integers are little-endian.
"""

from __future__ import annotations

import struct
from typing import NamedTuple, TypeVar

INITIATION, RESPONSE, COOKIE_REPLY, TRANSPORT = 1, 2, 3, 4
INITIATION_LEN, RESPONSE_LEN, COOKIE_REPLY_LEN, TRANSPORT_HEADER_LEN = 148, 92, 64, 16
TRANSPORT_MIN_LEN = TRANSPORT_HEADER_LEN + 16

_INITIATION = struct.Struct("<I I 32s 48s 28s 16s 16s")
_RESPONSE = struct.Struct("<I I I 32s 16s 16s 16s")
_COOKIE_REPLY = struct.Struct("<I I 24s 32s")
TRANSPORT_HEADER = struct.Struct("<I I Q")

# Offsets of mac1 and mac2: each MAC covers the message up to its own start.
INITIATION_MAC1_AT, INITIATION_MAC2_AT = 116, 132
RESPONSE_MAC1_AT, RESPONSE_MAC2_AT = 60, 76


class Initiation(NamedTuple):
    """Handshake initiation, type 1, 148 bytes (whitepaper 5.4.2); integers little-endian."""

    sender: int
    ephemeral: bytes
    static: bytes
    timestamp: bytes
    mac1: bytes
    mac2: bytes


class Response(NamedTuple):
    """Handshake response, type 2, 92 bytes (whitepaper 5.4.3)."""

    sender: int
    receiver: int
    ephemeral: bytes
    empty: bytes
    mac1: bytes
    mac2: bytes


class CookieReply(NamedTuple):
    """Cookie reply, type 3, 64 bytes (whitepaper 5.4.7)."""

    receiver: int
    nonce: bytes
    encrypted_cookie: bytes


def message_type(data: bytes) -> int | None:
    """The type of a datagram if its 4-byte header is well formed (type 1..4, three zero bytes)."""
    if len(data) < 4 or data[1] or data[2] or data[3] or not 1 <= data[0] <= 4:
        return None
    return data[0]


_Message = TypeVar("_Message", Initiation, Response, CookieReply)


def _parse(data: bytes, length: int, kind: int, layout: struct.Struct, fields: type[_Message]) -> _Message | None:
    """A handshake message's fields after its type word, or None if its length or header is not that of `kind`."""
    if len(data) != length or message_type(data) != kind:
        return None
    return fields._make(layout.unpack(data)[1:])


def parse_initiation(data: bytes) -> Initiation | None:
    """The fields of a 148-byte initiation, or None if the length or header is wrong."""
    return _parse(data, INITIATION_LEN, INITIATION, _INITIATION, Initiation)


def build_initiation(sender: int, ephemeral: bytes, static: bytes, timestamp: bytes) -> bytearray:
    """The message with zeroed MACs; the cookie layer fills them in."""
    return bytearray(_INITIATION.pack(INITIATION, sender, ephemeral, static, timestamp, bytes(16), bytes(16)))


def parse_response(data: bytes) -> Response | None:
    """The fields of a 92-byte response, or None if the length or header is wrong."""
    return _parse(data, RESPONSE_LEN, RESPONSE, _RESPONSE, Response)


def build_response(sender: int, receiver: int, ephemeral: bytes, empty: bytes) -> bytearray:
    """A response with mac1/mac2 zeroed (the caller fills them)."""
    return bytearray(_RESPONSE.pack(RESPONSE, sender, receiver, ephemeral, empty, bytes(16), bytes(16)))


def parse_cookie_reply(data: bytes) -> CookieReply | None:
    """The fields of a 64-byte cookie reply, or None if the length or header is wrong."""
    return _parse(data, COOKIE_REPLY_LEN, COOKIE_REPLY, _COOKIE_REPLY, CookieReply)


def build_cookie_reply(receiver: int, nonce: bytes, encrypted_cookie: bytes) -> bytes:
    """A 64-byte cookie reply to the sender of index `receiver`."""
    return _COOKIE_REPLY.pack(COOKIE_REPLY, receiver, nonce, encrypted_cookie)
