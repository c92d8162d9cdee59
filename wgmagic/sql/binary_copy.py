"""PostgreSQL binary COPY rows decoded into typed columns, and the stand-ins for values Python cannot hold.

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
9999) come back as a ``str`` stand-in, the same on both paths (see `datetime_stand_in`); the column is then
an object column, as on the row path.
"""

from __future__ import annotations

import re
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


# ---- stand-ins for values Python cannot hold --------------------------------------------------------------

_ISO = re.compile(r"^(\d{4,})-(\d\d)-(\d\d)(?: (\d\d):(\d\d):(\d\d)(\.\d+)?)?([+-]\d\d(?::\d\d){0,2})?( BC)?$")


def datetime_stand_in(oid: int, microseconds: int | None = None, text: str | None = None) -> str:
    """The stand-in for a date/timestamp/timestamptz value Python's datetime cannot hold, from either side.

    ``'infinity'`` and ``'-infinity'`` stay those words. Any other value (years before 1 or after 9999) is
    PostgreSQL's ISO text of it: ``YYYY-MM-DD`` (date), ``YYYY-MM-DD HH:MM:SS[.ffffff]`` (timestamp), the
    same in UTC with ``+00`` (timestamptz), then `` BC`` for years before 1. `microseconds` is the binary
    value (microseconds from 2000-01-01, days for a date); `text` is the server's text (ISO DateStyle)."""
    if text is not None:
        if text in ("infinity", "-infinity"):
            return text
        microseconds = _iso_to_pg(text, oid)
        if microseconds is None:
            return text  # not ISO DateStyle: the server's text as it came
    assert microseconds is not None
    if oid == DATE_OID:
        if microseconds in (INT32_MAX, INT32_MIN):
            return "infinity" if microseconds > 0 else "-infinity"
        microseconds *= 86_400_000_000
    elif microseconds in (INT64_MAX, INT64_MIN):
        return "infinity" if microseconds > 0 else "-infinity"
    return _pg_to_iso(microseconds, oid)


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days from 1970-01-01 to a proleptic Gregorian date (astronomical year: 0 is 1 BC); H. Hinnant's
    algorithm, in Python integers (PostgreSQL's range, 4713 BC to 5874897 AD, is beyond numpy's us)."""
    year -= month <= 2
    era = year // 400
    yoe = year - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _civil_from_days(days: int) -> tuple[int, int, int]:
    days += 719468
    era = days // 146097
    doe = days - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + (3 if mp < 10 else -9)
    return yoe + era * 400 + (month <= 2), month, day


def _iso_to_pg(text: str, oid: int) -> int | None:
    match = _ISO.match(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, offset, bc = match.groups()
    astronomical = 1 - int(year) if bc else int(year)
    days = _days_from_civil(astronomical, int(month), int(day)) - PG_EPOCH_DAYS
    if oid == DATE_OID:
        return days
    micros = days * 86_400_000_000
    micros += ((int(hour or 0) * 60 + int(minute or 0)) * 60 + int(second or 0)) * 1_000_000
    micros += int((fraction[1:] + "000000")[:6]) if fraction else 0
    if offset:
        parts = [int(p) for p in offset[1:].split(":")] + [0, 0]
        seconds = parts[0] * 3600 + parts[1] * 60 + parts[2]
        micros -= (1 if offset[0] == "+" else -1) * seconds * 1_000_000
    return micros


def _pg_to_iso(micros: int, oid: int) -> str:
    days, micros = divmod(micros, 86_400_000_000)
    astronomical, month, day = _civil_from_days(days + PG_EPOCH_DAYS)
    bc = astronomical <= 0
    text = f"{(1 - astronomical) if bc else astronomical:04d}-{month:02d}-{day:02d}"
    if oid != DATE_OID:
        seconds, fraction = divmod(micros, 1_000_000)
        minutes, seconds = divmod(seconds, 60)
        hours, minutes = divmod(minutes, 60)
        text += f" {hours:02d}:{minutes:02d}:{seconds:02d}"
        if fraction:
            text += f".{fraction:06d}".rstrip("0")
        if oid == TIMESTAMPTZ_OID:
            text += "+00"
    return text + (" BC" if bc else "")


def interval_stand_in(months: int, days: int, micros: int) -> str:
    """An interval Python's timedelta cannot hold, as PostgreSQL's default IntervalStyle (postgres) prints it
    (EncodeInterval in src/backend/utils/adt/datetime.c: a '+' before a positive part after a negative one)."""
    text, is_zero, is_before = "", True, False
    years, mons = int(months / 12), months - 12 * int(months / 12)  # C division: truncates toward zero
    for amount, unit in ((years, "year"), (mons, "mon"), (days, "day")):
        if amount:
            text += f"{'' if is_zero else ' '}{'+' if is_before and amount > 0 else ''}{amount} {unit}" \
                    f"{'' if amount == 1 else 's'}"
            is_before, is_zero = amount < 0, False
    if is_zero or micros:
        seconds, fraction = divmod(abs(micros), 1_000_000)
        minutes, seconds = divmod(seconds, 60)
        hours, minutes = divmod(minutes, 60)
        sign = "-" if micros < 0 else ("+" if is_before else "")
        text += f"{'' if is_zero else ' '}{sign}{hours:02d}:{minutes:02d}:{seconds:02d}"
        if fraction:
            text += f".{fraction:06d}".rstrip("0")
    return text


_INTERVAL = struct.Struct(">qii")
_TIME = struct.Struct(">q")


def guarded_loaders(adapters: Any) -> None:
    """Register, on a psycopg adapters map (a cursor's), date/time loaders that give the stand-in instead of
    raising for a value Python cannot hold (text and binary alike, so both paths agree)."""
    import psycopg
    from psycopg import pq
    from psycopg.adapt import Loader

    for oid in GUARDED_OIDS:
        for fmt in (pq.Format.TEXT, pq.Format.BINARY):
            base = adapters.get_loader(oid, fmt)
            if base is None or getattr(base, "_wgmagic_guarded", False):
                continue

            class Guarded(Loader):  # delegates: psycopg's C loaders cannot be overridden by a subclass
                _wgmagic_guarded = True
                format = fmt
                _base = base
                _oid = oid

                def __init__(self, oid: int, context: Any = None) -> None:
                    super().__init__(oid, context)
                    self._inner = self._base(oid, context)

                def load(self, data: Any) -> Any:
                    try:
                        return self._inner.load(data)
                    except (psycopg.DataError, ValueError, OverflowError):
                        info = getattr(self.connection, "info", None)
                        return _stand_in(self._oid, bytes(data), self.format == pq.Format.BINARY,
                                         info.encoding if info is not None else "utf-8")

            adapters.register_loader(oid, Guarded)
    for oid in (114, 3802):  # json, jsonb
        for fmt in (pq.Format.TEXT, pq.Format.BINARY):
            adapters.register_loader(oid, type("EncodedJsonLoader", (_encoded_json_loader(),),
                                               {"format": fmt, "jsonb": oid == 3802 and fmt == pq.Format.BINARY}))


_ENCODED_JSON: list[Any] = []


def _encoded_json_loader() -> Any:
    """A JSON loader class that decodes with the session's client encoding (psycopg's own assumes UTF-8: a
    LATIN1 session's non-ASCII JSON would fail on both paths). Made on first use: psycopg is not imported
    with wgmagic."""
    if _ENCODED_JSON:
        return _ENCODED_JSON[0]
    from psycopg.adapt import Loader

    from wgmagic.sql.jsonvalue import loads_json

    class EncodedJsonLoader(Loader):
        jsonb = False

        def load(self, data: Any) -> Any:
            raw = bytes(data)
            if self.jsonb:
                if raw[:1] != b"\x01":
                    raise BulkDecodeError(f"unknown jsonb binary version {raw[:1]!r}")
                raw = raw[1:]
            info = getattr(self.connection, "info", None)
            return loads_json(raw.decode(info.encoding if info is not None else "utf-8"))  # `null`: JSON_NULL

    _ENCODED_JSON.append(EncodedJsonLoader)
    return EncodedJsonLoader


def _stand_in(oid: int, data: bytes, binary: bool, encoding: str) -> str:
    if not binary:
        text = data.decode(encoding, "replace")
        if oid in (DATE_OID, TIMESTAMP_OID, TIMESTAMPTZ_OID):
            return datetime_stand_in(oid, text=text)
        return text
    if oid == DATE_OID:
        return datetime_stand_in(oid, int.from_bytes(data, "big", signed=True))
    if oid in (TIMESTAMP_OID, TIMESTAMPTZ_OID):
        return datetime_stand_in(oid, int.from_bytes(data, "big", signed=True))
    if oid == INTERVAL_OID:
        micros, days, months = _INTERVAL.unpack(data)
        return interval_stand_in(months, days, micros)
    if oid == TIME_OID:
        return interval_stand_in(0, 0, _TIME.unpack(data[:8])[0])  # 24:00:00
    return data.hex()
