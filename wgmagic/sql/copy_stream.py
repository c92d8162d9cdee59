"""PostgreSQL binary COPY decoded while it arrives: bounded chunks of bytes into per-column pieces.

The bulk path of `%%wgsql` reads the CopyData messages of `COPY (query) TO STDOUT (FORMAT binary)` straight
from libpq (wgmagic.sql.results) and hands them here about `CHUNK_BYTES` at a time, with the message lengths.
Each chunk is decoded at once into a `Piece` per column and passed on (a DataFrame builder, an Arrow table
builder, a Parquet writer: wgmagic.sql.outputs), and its bytes are dropped: the memory a result needs is the
size of its decoded columns plus one chunk, not the whole COPY stream and then the columns again.

The stream's format is PostgreSQL's binary COPY file format (docs, "COPY", "Binary Format"; see
wgmagic.sql.binary_copy). The server sends one row per CopyData message (protocol docs, "COPY Operations"),
so with the message lengths a chunk's rows are walked column by column with numpy, all rows at once. Bytes
that do not follow that shape (a chunk that ends inside a row or inside a value, glued messages, no lengths)
are walked row by row and an unfinished row is kept for the next chunk; both walks give the same pieces.

Fixed-width values (integers, floats, bool, date, timestamp, timestamptz, interval) are kept as numpy arrays
of their wire values, UTF-8 text as an Arrow string array, and every other carried type as Python values
from psycopg's binary loader (as the row path has them). What a piece becomes (a pandas column in the row
path's dtype, an Arrow array) is wgmagic.sql.outputs' part.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from wgmagic.sql.binary_copy import (
    BOOL_OID,
    DATE_OID,
    FLOAT_WIDTHS,
    INT_WIDTHS,
    INTERVAL_OID,
    SIGNATURE,
    TIMESTAMP_OID,
    TIMESTAMPTZ_OID,
    UTF8_TEXT_OIDS,
    VOID_OID,
    BulkDecodeError,
    LoadOne,
    _IrregularStream,
    _walk_vectorised,
    fixed_width,
    interval_fields,
)

CHUNK_BYTES = 8 << 20  # bytes of COPY data decoded at a time
MAX_HEADER_EXTENSION = 1 << 20  # the format defines none; a longer one is not a PostgreSQL stream
TIME_OIDS = (DATE_OID, TIMESTAMP_OID, TIMESTAMPTZ_OID)


@dataclass
class Piece:
    """One column's values for a run of rows, as decoded from the wire.

    kind: "int" (int64 array), "float" (float64 array; NULLs hold 0), "bool" (bool array), "time" (int64
    array: days from 2000-01-01 for a date, microseconds from 2000-01-01 00:00 UTC for timestamp[tz]),
    "interval" (a tuple of int64 arrays: microseconds, days, months), "text" (a pyarrow LargeStringArray with
    its NULLs; a ChunkedArray once pieces are joined), "void" (no values) or "loose" (a list of Python values,
    None for NULL). null: a numpy bool array, True where the value is NULL; its length is the piece's row
    count. The arrays are the piece's own: turning it into a pandas column may reuse them in place."""

    kind: str
    oid: int
    null: Any
    values: Any

    def __len__(self) -> int:
        return len(self.null)


def decode_piece(data: Any, offsets: Any, sizes: Any, oid: int, load_one: LoadOne,
                 utf8: bool) -> Piece:
    """The fields of one column (byte offsets and lengths into `data`, -1: NULL) as a Piece.

    `load_one(oid)` gives a callable that loads one field's bytes (psycopg's binary loader for that oid).
    Raises BulkDecodeError for a fixed-width value of the wrong length or text that is not UTF-8."""
    import numpy as np

    buf = np.frombuffer(data, dtype=np.uint8)
    null = sizes < 0

    def fixed(fmt: str) -> Any:
        return fixed_width(buf, offsets, sizes, fmt, oid)

    if oid in INT_WIDTHS:
        return Piece("int", oid, null, fixed(INT_WIDTHS[oid]).astype(np.int64))
    if oid in FLOAT_WIDTHS:
        return Piece("float", oid, null, fixed(FLOAT_WIDTHS[oid]).astype(np.float64))
    if oid == BOOL_OID:
        return Piece("bool", oid, null, fixed(">u1") != 0)
    if oid in TIME_OIDS:
        return Piece("time", oid, null, fixed(">i4" if oid == DATE_OID else ">i8").astype(np.int64))
    if oid == INTERVAL_OID:
        return Piece("interval", oid, null, interval_fields(buf, offsets, sizes))
    if oid == VOID_OID:
        return Piece("void", oid, null, None)
    if oid in UTF8_TEXT_OIDS and utf8:
        return Piece("text", oid, null, utf8_array(data, offsets, np.maximum(sizes, 0), null))
    load = load_one(oid)
    view = memoryview(data)
    return Piece("loose", oid, null, [None if size < 0 else load(view[start:start + size])
                                      for start, size in zip(offsets.tolist(), sizes.tolist(), strict=True)])


