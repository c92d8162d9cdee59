"""The CSV COPY loader %%wgsql used before the binary path (issue 11), kept only for benchmarks/wgsql.py.

It re-parses `COPY ... (FORMAT csv)` text with pandas' C reader and so changes values (NaN fails the cell,
'\\N' becomes missing): never use it for results. The docstring of the time follows.


Big SELECTs take a bulk path: `COPY (query) TO STDOUT` in CSV, parsed by pandas' C reader, with column
types from a zero-row describe. Other statements, and statements with parameters (COPY cannot take
them), use an ordinary cursor. Both paths end in the same per-type normalisation, so a column looks the
same whichever path brought it.
"""

from __future__ import annotations

import io
import re
import select
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

INT_OIDS = {20, 21, 23, 26}  # int8, int2, int4, oid
FLOAT_OIDS = {700, 701}
NUMERIC_OID = 1700
BOOL_OID = 16
DATE_OID = 1082
TIMESTAMP_OID = 1114
TIMESTAMPTZ_OID = 1184
INTERVAL_OID = 1186
TEXT_OIDS = {25, 1042, 1043, 19, 18}  # text, bpchar, varchar, name, char
_ROWS_QUERY = re.compile(r"^\s*\(*\s*(select|with|values|table)\b", re.IGNORECASE)
_LOCKING = re.compile(r"\bfor\s+(update|share|no\s+key\s+update|key\s+share)\b", re.IGNORECASE)
PROGRESS_AFTER = 1.0  # seconds before a progress bar appears


@dataclass
class Result:
    frame: Any | None  # a DataFrame when the statement returned rows
    rowcount: int
    status: str  # the server's command tag, e.g. "INSERT 0 3"
    bulk: bool = False


Progress = Callable[[int, int], None]  # (rows, bytes) so far


def is_row_query(sql: str) -> bool:
    return bool(_ROWS_QUERY.match(_strip_comments(sql))) and not _LOCKING.search(sql)


def _strip_comments(sql: str) -> str:
    text = sql.lstrip()
    while text.startswith(("--", "/*")):
        if text.startswith("--"):
            end = text.find("\n")
            text = "" if end < 0 else text[end + 1:].lstrip()
        else:
            end = text.find("*/")
            text = "" if end < 0 else text[end + 2:].lstrip()
    return text


def run_statement(conn: Any, sql: str, params: dict[str, object] | None, *, bulk: bool = True,
                  progress: Progress | None = None) -> Result:
    """Execute one statement on a psycopg connection and bring back its rows, if any."""
    if bulk and params is None and is_row_query(sql) and not conn.info.transaction_status:
        described = _describe(conn, sql)
        if described is not None:
            return _copy_out(conn, sql, described, progress)
    with conn.cursor() as cur:
        cur.execute(sql, params) if params is not None else cur.execute(sql)
        status = cur.statusmessage or ""
        if cur.description is None:
            return Result(None, cur.rowcount, status)
        names = [col.name for col in cur.description]
        oids = [col.type_code for col in cur.description]
        rows = cur.fetchall()
    return Result(_frame_from_rows(rows, names, oids), len(rows), status)


def _describe(conn: Any, sql: str) -> tuple[list[str], list[int]] | None:
    import psycopg

    body = sql.strip().rstrip(";").strip()
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT * FROM ({body}\n) AS wgmagic_describe LIMIT 0")
            assert cur.description is not None
            return [col.name for col in cur.description], [col.type_code for col in cur.description]
    except psycopg.Error:
        return None  # not expressible as a subquery: the ordinary path will run it (and report any error)


def _copy_out(conn: Any, sql: str, described: tuple[list[str], list[int]], progress: Progress | None) -> Result:
    import pandas as pd

    names, oids = described
    body = sql.strip().rstrip(";").strip()
    started = time.monotonic()
    with conn.cursor() as cur, cur.copy(f"COPY ({body}\n) TO STDOUT WITH (FORMAT csv, NULL '\\N')"):
        data, rows, status = _read_copy_data(conn, progress, started)
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
    frame = _normalise(frame, oids, conn, from_text=True)
    frame.columns = names
    return Result(frame, len(frame), status, bulk=True)


