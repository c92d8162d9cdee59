"""PostgreSQL binary COPY rows decoded into typed columns.

The bulk path of `%%wgsql` runs `COPY (query) TO STDOUT (FORMAT binary)` on the session's own psycopg
connection (so temp tables, SET, search_path and open transactions are seen) and hands the bytes here.
The format is PostgreSQL's documented binary COPY file format (docs, "COPY", "Binary Format"): an 11-byte
signature, a flags int32, a header-extension length and area, then per row an int16 field count and per
field an int32 length (-1 for NULL) and that many bytes of the type's binary send form; an int16 -1 trailer.
Each CopyData message the server sends holds one row (protocol docs, "COPY Operations"), so the row starts
are known from the message lengths and the fields are walked column by column with numpy, all rows at
once. A stream that does not have that shape is walked row by row instead.

Fixed-width types (integers, floats, bool, date, timestamp, timestamptz, interval) and UTF-8 text become
numpy/pandas columns without a Python object per value; every other carried type goes through psycopg's own
binary loader for it, value by value, so it equals what psycopg's text loader gives the row path. A type
neither can carry exactly is not in `BULK_OIDS`: such a statement takes the row path.

Values Python's datetime cannot hold (PostgreSQL's ``infinity``, ``-infinity``, years before 1 or after
9999) come back as a ``str`` stand-in, the same on both paths (wgmagic.sql.loaders: `datetime_stand_in`, and
psycopg's loaders guarded to give it); the column is then an object column, as on the row path.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 in microseconds since 1970-01-01
PG_EPOCH_DAYS = 10_957
INT64_MAX, INT64_MIN = 2**63 - 1, -(2**63)
INT32_MAX, INT32_MIN = 2**31 - 1, -(2**31)

INT_WIDTHS = {21: ">i2", 23: ">i4", 20: ">i8", 26: ">u4"}  # int2, int4, int8, oid
FLOAT_WIDTHS = {700: ">f4", 701: ">f8"}
BOOL_OID, DATE_OID, TIME_OID, TIMESTAMP_OID, TIMESTAMPTZ_OID, INTERVAL_OID = 16, 1082, 1083, 1114, 1184, 1186
UTF8_TEXT_OIDS = {25, 1043, 1042, 19}  # text, varchar, bpchar, name: the wire bytes are the text itself
# Decoded value by value with psycopg's binary loader; each equals what the text loader gives the row path.
LOADER_OIDS = {
    18, 17, 1700, 114, 3802, 2950, 869, 650,  # "char", bytea, numeric, json, jsonb, uuid, inet, cidr
    # arrays: bool, bytea, "char", name, int2, int4, text, bpchar, varchar, int8, float8, oid, date, time,
    # timestamp, timestamptz, interval, numeric, uuid, json, jsonb, inet, cidr (not float4[]: its text form
    # is the shortest decimal, its binary form the exact float, and lists are not normalised)
    1000, 1001, 1002, 1003, 1005, 1007, 1009, 1014, 1015, 1016, 1022, 1028, 1182, 1183, 1115, 1185, 1187, 1231,
    2951, 199, 3807, 1041, 651,
}
VOID_OID = 2278  # pg_sleep() and other procedures' results: text '' on the row path
BULK_OIDS = ({VOID_OID} | set(INT_WIDTHS) | set(FLOAT_WIDTHS)
             | {BOOL_OID, DATE_OID, TIME_OID, TIMESTAMP_OID, TIMESTAMPTZ_OID, INTERVAL_OID}
             | UTF8_TEXT_OIDS | LOADER_OIDS)
GUARDED_OIDS = (DATE_OID, TIME_OID, TIMESTAMP_OID, TIMESTAMPTZ_OID, INTERVAL_OID, 1266)  # 1266: timetz


class BulkDecodeError(Exception):
    """The client could not decode the binary COPY stream (never a server-side error)."""


# ---- the walk over rows and fields -----------------------------------------------------------------------

def _gather(buf: Any, pos: Any, width: int) -> Any:
    import numpy as np

    return buf[pos[:, None] + np.arange(width)]


def _be(buf: Any, pos: Any, fmt: str) -> Any:
    """The big-endian values of type `fmt` starting at each byte offset in `pos` (one gather, no copies of
    the buffer: a view whose elements start at every byte)."""
    import numpy as np

    dtype = np.dtype(fmt)
    count = len(buf) - dtype.itemsize + 1
    if count <= 0:
        return np.zeros(len(pos), dtype=dtype)
    every = np.ndarray(shape=(count,), dtype=dtype, buffer=buf, offset=0, strides=(1,))
    return every[pos]


def field_layout(data: bytes | bytearray, lengths: Any, ncols: int) -> tuple[list[Any], list[Any]]:
    """Per column, the offset and length (-1: NULL) of its field in each row; shapes (rows,), int64.

    `lengths` are the CopyData message lengths in order. Raises BulkDecodeError on a malformed stream."""
    import numpy as np

    buf = np.frombuffer(data, dtype=np.uint8)
    sizes = np.asarray(lengths, dtype=np.int64)
    if len(data) < 19 or bytes(data[:11]) != SIGNATURE:
        raise BulkDecodeError("the binary COPY stream has no PGCOPY signature")
    header = 19 + int.from_bytes(data[15:19], "big")
    ends = np.cumsum(sizes)
    starts = ends - sizes
    if len(sizes) and ends[-1] != len(data):
        raise BulkDecodeError("the COPY messages do not add up to the data read")
    if len(sizes) and sizes[0] == header:  # the header in a message of its own
        starts, ends = starts[1:], ends[1:]
    elif len(sizes):
        starts = starts.copy()
        starts[0] += header
    if len(starts) and ends[-1] - starts[-1] == 2 and bytes(data[-2:]) == b"\xff\xff":
        starts, ends = starts[:-1], ends[:-1]  # the trailer in a message of its own
    elif len(starts) and bytes(data[-2:]) == b"\xff\xff":
        ends = ends.copy()
        ends[-1] -= 2
    else:
        raise BulkDecodeError("the binary COPY stream has no trailer: it may be truncated")
    try:
        return _walk_vectorised(buf, starts, ends, ncols)
    except _IrregularStream:
        return _walk_rows(data, header, ncols)


class _IrregularStream(Exception):
    pass


def _walk_vectorised(buf: Any, starts: Any, ends: Any, ncols: int) -> tuple[list[Any], list[Any]]:
    import numpy as np

    if not len(starts):
        return [np.zeros(0, np.int64)] * ncols, [np.zeros(0, np.int64)] * ncols
    if (ends - starts < 2).any() or (_be(buf, starts, ">i2") != ncols).any():
        raise _IrregularStream
    pos = starts + 2
    offsets, sizes = [], []
    for _ in range(ncols):
        if (pos + 4 > ends).any():
            raise _IrregularStream
        size = _be(buf, pos, ">i4").astype(np.int64)
        if (size < -1).any():
            raise _IrregularStream
        pos = pos + 4
        offsets.append(pos)
        sizes.append(size)
        pos = pos + np.maximum(size, 0)
    if (pos != ends).any():
        raise _IrregularStream
    return offsets, sizes


def _walk_rows(data: bytes | bytearray, header: int, ncols: int) -> tuple[list[Any], list[Any]]:
    """The same layout, one row at a time: for a stream whose rows do not follow the message boundaries."""
    import numpy as np

    offsets: list[list[int]] = [[] for _ in range(ncols)]
    sizes: list[list[int]] = [[] for _ in range(ncols)]
    pos, end = header, len(data)
    unpack16, unpack32 = struct.Struct(">h").unpack_from, struct.Struct(">i").unpack_from
    while True:
        if pos + 2 > end:
            raise BulkDecodeError("the binary COPY stream ends inside a row")
        (count,) = unpack16(data, pos)
        pos += 2
        if count == -1:
            break
        if count != ncols:
            raise BulkDecodeError(f"a row of the binary COPY stream has {count} fields, expected {ncols}")
        for col in range(ncols):
            if pos + 4 > end:
                raise BulkDecodeError("the binary COPY stream ends inside a row")
            (size,) = unpack32(data, pos)
            pos += 4
            if size < -1 or pos + max(size, 0) > end:
                raise BulkDecodeError("a field of the binary COPY stream has an impossible length")
            offsets[col].append(pos)
            sizes[col].append(size)
            pos += max(size, 0)
    return ([np.asarray(o, dtype=np.int64) for o in offsets], [np.asarray(s, dtype=np.int64) for s in sizes])


# ---- columns ---------------------------------------------------------------------------------------------

LoadOne = Callable[[int], Callable[[Any], Any]]  # load_one(oid) -> the load of one field's bytes (psycopg's)


def fixed_width(buf: Any, offsets: Any, sizes: Any, fmt: str, oid: int) -> Any:
    """One column's fixed-width fields as a numpy array of `fmt` (big-endian, e.g. ">i8"), read from `buf` (a
    uint8 array) at `offsets` (int64, one per row); a NULL's (size -1) element is a stand-in, not a value.
    BulkDecodeError naming `oid` when a field that is not NULL has another width."""
    import numpy as np

    width = np.dtype(fmt).itemsize
    null = sizes < 0
    if ((sizes != width) & ~null).any():
        raise BulkDecodeError(f"a value of type oid {oid} is not {width} bytes long")
    if len(buf) < width:
        return np.zeros(len(sizes), dtype=fmt)
    return _be(buf, np.minimum(np.where(null, 0, offsets), len(buf) - width), fmt)


def interval_fields(buf: Any, offsets: Any, sizes: Any) -> tuple[Any, Any, Any]:
    """One column's interval fields (16 bytes: int64 microseconds, int32 days, int32 months; PostgreSQL's
    interval_send) as three int64 arrays (microseconds, days, months); NULLs hold stand-ins.
    BulkDecodeError when a field that is not NULL is not 16 bytes long."""
    import numpy as np

    null = sizes < 0
    if ((sizes != 16) & ~null).any():
        raise BulkDecodeError("an interval value is not 16 bytes long")
    if len(buf) < 16:
        zero = np.zeros(len(sizes), dtype=np.int64)
        return zero, zero, zero
    pos = np.minimum(np.where(null, 0, offsets), len(buf) - 16)
    return (_be(buf, pos, ">i8").astype(np.int64), _be(buf, pos + 8, ">i4").astype(np.int64),
            _be(buf, pos + 12, ">i4").astype(np.int64))


def decode_column(data: bytes | bytearray, offsets: Any, sizes: Any, oid: int, load_one: LoadOne,
                  utf8: bool) -> tuple[Any, bool]:
    """One column: (values, final). final: a pandas Series already in the row path's dtype; otherwise a list
    of Python values (as psycopg's loader gives them) that the shared normalisation turns into a column.

    `load_one(oid)` returns a callable that loads one field's bytes (psycopg's binary loader, guarded)."""
    import numpy as np
    import pandas as pd

    buf = np.frombuffer(data, dtype=np.uint8)
    null = sizes < 0
    any_null = bool(null.any())

    def fixed(fmt: str) -> Any:
        return fixed_width(buf, offsets, sizes, fmt, oid)

    if oid in INT_WIDTHS:
        values = fixed(INT_WIDTHS[oid]).astype(np.int64)
        if any_null:
            return pd.Series(pd.arrays.IntegerArray(values, null)), True
        return pd.Series(values), True
    if oid in FLOAT_WIDTHS:
        values = fixed(FLOAT_WIDTHS[oid]).astype(np.float64)
        values[null] = np.nan
        return pd.Series(values), True
    if oid == BOOL_OID:
        values = fixed(">u1") != 0
        if any_null:
            return pd.Series(pd.arrays.BooleanArray(values, null)), True
        return pd.Series(values), True
    if oid in (TIMESTAMP_OID, TIMESTAMPTZ_OID, DATE_OID):
        raw = fixed(">i4" if oid == DATE_OID else ">i8").astype(np.int64)
        raw[null] = 0  # a NULL's stand-in bytes are not a value: converted, they overflow (NumPy 2.5 raises)
        live = raw[~null]
        # 0001-01-02 and 9999-12-30 (in days, or microseconds, from 2000-01-01): a day inside Python's range,
        # so that no time zone moves a value out of it; values nearer the ends go value by value below
        if oid == DATE_OID:
            low, high = -730_118, 2_921_938
        else:
            low, high = -63_082_195_200_000_000, 252_455_443_200_000_000
        if len(live) and (live.min() < low or live.max() > high):
            return _each(data, offsets, sizes, load_one(oid)), False  # stand-ins: an object column
        if oid == DATE_OID:
            values = (raw + PG_EPOCH_DAYS).astype("datetime64[D]").astype("datetime64[us]")
        else:
            values = (raw + PG_EPOCH_US).astype("datetime64[us]")
        values[null] = np.datetime64("NaT", "us")  # a unit always: NumPy 2.5 deprecates the generic one
        series = pd.Series(values)
        if oid == TIMESTAMPTZ_OID:
            series = series.dt.tz_localize("UTC")
        return series, True
    if oid == INTERVAL_OID:
        micros, days, months = interval_fields(buf, offsets, sizes)
        # psycopg's convention (and so the row path's): a year is 365 days, a month 30, each part signed
        years, mons = np.divmod(np.abs(months), 12)
        sign = np.sign(months)
        total_days = days + sign * (years * 365 + mons * 30)
        live = ~null
        # inside both Python's timedelta and numpy's timedelta64[us] (about 106 million days): exact in int64
        span = np.abs(total_days) + np.abs(micros) // 86_400_000_000
        if live.any() and (span[live] > 100_000_000).any():
            return _each(data, offsets, sizes, load_one(oid)), False
        values = (total_days * 86_400_000_000 + micros).astype("timedelta64[us]")
        values[null] = np.timedelta64("NaT", "us")
        return pd.Series(values), True
    if oid == VOID_OID:  # no loader: psycopg gives the text form, '', on the row path
        return [None if size < 0 else "" for size in sizes.tolist()], False
    if oid in UTF8_TEXT_OIDS and utf8:
        return _utf8_strings(data, offsets, np.maximum(sizes, 0), null), True
    return _each(data, offsets, sizes, load_one(oid)), False


def _each(data: bytes | bytearray, offsets: Any, sizes: Any, load: Any) -> list[Any]:
    view = memoryview(data)
    return [None if size < 0 else load(view[start:start + size])
            for start, size in zip(offsets.tolist(), sizes.tolist(), strict=True)]


def _utf8_strings(data: bytes | bytearray, offsets: Any, sizes: Any, null: Any) -> Any:
    """Text fields as a column of Python str (None for NULL), with Arrow doing the copying and the UTF-8 check.

    The fields and the bytes between them alternate along the buffer, so one binary array with offsets
    start0, end0, start1, end1, ... holds every field at an even index; `take` packs those."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    count = len(sizes)
    bounds = np.empty(2 * count + 1, dtype=np.int64)
    bounds[0:-1:2] = offsets
    bounds[1::2] = offsets + sizes
    bounds[-1] = bounds[-2] if count else 0
    interleaved = pa.LargeBinaryArray.from_buffers(pa.large_binary(), 2 * count, [None, pa.py_buffer(bounds),
                                                                                   pa.py_buffer(data)])
    packed = interleaved.take(pa.array(np.arange(0, 2 * count, 2)))
    try:
        strings = packed.cast(pa.large_string())
    except pa.ArrowInvalid as exc:
        raise BulkDecodeError(f"a text value is not valid UTF-8 ({exc})") from None
    values = strings.to_numpy(zero_copy_only=False)
    values[null] = None
    return pd.Series(values, dtype=object)
