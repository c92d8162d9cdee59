"""What PyMySQL does not read of the MariaDB protocol: the extended capabilities and extended type info.

A result's column definitions say what each column is. MySQL sends its JSON as protocol type JSON (245);
MariaDB's JSON is LONGTEXT, and the only place a result says "this column is JSON" is the column definition's
extended metadata (`format=json`), which a MariaDB server (10.5.2 and later) sends when the client announces
MARIADB_CLIENT_EXTENDED_TYPE_INFO. The same goes for the other types MariaDB builds on a base type (`uuid`,
`inet6`, `point`...: the extended metadata's type name). PyMySQL 1.x/2.x neither announces the capability nor
parses the block, so `TypedConnection` adds both:

- the server's extended capabilities are read from its greeting (the 4 bytes at the end of the 10-byte
  filler, present when the server clears CLIENT_MYSQL);
- when the server has the capability, the handshake response clears CLIENT_MYSQL (bit 0) and carries the
  client's extended capabilities in the last 4 of its 23 reserved bytes;
- column definitions are then parsed with `ExtendedFieldPacket`, which reads the extended block between the
  column's names and its fixed fields and keeps it as `.type_name` and `.format` (None when absent).

Against MySQL, or a MariaDB without the capability, nothing changes (the fields get `.type_name = .format =
None`). Sources: MariaDB's client/server protocol documentation, "Connection" (Initial Handshake Packet,
Handshake Response Packet) and "Result Set Packets" (Column Definition Packet).
"""

from __future__ import annotations

import struct
from typing import Any

from pymysql.connections import Connection, MysqlPacket
from pymysql.err import OperationalError
from pymysql.protocol import FieldDescriptorPacket

CLIENT_MYSQL = 1  # CLIENT_LONG_PASSWORD in MySQL; a MariaDB server clears it, a MariaDB client too
MARIADB_CLIENT_EXTENDED_TYPE_INFO = 1 << 3  # bit 35 of the capabilities: bit 3 of the extended 4 bytes
EXTENDED_TYPE_NAME, EXTENDED_FORMAT = 0, 1  # the keys of the extended metadata's entries
CR_MALFORMED_PACKET = 2027  # the client's error for a packet it cannot parse (errmsg.h)
_RESPONSE_HEADER = 32  # capabilities, max packet size, collation, 19 + 4 reserved/extended bytes
_RESERVED = bytes(23)


class MetadataError(ValueError):
    """A column definition's extended metadata block does not parse (bytes from the server: never trusted)."""


def read_lenenc(data: bytes, pos: int) -> tuple[int, int]:
    """A length-encoded integer at `pos`: (value, position after it). MetadataError when truncated or 0xFF."""
    if pos >= len(data):
        raise MetadataError("truncated length")
    first = data[pos]
    if first < 0xFB:
        return first, pos + 1
    width = {0xFC: 2, 0xFD: 3, 0xFE: 8}.get(first)
    if width is None or pos + 1 + width > len(data):
        raise MetadataError(f"bad length prefix 0x{first:02x}")
    return int.from_bytes(data[pos + 1:pos + 1 + width], "little"), pos + 1 + width


def parse_extended_metadata(block: bytes) -> dict[int, str]:
    """The entries of one column's extended metadata: {key: value}, key 0 the type name, 1 the format.

    Layout: repeated (int<1> key, string<lenenc> value) filling the block. Unknown keys are kept (callers read
    only 0 and 1); values are ASCII type and format names, decoded leniently. MetadataError when an entry runs
    past the block."""
    entries: dict[int, str] = {}
    pos = 0
    while pos < len(block):
        key = block[pos]
        size, pos = read_lenenc(block, pos + 1)
        if pos + size > len(block):
            raise MetadataError("an entry runs past the extended metadata block")
        entries[key] = block[pos:pos + size].decode("ascii", "replace").lower()
        pos += size
    return entries