def utf8_array(data: Any, offsets: Any, sizes: Any, null: Any) -> Any:
    """Text fields as one pyarrow LargeStringArray (NULL where `null`), Arrow doing the copy and the UTF-8 check.

    The fields and the bytes between them alternate along the buffer, so one binary array with offsets
    start0, end0, start1, end1, ... holds every field at an even index; `take` packs those (a NULL index
    gives a NULL)."""
    import numpy as np
    import pyarrow as pa

    count = len(sizes)
    bounds = np.empty(2 * count + 1, dtype=np.int64)
    bounds[0:-1:2] = offsets
    bounds[1::2] = offsets + sizes
    bounds[-1] = bounds[-2] if count else 0
    if count and bounds.min() < 0:
        raise BulkDecodeError("a text field lies outside the data")
    interleaved = pa.LargeBinaryArray.from_buffers(pa.large_binary(), 2 * count,
                                                   [None, pa.py_buffer(bounds), pa.py_buffer(data)])
    indices = pa.array(np.arange(0, 2 * count, 2, dtype=np.int64), mask=null if null.any() else None)
    packed = interleaved.take(indices)
    try:
        return packed.cast(pa.large_string())
    except pa.ArrowInvalid as exc:
        raise BulkDecodeError(f"a text value is not valid UTF-8 ({exc})") from None


Emit = Callable[[list[Piece], int], None]  # (one piece per column, rows)


