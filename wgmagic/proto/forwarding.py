"""What a forward knows of the application protocol it carries, behind one small interface, sans-I/O.

Owns: `ForwardProtocol`, the interface the caller of a forward picks (Tunnel.forward's `protocol=`): the name
of the forward's Unix socket, and how to turn a client away with words its driver shows (`Goodbye`). The
neutral protocol (`NEUTRAL`) names its socket after the port and closes without a word; PostgreSQL's is
`wgmagic.proto.postgres.POSTGRES`. Never: sockets, clocks or waiting; the forward (runtime/services/forward.py)
does the I/O these decisions ask for.

A new database protocol is one class with these two methods, beside postgres.py's, and the caller that
selects it (tunnel.url()'s routing by URL scheme, or the SQL dialect).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Goodbye:
    """How to turn away a client that opened with `opening` bytes: send `reply` (may be empty), then, when
    `await_next`, wait (bounded by the forward) for the client's next message and read it, then send `final`
    and close. Without `await_next`, `final` follows `reply` at once."""

    reply: bytes
    final: bytes
    await_next: bool = False


class ForwardProtocol(Protocol):
    """The application protocol of a forward's clients, as far as a forward needs it."""

    name: str  # "postgresql", "neutral": shown in logs and reprs

    def socket_name(self, port: int) -> str:
        """The file name of the forward's Unix socket for a target on `port` (libpq: ".s.PGSQL.PORT")."""
        ...

    def goodbye(self, opening: bytes, reason: str) -> Goodbye | None:
        """How to refuse a client whose first bytes were `opening` (possibly empty or cut short) with `reason`
        (one line of text), or None to close the connection without a word. Never raises on any bytes."""
        ...


class NeutralProtocol:
    """A forward that knows nothing of what it carries: its socket is named after the port ("PORT.sock") and
    a refused client is closed without a word (MySQL/MariaDB, HTTP, any TCP service)."""

    name = "neutral"

    def socket_name(self, port: int) -> str:
        """"PORT.sock"."""
        return f"{port}.sock"

    def goodbye(self, opening: bytes, reason: str) -> Goodbye | None:
        """None: close without a word (no protocol to say it in)."""
        return None

    def __repr__(self) -> str:
        return "<ForwardProtocol neutral>"


NEUTRAL = NeutralProtocol()