class ExtendedFieldPacket(FieldDescriptorPacket):  # type: ignore[misc]
    """A column definition carrying MariaDB's extended metadata: PyMySQL's fields plus `type_name` and
    `format` (str or None). Only used on a connection where both sides announced
    MARIADB_CLIENT_EXTENDED_TYPE_INFO, so the block is always there (possibly empty)."""

    type_name: str | None
    format: str | None

    def _parse_field_descriptor(self, encoding: str) -> None:
        self.catalog = self.read_length_coded_string()
        self.db = self.read_length_coded_string()
        self.table_name = self.read_length_coded_string().decode(encoding)
        self.org_table = self.read_length_coded_string().decode(encoding)
        self.name = self.read_length_coded_string().decode(encoding)
        self.org_name = self.read_length_coded_string().decode(encoding)
        entries = parse_extended_metadata(self.read(self.read_length_encoded_integer()))
        self.type_name = entries.get(EXTENDED_TYPE_NAME)
        self.format = entries.get(EXTENDED_FORMAT)
        # The fixed fields as PyMySQL reads them: length of fixed fields (0x0C), collation, column length,
        # type, flags, decimals, 2 unused bytes.
        self.charsetnr, self.length, self.type_code, self.flags, self.scale = self.read_struct("<xHIBHBxx")


def mariadb_capabilities(greeting: bytes) -> int:
    """The extended (upper 32-bit) capabilities in a MariaDB server's Initial Handshake Packet, 0 when the
    server is MySQL (CLIENT_MYSQL set) or the packet is too short to hold them.

    Layout: protocol version, NUL-terminated version, connection id (4), scramble part 1 (8), filler (1),
    capabilities low (2), collation (1), status (2), capabilities high (2), plugin data length (1), filler (6),
    MariaDB's extended capabilities (4)."""
    end = greeting.find(b"\0", 1)
    if end < 0:
        return 0
    pos = end + 1 + 4 + 8 + 1
    if len(greeting) < pos + 2 + 1 + 2 + 2 + 1 + 6 + 4:
        return 0
    (low,) = struct.unpack_from("<H", greeting, pos)
    if low & CLIENT_MYSQL:
        return 0
    (extended,) = struct.unpack_from("<I", greeting, pos + 2 + 1 + 2 + 2 + 1 + 6)
    return int(extended)


def with_extended_capabilities(payload: bytes, extended: int) -> bytes:
    """A Handshake Response (or SSL Request) with CLIENT_MYSQL cleared and `extended` in its last 4 reserved
    bytes (offset 28): how a MariaDB client announces its extended capabilities."""
    (flags,) = struct.unpack_from("<I", payload)
    return struct.pack("<I", flags & ~CLIENT_MYSQL) + payload[4:28] + struct.pack("<I", extended) + payload[32:]


class TypedConnection(Connection):  # type: ignore[misc]
    """A PyMySQL connection that asks a MariaDB server for extended type info and reads it: each result
    field then has `.type_name` and `.format` (None when the server sent none, and always against MySQL).
    `extended_type_info` says whether the server agreed."""

    extended_type_info = False
    _handshaking = False

    def _get_server_information(self) -> None:
        read = self._read_packet
        greeting: list[bytes] = []

        def first_packet(packet_type: Any = MysqlPacket) -> Any:
            packet = read(packet_type)
            greeting.append(packet.get_all_data())
            return packet

        self._read_packet = first_packet  # type: ignore[method-assign]  # PyMySQL reads the greeting with this one call; keep its bytes
        try:
            super()._get_server_information()
        finally:
            del self._read_packet
        server = mariadb_capabilities(greeting[0]) if greeting else 0
        self.extended_type_info = bool(server & MARIADB_CLIENT_EXTENDED_TYPE_INFO)

    def _request_authentication(self) -> None:
        self._handshaking = self.extended_type_info
        try:
            super()._request_authentication()
        finally:
            self._handshaking = False

    def write_packet(self, payload: bytes) -> None:
        # The SSL Request and the Handshake Response both open with the 32-byte header whose last 23 bytes
        # PyMySQL leaves zero; nothing else PyMySQL writes during authentication has that shape.
        if self._handshaking and len(payload) >= _RESPONSE_HEADER and payload[9:32] == _RESERVED:
            payload = with_extended_capabilities(payload, MARIADB_CLIENT_EXTENDED_TYPE_INFO)
        super().write_packet(payload)

    def _read_packet(self, packet_type: Any = MysqlPacket) -> Any:
        if packet_type is not FieldDescriptorPacket or not self.extended_type_info:
            return super()._read_packet(packet_type)
        try:
            return super()._read_packet(ExtendedFieldPacket)
        except MetadataError as exc:  # the rest of the result cannot be read in step: the session is over
            self._force_close()
            raise OperationalError(CR_MALFORMED_PACKET, f"Malformed packet: {exc}") from None