def _read_copy_data(conn: Any, progress: Progress | None, started: float) -> tuple[bytearray, int, str]:
    """All CopyData messages of a COPY TO STDOUT, read straight from libpq.

    psycopg's Copy iterator costs about a microsecond of Python per message and a message is one row: for a
    million rows that was half the time of a query through the tunnel. Here each row costs one libpq call.
    """
    import psycopg
    from psycopg import generators, pq

    pgconn = conn.pgconn
    data = bytearray()
    rows = 0
    next_report = started + PROGRESS_AFTER
    while True:
        nbytes, chunk = pgconn.get_copy_data(1)
        if nbytes > 0:
            data += chunk
            rows += 1
            if progress is not None and not rows & 0xFFF and time.monotonic() >= next_report:
                progress(rows, len(data))
                next_report = time.monotonic() + 0.25
        elif nbytes == 0:  # nothing buffered: wait for the socket (a signal, e.g. Ctrl-C, interrupts the wait)
            select.select([pgconn.socket], [], [], 0.5)
            pgconn.consume_input()
        else:
            break
    if nbytes == -2:
        raise psycopg.OperationalError(pgconn.get_error_message())
    results = conn.wait(generators.fetch_many(pgconn))
    if not results or results[-1].status != pq.ExecStatus.COMMAND_OK:
        raise psycopg.errors.error_from_result(results[-1], encoding=conn.info.encoding) if results else \
            psycopg.OperationalError("the COPY ended without a result")
    return data, rows, (results[-1].command_status or b"").decode() or f"COPY {rows}"


def _frame_from_rows(rows: list[tuple], names: list[str], oids: list[int]) -> Any:
    import pandas as pd

    columns = list(zip(*rows, strict=True)) if rows else [() for _ in names]
    frame = pd.DataFrame({i: pd.Series(list(col), dtype=object) for i, col in enumerate(columns)},
                         index=range(len(rows)))
    frame = _normalise(frame, oids, None, from_text=False)
    frame.columns = names
    return frame


def _normalise(frame: Any, oids: list[int], conn: Any, *, from_text: bool) -> Any:
    """One dtype per PostgreSQL type, the same for both paths."""
    for i, oid in enumerate(oids):
        col = frame[i]
        if oid in INT_OIDS:
            col = col.astype("Int64")
            frame[i] = col.astype("int64") if not col.isna().any() else col
        elif oid in FLOAT_OIDS:
            frame[i] = col.astype("float64") if not from_text else col
        elif oid == BOOL_OID:
            if from_text:
                col = col.map({"t": True, "f": False})
            col = col.astype("boolean")
            frame[i] = col.astype(bool) if not col.isna().any() else col
        elif oid == TIMESTAMPTZ_OID:
            col = _datetimes(col, conn, oid, utc=True) if from_text else _objects_to_datetimes(col, utc=True)
            frame[i] = _unit(col, "datetime64[us, UTC]")
        elif oid in (TIMESTAMP_OID, DATE_OID):
            col = _datetimes(col, conn, oid, utc=False) if from_text else _objects_to_datetimes(col, utc=False)
            frame[i] = _unit(col, "datetime64[us]")
        elif oid in TEXT_OIDS:
            frame[i] = col.astype(object).where(col.notna(), None)
        elif from_text:
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


def _objects_to_datetimes(col: Any, *, utc: bool) -> Any:
    import pandas as pd

    try:
        return pd.to_datetime(col, utc=utc)
    except (ValueError, OverflowError, TypeError, pd.errors.OutOfBoundsDatetime):
        return col


def _timedeltas(col: Any) -> Any:
    import pandas as pd

    try:
        return pd.to_timedelta(col)
    except (ValueError, OverflowError, TypeError):
        return col


def _unit(col: Any, dtype: str) -> Any:
    """One resolution (microseconds, PostgreSQL's own) whichever path and pandas version made the column."""
    if col.dtype == object:
        return col  # values pandas cannot hold (infinity, year 10000) stay Python objects
    try:
        return col.astype(dtype)
    except (ValueError, TypeError, OverflowError):
        return col
