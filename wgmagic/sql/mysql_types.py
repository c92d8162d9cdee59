"""MySQL/MariaDB result columns as pandas dtypes, from the result's own column definitions.

Source: MySQL client/server protocol, "Column Definition" (protocol type, flags, collation, display width),
and MariaDB's extended metadata (wgmagic.sql.mysql_wire: `format=json`). The conventions are the Postgres
path's (wgmagic.sql.results): NULL is None or the nullable dtype's NA, the JSON text `null` is JSON_NULL.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from wgmagic.sql.jsonvalue import JSON_NULL, dumps_json, loads_json
from wgmagic.sql.results import _objects_to_datetimes, _timedeltas, _unit

# Protocol column types (include/mysql_com.h enum_field_types) and column flags.
DECIMAL, TINY, SHORT, LONG, FLOAT, DOUBLE, NULL, TIMESTAMP, LONGLONG, INT24 = range(10)
DATE, TIME, DATETIME, YEAR, NEWDATE, VARCHAR, BIT = range(10, 17)
JSON, NEWDECIMAL, ENUM, SET, TINY_BLOB, MEDIUM_BLOB, LONG_BLOB, BLOB, VAR_STRING, STRING, GEOMETRY = range(245, 256)
UNSIGNED_FLAG = 32
_INTEGERS = {TINY, SHORT, LONG, LONGLONG, INT24, YEAR}


def json_columns(fields: list[Any]) -> set[int]:
    """The indexes of the JSON columns, from the result's own column definitions: MySQL's protocol type JSON,
    or MariaDB's extended metadata `format=json` (its JSON is LONGTEXT on the wire; see mysql_wire). The same
    answer for a table, a view, a CTE, a derived or temporary table and an expression: the server decides."""
    return {i for i, field in enumerate(fields) if field.type_code == JSON or getattr(field, "format", None) == "json"}


def frame_from_rows(rows: Any, fields: list[Any], json_columns: Collection[int] = ()) -> Any:
    """A DataFrame with one dtype per MySQL column type, following the Postgres path's conventions:

    integers -> int64 (Int64 with NULLs); BIGINT UNSIGNED and BIT -> uint64 (UInt64 with NULLs), so 2**64-1
    fits; TINYINT(1) (BOOLEAN) -> bool (boolean with NULLs) unless it holds a value other than 0 and 1, then an
    integer; FLOAT -> float64 holding the server's single-precision value; DOUBLE -> float64;
    DECIMAL -> decimal.Decimal (exact); DATETIME, TIMESTAMP, DATE -> datetime64[us] (zero dates stay text);
    TIME -> timedelta64[us] (it is a duration: -838:59:59 to 838:59:59); JSON -> Python objects (the JSON text
    `null` as JSON_NULL, SQL NULL as None);
    BLOB/BINARY -> bytes; text -> str; NULL -> None (or the nullable dtype's NA).
    """
    import pandas as pd

    names = [field.name for field in fields]
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in fields]
    frame = pd.DataFrame({i: pd.Series(list(col), dtype=object) for i, col in enumerate(columns)},
                         index=range(len(rows)))
    for i, field in enumerate(fields):
        frame[i] = _column(frame[i], field, i in json_columns)
    frame.columns = names
    return frame


def _column(col: Any, field: Any, is_json: bool) -> Any:
    import numpy as np
    import pandas as pd

    kind = field.type_code
    unsigned = bool(field.flags & UNSIGNED_FLAG)
    values = [None if _missing(v) else v for v in col]  # Series.map would infer a dtype (None -> NaN)
    nulls = any(v is None for v in values)
    if kind == TINY and field.length == 1 and all(v in (0, 1) for v in values if v is not None):
        col = pd.Series(pd.array(values, dtype="boolean"), index=col.index)
        return col if nulls else col.astype(bool)
    if kind in _INTEGERS or kind == BIT:
        wide = (kind == LONGLONG and unsigned) or kind == BIT
        ints = [None if v is None else int.from_bytes(v, "big") if isinstance(v, bytes) else int(v) for v in values]
        # From the Python ints themselves: through float64 (where astype on objects may go), 2**64-1 is lost.
        col = pd.Series(pd.array(ints, dtype="UInt64" if wide else "Int64"), index=col.index)
        return col if nulls else col.astype("uint64" if wide else "int64")
    if kind == FLOAT:  # the text's shortest decimal back to the server's single-precision value, held exactly
        return col.astype("float64").astype(np.float32).astype("float64")
    if kind == DOUBLE:
        return col.astype("float64")
    if kind in (DATETIME, TIMESTAMP, DATE, NEWDATE):
        return _unit(_objects_to_datetimes(col, utc=False), "datetime64[us]")
    if kind == TIME:
        return _unit(_timedeltas(col), "timedelta64[us]")
    if is_json:  # SQL NULL stays None, the JSON text `null` is JSON_NULL (wgmagic.sql.jsonvalue)
        values = [loads_json(v) if isinstance(v, (str, bytes)) else v for v in values]
    return pd.Series(values, index=col.index, dtype=object)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def driver_params(params: dict[str, object] | None) -> dict[str, object] | None:
    """Notebook values as PyMySQL can escape them: numpy scalars as Python numbers, pandas Timestamps as
    datetimes, dicts and JSON_NULL as JSON text; everything else as it is."""
    if params is None:
        return None
    out: dict[str, object] = {}
    for name, value in params.items():
        if hasattr(value, "to_pydatetime"):
            value = value.to_pydatetime()
        elif hasattr(value, "to_pytimedelta"):
            value = value.to_pytimedelta()
        elif type(value).__module__ == "numpy" and hasattr(value, "item"):
            value = value.item()
        elif isinstance(value, dict) or value is JSON_NULL:
            value = dumps_json(value)
        out[name] = value
    return out
