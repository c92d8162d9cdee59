"""How WireGuard datagrams are laid out inside a WebSocket: one swappable piece of the WebSocket transport and
the relay.

A framing turns datagrams into WebSocket message payloads and WebSocket data frames back into datagrams, for
one connection (it may keep state: a byte stream split anywhere). Both ends use it: the client
(`wgmagic.runtime.websocket.WebSocketTransport`) and the server (`wgmagic.runtime.services.wsrelay`, `wgmagic
relay --framing NAME`). No socket, no clock: the caller writes what `start()`, `encode()` and `keepalive()`
return, and feeds each received data frame to `decode()`.

- "binary" (`BinaryFraming`): one datagram per binary message (RFC 6455 section 5.6); a text message or a
  fragment is not a datagram (dropped, counted `not_binary`). What `wgmagic relay` has always spoken.
- "fly" (`FlyFraming`): Fly.io's framing (wgmagic/proto/flyframe.py, after flyctl's `wg/ws.go`): the client
  writes the magic first, then length-prefixed records in text messages of raw, non-UTF-8 bytes whose boundaries
  mean nothing; a zero-length record after a second with nothing sent. Every data frame (text, binary or a
  continuation) is read as one byte stream; the library never sees these texts as text (the callers take frames
  off its sans-I/O protocol before it would decode them).

A new framing is one class with this shape and one line in FRAMINGS (its name also in wgmagic.via.FRAMINGS, so
`NAME+wss://` URLs parse).
"""

from __future__ import annotations

import importlib
from collections import Counter
from collections.abc import Iterable
from typing import Protocol

from wgmagic.proto.flyframe import KEEPALIVE, KEEPALIVE_AFTER, MAGIC, MAX_RECORD, FlyStreamDecoder, encode_record

# RFC 6455 section 5.2 opcodes of data frames, as the callers hand them to decode().
OP_CONTINUATION, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
# Fly's framing: records are packed into messages of at most this many bytes (a record longer goes alone).
FLY_MESSAGE_TARGET = 16 * 1024
# ... and a message received may be this long (a gateway may pack many records into one).
FLY_MAX_MESSAGE = 256 * 1024


class Framing(Protocol):
    """One connection's framing (loop thread only).

    name: the framing's name ("binary", "fly"); text: whether messages go out as text frames; max_message: the
    largest message the WebSocket library should accept (its max_size); keepalive_after: seconds with nothing
    sent before `keepalive()` should be written (None: never). `failed`: why the stream cannot go on (the caller
    closes the WebSocket, code 1002), or None. Drops are counted in the `counters` given at construction, under
    the `prefix` given."""

    name: str
    text: bool
    max_message: int
    keepalive_after: float | None

    def __init__(self, counters: Counter[str], prefix: str = "", *, server: bool = False) -> None: ...

    @property
    def failed(self) -> str | None: ...

    def start(self) -> list[bytes]:
        """Payloads to write first, once the WebSocket is open (before any datagram)."""
        ...

    def encode(self, datagrams: list[bytes]) -> list[bytes]:
        """The message payloads that carry `datagrams`, in order."""
        ...

    def keepalive(self) -> bytes | None:
        """A payload that carries nothing and keeps the stream alive, or None."""
        ...

    def decode(self, opcode: int, data: bytes, fin: bool) -> list[bytes]:
        """The datagrams a received data frame completes (opcode: OP_TEXT, OP_BINARY or OP_CONTINUATION)."""
        ...


class BinaryFraming:
    """One WireGuard datagram per binary WebSocket message (a `wgmagic relay`)."""

    name = "binary"
    text = False
    max_message = 65536  # one UDP payload at most
    keepalive_after: float | None = None

    def __init__(self, counters: Counter[str], prefix: str = "", *, server: bool = False) -> None:
        self.counters = counters
        self.prefix = prefix
        del server  # both ends are alike

    @property
    def failed(self) -> str | None:
        return None  # a message stream never loses its place

    def start(self) -> list[bytes]:
        return []

    def encode(self, datagrams: list[bytes]) -> list[bytes]:
        return datagrams

    def keepalive(self) -> bytes | None:
        return None

    def decode(self, opcode: int, data: bytes, fin: bool) -> list[bytes]:
        if opcode == OP_BINARY and fin:
            return [data]
        self.counters[f"{self.prefix}not_binary"] += 1  # text, fragments: not a WireGuard datagram
        return []


class FlyFraming:
    """Fly.io's framing: magic (client to server), then length-prefixed records in text messages, read as one
    byte stream. `server=True` expects the magic; the client writes it in `start()`. Counts (under `prefix`):
    `fly_keepalives` received, and the framing errors `fly_bad_magic` / `fly_record_too_long`."""

    name = "fly"
    text = True
    max_message = FLY_MAX_MESSAGE
    keepalive_after: float | None = KEEPALIVE_AFTER

    def __init__(self, counters: Counter[str], prefix: str = "", *, server: bool = False) -> None:
        self.counters = counters
        self.prefix = prefix
        self.server = server
        self.decoder = FlyStreamDecoder(expect_magic=server)

    @property
    def failed(self) -> str | None:
        return self.decoder.failed

    def start(self) -> list[bytes]:
        return [] if self.server else [MAGIC]

    def encode(self, datagrams: list[bytes]) -> list[bytes]:
        messages: list[bytes] = []
        pending: list[bytes] = []
        size = 0
        for datagram in datagrams:
            if not datagram or len(datagram) > MAX_RECORD:
                self.counters[f"{self.prefix}fly_not_sendable"] += 1  # empty would read as a keepalive
                continue
            record = encode_record(datagram)
            if pending and size + len(record) > FLY_MESSAGE_TARGET:
                messages.append(b"".join(pending))
                pending, size = [], 0
            pending.append(record)
            size += len(record)
        if pending:
            messages.append(b"".join(pending))
        return messages

    def keepalive(self) -> bytes | None:
        return KEEPALIVE

    def decode(self, opcode: int, data: bytes, fin: bool) -> list[bytes]:
        del opcode, fin  # text, binary or a continuation: all one byte stream
        decoder = self.decoder
        if decoder.failed is not None:
            return []
        before = decoder.keepalives
        datagrams = decoder.feed(data)
        if decoder.keepalives != before:
            self.counters[f"{self.prefix}fly_keepalives"] += decoder.keepalives - before
        if decoder.failed is not None:
            self.counters[f"{self.prefix}{decoder.failed}"] += 1
        return datagrams


# The registry: one line per framing ("module:class", imported on first use); names as in wgmagic.via.FRAMINGS.
FRAMINGS: dict[str, str] = {
    "binary": "wgmagic.runtime.wsframing:BinaryFraming",
    "fly": "wgmagic.runtime.wsframing:FlyFraming",
}


def framing_class(name: str) -> type[Framing]:
    """The framing registered as `name` (ValueError naming the known ones if none)."""
    try:
        module, _, attribute = FRAMINGS[name].partition(":")
    except KeyError:
        raise ValueError(f"unknown framing {name!r}: expected one of {', '.join(FRAMINGS)}") from None
    factory: type[Framing] = getattr(importlib.import_module(module), attribute)
    return factory


def framing_names() -> Iterable[str]:
    """The registered framings' names."""
    return FRAMINGS.keys()
