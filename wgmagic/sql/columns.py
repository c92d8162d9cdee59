"""A column of the bulk path (a wgmagic.sql.copy_stream `Piece`) as a pandas column in the row path's dtype, or as
an Arrow array of the type Arrow, polars and Parquet outputs give it (see wgmagic.sql.outputs for the types).

No Python object per value for the fixed-width and text kinds; a date/time or interval column with a value
Python cannot hold goes value by value through psycopg's loader, exactly as the row path does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from wgmagic.sql.binary_copy import INT64_MAX, INT64_MIN, PG_EPOCH_DAYS, PG_EPOCH_US
from wgmagic.sql.copy_stream import Piece


def text_dtype() -> Any:
    """pandas' string dtype backed by pyarrow, NULL as NaN (pandas 3's default `str`; pandas 2.2's
    "pyarrow_numpy"; older pandas: the pyarrow string dtype with pd.NA)."""
    import numpy as np
    import pandas as pd

    try:
        return pd.StringDtype("pyarrow", na_value=np.nan)
    except TypeError:
        pass
    try:
        return pd.StringDtype("pyarrow_numpy")
    except (TypeError, ValueError):
        return pd.StringDtype("pyarrow")


# ---- pieces into pandas columns (the row path's dtypes) ---------------------------------------------------

def piece_to_pandas(piece: Piece, load_one: Callable[[int], Any], string_dtype: str) -> tuple[Any, bool]:
    """(values, final): final, a pandas Series in the row path's dtype; otherwise a list of Python values (as
    psycopg's loader gives them) for the shared normalisation (wgmagic.sql.results._normalise)."""
    import numpy as np
    import pandas as pd

    from wgmagic.sql.binary_copy import DATE_OID, INTERVAL_OID, TIMESTAMPTZ_OID

    null, values, kind, oid = piece.null, piece.values, piece.kind, piece.oid
    any_null = bool(null.any())
    if kind == "int":
        if any_null:
            return pd.Series(pd.arrays.IntegerArray(values, null)), True
        return pd.Series(values), True
    if kind == "float":  # the piece's own array (pieces are the decoder's): NULL becomes NaN in place
        if any_null:
            values[null] = np.nan
        return pd.Series(values, copy=False), True
    if kind == "bool":
        if any_null:
            return pd.Series(pd.arrays.BooleanArray(values, null)), True
        return pd.Series(values), True
    if kind == "time":
        live = values[~null]
        # 0001-01-02 and 9999-12-30 (in days, or microseconds, from 2000-01-01): a day inside Python's range,
        # so that no time zone moves a value out of it; values nearer the ends go value by value
        if oid == DATE_OID:
            low, high = -730_118, 2_921_938
        else:
            low, high = -63_082_195_200_000_000, 252_455_443_200_000_000
        if len(live) and (live.min() < low or live.max() > high):
            fmt = ">i" if oid == DATE_OID else ">q"
            return _each_packed(piece, load_one, lambda v: int(v).to_bytes(4 if fmt == ">i" else 8, "big",
                                                                              signed=True)), False
        # in place, in the piece's own array: the column costs no second copy; a NULL's stand-in bytes are not
        # a value (converted, they may overflow)
        values[null] = 0
        if oid == DATE_OID:
            values += PG_EPOCH_DAYS
            values *= 86_400_000_000
        else:
            values += PG_EPOCH_US
        stamps = values.view("datetime64[us]")
        stamps[null] = np.datetime64("NaT", "us")  # a unit always: NumPy 2.5 deprecates the generic one
        return pd.Series(_utc(stamps) if oid == TIMESTAMPTZ_OID else stamps, copy=False), True
    if kind == "interval":
        micros, days, months = values
        total, inside = _interval_micros(micros, days, months)
        if (~inside & ~null).any():
            import struct

            pack = struct.Struct(">qii").pack
            flat = list(zip(micros.tolist(), days.tolist(), months.tolist(), strict=True))
            load = load_one(INTERVAL_OID)
            return [None if n else load(pack(*flat[i])) for i, n in enumerate(null.tolist())], False
        stamps = total.astype("timedelta64[us]")
        stamps[null] = np.timedelta64("NaT", "us")
        return pd.Series(stamps), True
    if kind == "void":  # no loader: psycopg gives the text form, '', on the row path
        return [None if n else "" for n in null.tolist()], False
    if kind == "text":
        if string_dtype == "str":
            return pd.Series(pd.array(values, dtype=text_dtype())), True
        objects = values.to_numpy(zero_copy_only=False)
        objects[null] = None
        return pd.Series(objects, dtype=object), True
    return list(values), False


def _utc(stamps: Any) -> Any:
    """datetime64[us] values (UTC) as a tz-aware pandas array without a copy where pandas allows."""
    import pandas as pd

    dtype = pd.DatetimeTZDtype("us", "UTC")
    try:
        return pd.arrays.DatetimeArray._simple_new(stamps, dtype=dtype)
    except Exception:  # another pandas: the public way (a copy)
        return pd.Series(stamps).dt.tz_localize("UTC").array


def _interval_micros(micros: Any, days: Any, months: Any) -> tuple[Any, Any]:
    """(microseconds, inside): psycopg's convention (and so the row path's): a year is 365 days, a month 30,
    each part signed. inside: the value fits both Python's timedelta and numpy's timedelta64[us] (about 106
    million days); where it does not, the microseconds are 0."""
    import numpy as np

    years, mons = np.divmod(np.abs(months), 12)
    sign = np.sign(months)
    total_days = days + sign * (years * 365 + mons * 30)
    inside = np.abs(total_days) + np.abs(micros) // 86_400_000_000 <= 100_000_000
    total = np.where(inside, total_days, 0) * 86_400_000_000 + np.where(inside, micros, 0)
    return total, inside


