"""The bulk source's known byte stream: a 1 MiB block from a seeded PRNG, repeated.

Both ends compute it the same way, so a transfer of any length can be checked by its sha256.
"""

from __future__ import annotations

import functools
import hashlib
import random
import socket
from collections.abc import Iterator

BLOCK_SIZE = 1 << 20
SEED = 20261125


@functools.cache
def block() -> bytes:
    return random.Random(SEED).randbytes(BLOCK_SIZE)


def iter_stream(size: int, chunk: int = BLOCK_SIZE) -> Iterator[bytes]:
    """The first `size` bytes of the stream, in pieces of at most `chunk` bytes."""
    data = block()
    view = memoryview(data)
    offset = 0
    while offset < size:
        start = offset % BLOCK_SIZE
        n = min(chunk, size - offset, BLOCK_SIZE - start)
        yield view[start:start + n].tobytes()
        offset += n


@functools.cache
def stream_sha256(size: int) -> str:
    digest = hashlib.sha256()
    for piece in iter_stream(size):
        digest.update(piece)
    return digest.hexdigest()


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    """`size` bytes from a blocking socket, or fewer when the other side closes first (the caller checks)."""
    data = bytearray()
    while len(data) < size:
        piece = sock.recv(size - len(data))
        if not piece:
            break
        data += piece
    return bytes(data)
