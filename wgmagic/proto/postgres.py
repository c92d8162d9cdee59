"""The PostgreSQL frontend/backend protocol 3.0 messages wgmagic writes itself (PostgreSQL docs, "Message
Formats"), sans-I/O."""

from __future__ import annotations

import struct

_LENGTH = struct.Struct("!I")


def error_response(message: str, *, severity: str = "FATAL", sqlstate: str = "08001") -> bytes:
    """An ErrorResponse ('E'): the fields S (localized severity), V (severity), C (SQLSTATE) and M (message),
    each a type byte and a NUL-terminated UTF-8 string, then a final NUL; the Int32 length counts itself.
    libpq reports it as the connection's error. Default SQLSTATE 08001: sqlclient_unable_to_establish_sqlconnection."""
    fields = (b"S" + severity.encode() + b"\x00" + b"V" + severity.encode() + b"\x00" + b"C" + sqlstate.encode()
              + b"\x00" + b"M" + message.encode("utf-8", "replace") + b"\x00\x00")
    return b"E" + _LENGTH.pack(len(fields) + 4) + fields
