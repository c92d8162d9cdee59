"""The CSV COPY loader %%wgsql used before the binary path (issue 11), kept only for benchmarks/wgsql.py, which
puts its `_copy_out` in place of wgmagic.sql.results._copy_out for the comparison.

It re-parses `COPY ... (FORMAT csv)` text with pandas' C reader and so changes values (NaN fails the cell,
'\\N' becomes missing): never use it for results. Column types come from results' zero-row describe; each text
column then goes through the per-type normalisation of the time. Everything else (Result, the OID sets,
reading the CopyData messages) is wgmagic.sql.results' own.
"""

from __future__ import annotations

import io
import time
from typing import Any

from wgmagic.sql.results import (
    BOOL_OID,
    DATE_OID,
    FLOAT_OIDS,
    INT_OIDS,
    INTERVAL_OID,
    PROGRESS_AFTER,
    TEXT_OIDS,
    TIMESTAMP_OID,
    TIMESTAMPTZ_OID,
    Progress,
    Result,
    _read_copy_data,
    _timedeltas,
    _unit,
)


def _copy_out(conn: Any, sql: str, described: tuple[list[str], list[int]], progress: Progress | None) -> Result:
    import pandas as pd

    names, oids = described
    body = sql.strip().rstrip(";").strip()
    started = time.monotonic()
    with conn.cursor() as cur, cur.copy(f"COPY ({body}\n) TO STDOUT WITH (FORMAT csv, NULL '\\N')"):
        data, lengths, status = _read_copy_data(conn, progress, started)
    rows = len(lengths)
    if progress is not None and time.monotonic() - started >= PROGRESS_AFTER:
        progress(rows, len(data))
    buffer = io.BytesIO(data)
    dtypes: dict[int, Any] = {}
    for i, oid in enumerate(oids):
        if oid in INT_OIDS:
            dtypes[i] = "Int64"
        elif oid in FLOAT_OIDS:
            dtypes[i] = "float64"
        else:
            dtypes[i] = object
    if not names:
        return Result(pd.DataFrame(index=range(rows)), rows, status, bulk=True)
    frame = pd.read_csv(buffer, header=None, names=list(range(len(names))), dtype=dtypes, na_values=["\\N"],
                        keep_default_na=False, quotechar='"', doublequote=True, escapechar=None,
                        engine="c")  # low_memory=False doubles the parse time; the dtypes are given anyway
    frame = _normalise(frame, oids, conn)
    frame.columns = names
    return Result(frame, len(frame), status, bulk=True)


def _normalise(frame: Any, oids: list[int], conn: Any) -> Any:
    """One dtype per PostgreSQL type from the CSV text pandas left in each column (as the row path gave then)."""
    for i, oid in enumerate(oids):
        col = frame[i]
        if oid in INT_OIDS:
            col = col.astype("Int64")
            frame[i] = col.astype("int64") if not col.isna().any() else col
        elif oid == BOOL_OID:
            col = col.map({"t": True, "f": False}).astype("boolean")
            frame[i] = col.astype(bool) if not col.isna().any() else col
        elif oid == TIMESTAMPTZ_OID:
            frame[i] = _unit(_datetimes(col, conn, oid, utc=True), "datetime64[us, UTC]")
        elif oid in (TIMESTAMP_OID, DATE_OID):
            frame[i] = _unit(_datetimes(col, conn, oid, utc=False), "datetime64[us]")
        elif oid in TEXT_OIDS:
            frame[i] = col.astype(object).where(col.notna(), None)
        elif oid not in FLOAT_OIDS:
            frame[i] = _load_each(col, oid, conn)
        if oid == INTERVAL_OID:
            frame[i] = _unit(_timedeltas(frame[i]), "timedelta64[us]")
        elif oid not in INT_OIDS | FLOAT_OIDS | {BOOL_OID, TIMESTAMPTZ_OID, TIMESTAMP_OID, DATE_OID}:
            frame[i] = frame[i].astype(object).where(frame[i].notna(), None)
    return frame


def _load_each(col: Any, oid: int, conn: Any) -> Any:
    """Values of any other type through psycopg's own text loader for that type (exact: Decimal, UUID, ...)."""
    from psycopg import pq

    loader = conn.adapters.get_loader(oid, pq.Format.TEXT)
    if loader is None:
        return col
    load = loader(oid, conn).load
    return col.map(lambda value: None if value is None or value != value else load(value.encode()),
                   na_action=None)


def _datetimes(col: Any, conn: Any, oid: int, *, utc: bool) -> Any:
    import pandas as pd

    try:
        return pd.to_datetime(col, utc=utc, format="ISO8601")
    except (ValueError, OverflowError, pd.errors.OutOfBoundsDatetime):
        return _load_each(col, oid, conn)  # infinity or years pandas cannot hold: Python objects