def _each_packed(piece: Piece, load_one: Callable[[int], Any], pack: Callable[[int], bytes]) -> list[Any]:
    load = load_one(piece.oid)
    return [None if n else load(pack(v)) for v, n in zip(piece.values.tolist(), piece.null.tolist(), strict=True)]


# ---- pieces into Arrow arrays ------------------------------------------------------------------------------

def arrow_type(oid: int) -> Any:
    """The Arrow type a column of PostgreSQL type `oid` gets in Arrow, polars and Parquet outputs."""
    import pyarrow as pa

    from wgmagic.sql.binary_copy import (
        BOOL_OID,
        DATE_OID,
        FLOAT_WIDTHS,
        INT_WIDTHS,
        INTERVAL_OID,
        TIMESTAMP_OID,
        TIMESTAMPTZ_OID,
    )

    if oid in INT_WIDTHS:
        return pa.int64()
    if oid in FLOAT_WIDTHS:
        return pa.float64()
    if oid == BOOL_OID:
        return pa.bool_()
    if oid == DATE_OID:
        return pa.date32()
    if oid == TIMESTAMP_OID:
        return pa.timestamp("us")
    if oid == TIMESTAMPTZ_OID:
        return pa.timestamp("us", tz="UTC")
    if oid == INTERVAL_OID:
        return pa.duration("us")
    if oid == 17:
        return pa.large_binary()
    return pa.large_string()


def piece_to_arrow(piece: Piece) -> Any:
    """One piece as an Arrow array of `arrow_type(piece.oid)` (no Python object per value for the fixed-width
    and text kinds)."""
    import numpy as np
    import pyarrow as pa

    from wgmagic.sql.binary_copy import DATE_OID, INT32_MAX, INT32_MIN

    kind, null, values = piece.kind, piece.null, piece.values
    target = arrow_type(piece.oid)
    mask = null if null.any() else None
    if kind in ("int", "float", "bool"):
        return pa.array(values, type=target, mask=mask)
    if kind == "time":
        if piece.oid == DATE_OID:
            infinite = (values == INT32_MAX) | (values == INT32_MIN)
            shifted = values + PG_EPOCH_DAYS
        else:
            infinite = (values == INT64_MAX) | (values == INT64_MIN)
            shifted = np.where(infinite, 0, values) + np.where(infinite, 0, PG_EPOCH_US)
        gone = null | infinite
        shifted = np.where(gone, 0, shifted)
        array = pa.array(shifted.astype(np.int32 if piece.oid == DATE_OID else np.int64),
                         mask=gone if gone.any() else None)
        return array.view(target) if piece.oid != DATE_OID else array.cast(target)
    if kind == "interval":
        micros, days, months = values
        total, inside = _interval_micros(micros, days, months)
        gone = null | ~inside
        return pa.array(total, type=pa.int64(), mask=gone if gone.any() else None).view(target)
    if kind == "text":
        return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    if kind == "void":
        return pa.array([None if n else "" for n in null.tolist()], type=target)
    if target == pa.large_binary():
        return pa.array(values, type=target)
    return pa.array([text_of(v) for v in values], type=target)


def text_of(value: Any) -> str | None:
    if value is None:
        return None
    from wgmagic.sql.jsonvalue import JSON_NULL

    if value is JSON_NULL:
        return "null"
    if isinstance(value, (dict, list)) and not isinstance(value, str):
        import json

        try:
            return json.dumps(value, ensure_ascii=False)
        except (TypeError, ValueError):
            return str(value)
    return str(value)


def arrow_schema(names: Sequence[str], oids: Sequence[int]) -> Any:
    import pyarrow as pa

    return pa.schema([pa.field(_unique(names, i), arrow_type(oid)) for i, oid in enumerate(oids)])


def _unique(names: Sequence[str], i: int) -> str:
    """Column i's name, with a suffix when an earlier column has the same one (Arrow needs no unique names,
    but Parquet readers and polars do)."""
    name = names[i]
    if name not in names[:i]:
        return name
    return f"{name}_{list(names[:i]).count(name)}"


# ---- Python values (the row path, a driver's loaders) into Arrow arrays --------------------------------------

def values_to_arrow(values: Sequence[Any], target: Any) -> Any:
    """One column of Python values as a driver's loaders give them (None for NULL) as an Arrow array of type
    `target`, the same values the bulk path gives: large_string holds `text_of` each value; large_binary the
    bytes; a date, timestamp or duration type the datetime/date/timedelta values (a value Python could not hold,
    which the loaders give as a text stand-in such as 'infinity', is null, as in the bulk path); the rest as
    pyarrow converts them. Raises pyarrow.ArrowInvalid / ArrowTypeError for a value of another type."""
    import datetime

    import pyarrow as pa

    if target == pa.large_string():
        return pa.array([text_of(v) for v in values], type=target)
    if target == pa.large_binary():
        return pa.array([None if v is None else bytes(v) for v in values], type=target)
    if pa.types.is_timestamp(target):
        return pa.array([v if isinstance(v, datetime.datetime) else
                         datetime.datetime(v.year, v.month, v.day) if isinstance(v, datetime.date) else None
                         for v in values], type=target)
    if pa.types.is_date(target):
        return pa.array([v if isinstance(v, datetime.date) else None for v in values], type=target)
    if pa.types.is_duration(target):
        return pa.array([v if isinstance(v, datetime.timedelta) else None for v in values], type=target)
    return pa.array(values, type=target)