class StreamDecoder:
    """Binary COPY bytes in, pieces out: `feed` each chunk as it arrives, then `finish`.

    `emit(pieces, rows)` is called once per chunk that completes at least one row, with one Piece per column
    (an empty list for a zero-column result). Raises BulkDecodeError for a stream that is not binary COPY of
    `oids`' columns, and from `finish` for one that ended early. Memory: the current chunk, plus the bytes
    of an unfinished row (at most one row) carried to the next."""

    def __init__(self, oids: Sequence[int], load_one: LoadOne, utf8: bool, emit: Emit) -> None:
        self.oids = list(oids)
        self.ncols = len(self.oids)
        self._load_one = load_one
        self._utf8 = utf8
        self._emit = emit
        self._tail = bytearray()  # an unfinished header or row
        self._header: int | None = None  # the header's length, once read
        self.ended = False  # the trailer was seen
        self.rows = 0
        self.bytes = 0

    def feed(self, data: Any, lengths: Sequence[int] | None = None) -> None:
        """The next bytes of the stream. `lengths`: the CopyData message lengths `data` is made of (one row
        each, as PostgreSQL sends them), which lets the rows be walked all at once; None for bytes cut
        anywhere."""
        if not len(data):
            return
        if self.ended:
            raise BulkDecodeError("the binary COPY stream goes on after its trailer")
        self.bytes += len(data)
        if lengths is not None and len(lengths) and not self._tail:
            try:
                self._messages(data, lengths)
                return
            except _IrregularStream:
                pass
        self._walk(data)

    def finish(self) -> None:
        """The stream has ended: raises BulkDecodeError unless its trailer came and no row is left open."""
        if not self.ended:
            raise BulkDecodeError("the binary COPY stream has no trailer: it may be truncated")

    # ---- the walks ------------------------------------------------------------------------------------
    def _messages(self, data: Any, lengths: Sequence[int]) -> None:
        import numpy as np

        sizes = np.asarray(lengths, dtype=np.int64)
        ends = np.cumsum(sizes)
        if ends[-1] != len(data):
            raise BulkDecodeError("the COPY messages do not add up to the data read")
        starts = ends - sizes
        header: int | None = 0
        if self._header is None:
            header = _header_length(data)
            if header is None or header > sizes[0]:
                raise _IrregularStream
            starts[0] += header
        keep = starts < ends  # the header in a message of its own
        starts, ends = starts[keep], ends[keep]
        trailer = False
        if len(starts) and ends[-1] - starts[-1] == 2 and bytes(data[-2:]) == b"\xff\xff":
            starts, ends, trailer = starts[:-1], ends[:-1], True
        buf = np.frombuffer(data, dtype=np.uint8)
        offsets, fields = _walk_vectorised(buf, starts, ends, self.ncols)
        if header:
            self._header = header
        self.ended = trailer
        self._decode(data, offsets, fields, len(starts))

    def _walk(self, data: Any) -> None:
        import struct

        import numpy as np

        buf = self._tail + data if self._tail else bytearray(data)
        self._tail = bytearray()
        pos, end = 0, len(buf)
        if self._header is None:
            if end < 19 or bytes(buf[:11]) != SIGNATURE:
                if end >= 11 and bytes(buf[:11]) != SIGNATURE:
                    raise BulkDecodeError("the binary COPY stream has no PGCOPY signature")
                self._tail = buf
                return
            extension = int.from_bytes(buf[15:19], "big")
            if extension > MAX_HEADER_EXTENSION:
                raise BulkDecodeError("the binary COPY header has an impossible extension length")
            if end < 19 + extension:
                self._tail = buf
                return
            self._header = pos = 19 + extension
        offsets: list[list[int]] = [[] for _ in range(self.ncols)]
        sizes: list[list[int]] = [[] for _ in range(self.ncols)]
        unpack16, unpack32 = struct.Struct(">h").unpack_from, struct.Struct(">i").unpack_from
        rows = 0
        while pos + 2 <= end:
            (count,) = unpack16(buf, pos)
            if count == -1:
                if pos + 2 != end:
                    raise BulkDecodeError("the binary COPY stream goes on after its trailer")
                self.ended = True
                pos = end
                break
            if count != self.ncols:
                raise BulkDecodeError(f"a row of the binary COPY stream has {count} fields, expected {self.ncols}")
            at, row = pos + 2, []
            for _ in range(self.ncols):
                if at + 4 > end:
                    break
                (size,) = unpack32(buf, at)
                if size < -1:
                    raise BulkDecodeError("a field of the binary COPY stream has an impossible length")
                at += 4
                if at + max(size, 0) > end:
                    break
                row.append((at, size))
                at += max(size, 0)
            if len(row) < self.ncols:
                break  # the row goes on in the next chunk
            for col, (offset, size) in enumerate(row):
                offsets[col].append(offset)
                sizes[col].append(size)
            rows += 1
            pos = at
        if pos < end:
            self._tail = buf[pos:]
        self._decode(buf, [np.asarray(o, dtype=np.int64) for o in offsets],
                     [np.asarray(s, dtype=np.int64) for s in sizes], rows)

    def _decode(self, data: Any, offsets: list[Any], sizes: list[Any], rows: int) -> None:
        if not rows:
            return
        pieces = [decode_piece(data, offsets[i], sizes[i], oid, self._load_one, self._utf8)
                  for i, oid in enumerate(self.oids)]
        self.rows += rows
        self._emit(pieces, rows)


def _header_length(data: Any) -> int | None:
    if len(data) < 19 or bytes(data[:11]) != SIGNATURE:
        return None
    extension = int.from_bytes(bytes(data[15:19]), "big")
    return None if extension > MAX_HEADER_EXTENSION else 19 + extension


# ---- pieces joined and cut -------------------------------------------------------------------------------

def concat_pieces(pieces: Sequence[Piece]) -> Piece:
    """One piece from consecutive pieces of the same column (the arrays are copied once)."""
    import numpy as np
    import pyarrow as pa

    first = pieces[0]
    if len(pieces) == 1:
        return first
    null = np.concatenate([p.null for p in pieces])
    if first.kind == "interval":
        values: Any = tuple(np.concatenate([p.values[k] for p in pieces]) for k in range(3))
    elif first.kind == "text":  # chunked: the strings are not copied
        values = pa.chunked_array([p.values for p in pieces], type=pa.large_string())
    elif first.kind == "void":
        values = None
    elif first.kind == "loose":
        values = [v for p in pieces for v in p.values]
    else:
        values = np.concatenate([p.values for p in pieces])
    return Piece(first.kind, first.oid, null, values)


def slice_piece(piece: Piece, start: int, stop: int) -> Piece:
    """Rows start:stop of a piece (views where the storage allows)."""
    values = piece.values
    if piece.kind == "interval":
        values = tuple(v[start:stop] for v in values)
    elif piece.kind == "text":
        values = values.slice(start, stop - start)
    elif piece.kind != "void":
        values = values[start:stop]
    return Piece(piece.kind, piece.oid, piece.null[start:stop], values)
