"""Fly.io's WireGuard-over-WebSocket framing (the byte stream flyctl writes to Fly's gateways), sans-I/O.

The framing, as flyctl's `wg/ws.go` speaks it (facts only; this is written from the description):
- the client opens a WebSocket to `wss://<the Endpoint's host>:443/` and first writes the 4-byte big-endian
  magic `0x2FACED77`;
- then every WireGuard datagram as a record: a 4-byte big-endian length, then that many bytes;
- a record of length zero (four zero bytes) is a keepalive, written after a second with nothing sent, and
  skipped by the reader;
- the bytes travel in WebSocket *text* messages that are not UTF-8 and whose boundaries mean nothing: both
  sides read all messages as one byte stream (a length may be split across messages, a message may hold
  several records).

`FlyStreamDecoder.feed(data)` takes whatever arrived, in any split, and returns the datagrams it completed.
Malformed input (a wrong magic, a record longer than `MAX_RECORD`) never raises: the decoder stops, `failed`
says why, and the caller closes the WebSocket (the stream cannot be resynchronised). It buffers at most one
record. No socket, no clock: the WebSocket transport (`wgmagic.runtime.websocket`) and the relay
(`wgmagic.runtime.services.wsrelay`) drive it.
"""

from __future__ import annotations

import struct
from collections import Counter

__all__ = ["KEEPALIVE", "KEEPALIVE_AFTER", "MAGIC", "MAX_RECORD", "FlyStreamDecoder", "encode_record",
           "encode_records"]

MAGIC = struct.pack(">I", 0x2FACED77)
KEEPALIVE = b"\x00\x00\x00\x00"
KEEPALIVE_AFTER = 1.0  # seconds with nothing sent before a keepalive record (flyctl's interval)
# A record holds one WireGuard message, at most one UDP payload (65,535 bytes); anything longer is not ours.
MAX_RECORD = 65535
_LENGTH = struct.Struct(">I")


def encode_record(datagram: bytes | bytearray | memoryview) -> bytes:
    """One datagram as a record: its 4-byte big-endian length, then the bytes. ValueError over MAX_RECORD."""
    if len(datagram) > MAX_RECORD:
        raise ValueError(f"a datagram of {len(datagram)} bytes is over the framing's {MAX_RECORD}")
    return _LENGTH.pack(len(datagram)) + bytes(datagram)


def encode_records(datagrams: list[bytes]) -> bytes:
    """Several datagrams as consecutive records, for one WebSocket message (boundaries carry no meaning)."""
    return b"".join(encode_record(d) for d in datagrams)


class FlyStreamDecoder:
    """Reassembles records from the stream of WebSocket message payloads.

    `expect_magic=True` on the server side (the client's stream starts with MAGIC); the client side reads
    records from the first byte. `feed(data) -> list[bytes]`: the datagrams completed by `data`, in order;
    zero-length records are counted in `keepalives` and skipped. After a framing error `failed` holds the reason
    (a key of `drops`) and `feed` returns [] for ever.
    """

    def __init__(self, *, expect_magic: bool = False) -> None:
        self._buffer = bytearray()
        self._need_magic = expect_magic
        self.failed: str | None = None
        self.keepalives = 0
        self.drops: Counter[str] = Counter()

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        if self.failed is not None:
            return []
        buffer = self._buffer
        buffer += data
        if self._need_magic:
            if len(buffer) < 4:
                if bytes(buffer) != MAGIC[: len(buffer)]:
                    return self._fail("fly_bad_magic")
                return []
            if bytes(buffer[:4]) != MAGIC:
                return self._fail("fly_bad_magic")
            del buffer[:4]
            self._need_magic = False
        out: list[bytes] = []
        offset = 0
        available = len(buffer)
        while available - offset >= 4:
            (length,) = _LENGTH.unpack_from(buffer, offset)
            if length > MAX_RECORD:
                del buffer[:offset]
                self._fail("fly_record_too_long")
                return out
            if available - offset - 4 < length:
                break
            if length == 0:
                self.keepalives += 1
            else:
                out.append(bytes(buffer[offset + 4: offset + 4 + length]))
            offset += 4 + length
        if offset:
            del buffer[:offset]
        return out

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete record (at most MAX_RECORD + 4)."""
        return len(self._buffer)

    def _fail(self, reason: str) -> list[bytes]:
        self.failed = reason
        self.drops[reason] += 1
        self._buffer.clear()
        return []
