"""The PostgreSQL frontend/backend protocol 3.0 messages wgmagic writes itself (PostgreSQL docs, "Message
Formats"), sans-I/O; and `POSTGRES`, the forward protocol (wgmagic.proto.forwarding) of PostgreSQL's clients.
"""

from __future__ import annotations

import struct

from wgmagic.proto.forwarding import Goodbye

_LENGTH = struct.Struct("!I")


def error_response(message: str, *, severity: str = "FATAL", sqlstate: str = "08001") -> bytes:
    """An ErrorResponse ('E'): the fields S (localized severity), V (severity), C (SQLSTATE) and M (message),
    each a type byte and a NUL-terminated UTF-8 string, then a final NUL; the Int32 length counts itself.
    libpq reports it as the connection's error. Default SQLSTATE 08001: sqlclient_unable_to_establish_sqlconnection."""
    fields = (b"S" + severity.encode() + b"\x00" + b"V" + severity.encode() + b"\x00" + b"C" + sqlstate.encode()
              + b"\x00" + b"M" + message.encode("utf-8", "replace") + b"\x00\x00")
    return b"E" + _LENGTH.pack(len(fields) + 4) + fields


# The ports a PostgreSQL server (5432) or a PgBouncer in front of one (6432) listens on by convention: the
# default guess of Tunnel.forward when its caller names no protocol.
PORTS = frozenset({5432, 6432})
# SSLRequest and GSSENCRequest (protocol 3.0, "Message Formats"): Int32 length 8, then the codes 1234 5679 and
# 1234 5680.
ENCRYPTION_REQUESTS = (bytes.fromhex("0000000804d2162f"), bytes.fromhex("0000000804d21630"))
NO_ENCRYPTION = b"N"  # a server's answer to either request when it will not encrypt (53.2.10, 53.2.11)


class PostgresForward:
    """`wgmagic.proto.forwarding.ForwardProtocol` for PostgreSQL's clients (libpq and every driver that speaks
    protocol 3.0): libpq finds a server's Unix socket as DIR/.s.PGSQL.PORT, and shows a server's ErrorResponse
    to the user verbatim.

    libpq over TCP opens with an SSLRequest or GSSENCRequest (sslmode=prefer, the default) and reports an
    ErrorResponse to that only as "server sent an error response during SSL exchange". So such a request is
    answered "N" (no encryption, as a server without TLS does), the StartupMessage that follows is awaited,
    and the ErrorResponse comes after it. Any other opening gets the ErrorResponse at once."""

    name = "postgresql"

    def socket_name(self, port: int) -> str:
        """".s.PGSQL.PORT": where libpq looks for a server given host=DIR port=PORT."""
        return f".s.PGSQL.{port}"

    def goodbye(self, opening: bytes, reason: str) -> Goodbye:
        """An ErrorResponse (FATAL, SQLSTATE 08001) with `reason`; after "N" and the StartupMessage when
        `opening` is exactly an SSLRequest or GSSENCRequest."""
        final = error_response(reason)
        if bytes(opening) in ENCRYPTION_REQUESTS:
            return Goodbye(NO_ENCRYPTION, final, await_next=True)
        return Goodbye(b"", final)

    def __repr__(self) -> str:
        return "<ForwardProtocol postgresql>"


POSTGRES = PostgresForward()
