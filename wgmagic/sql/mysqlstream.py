"""MySQL/MariaDB rows as Arrow arrays of fixed types, for `--to FILE` written batch by batch as an unbuffered
(server-side streaming) PyMySQL cursor reads them, and the end of such a cursor after KILL QUERY.

A Parquet file's schema is fixed before its first row group, so each column's Arrow type comes from the
result's column definition (MySQL client/server protocol, "Column Definition"), never from the values:

  TINYINT .. BIGINT, YEAR  int64 (BIGINT UNSIGNED and BIT: uint64). TINYINT(1) too: whether it holds only 0
                           and 1 (the pandas path's bool) is not known until the last row
  FLOAT                    float64 holding the server's single-precision value; DOUBLE float64
  DATETIME, TIMESTAMP, DATE  timestamp[us] (as the pandas path's datetime64[us]); a zero date is null
  TIME                     duration[us]
  binary strings, BLOB, GEOMETRY (binary collation, charset 63)  large_binary
  everything else (text, DECIMAL, JSON, ENUM, SET)  large_string: the value's text (DECIMAL exact)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from wgmagic.sql.mysql_types import (
    BIT,
    BLOB,
    DATE,
    DATETIME,
    DOUBLE,
    FLOAT,
    GEOMETRY,
    INT24,
    LONG,
    LONG_BLOB,
    LONGLONG,
    MEDIUM_BLOB,
    NEWDATE,
    SHORT,
    STRING,
    TIME,
    TIMESTAMP,
    TINY,
    TINY_BLOB,
    UNSIGNED_FLAG,
    VAR_STRING,
    VARCHAR,
    YEAR,
)

BINARY_CHARSET = 63  # the "binary" character set: the bytes are not text
QUERY_INTERRUPTED = 1317  # ER_QUERY_INTERRUPTED: the server's answer to KILL QUERY
ROW_BATCH = 10_000  # rows per fetchmany, and per Parquet row group

STRING_TYPES = (VARCHAR, TINY_BLOB, MEDIUM_BLOB, LONG_BLOB, BLOB, VAR_STRING, STRING)  # binary when charset 63
Column = tuple[Any, Callable[[Sequence[Any]], Any]]  # (Arrow type, values -> Arrow array)


def arrow_columns(fields: Sequence[Any]) -> list[Column]:
    """Each column's Arrow type and its conversion, from PyMySQL's column definitions (see the module's table)."""
    import pyarrow as pa

    from wgmagic.sql.columns import values_to_arrow

    def plain(target: Any) -> Column:
        return target, lambda values: values_to_arrow(values, target)

    columns: list[Column] = []
    for field in fields:
        kind = field.type_code
        unsigned = bool(field.flags & UNSIGNED_FLAG)
        if kind == BIT or (kind == LONGLONG and unsigned):
            columns.append((pa.uint64(), lambda values: pa.array(
                [int.from_bytes(v, "big") if isinstance(v, bytes) else v for v in values], type=pa.uint64())))
        elif kind in (TINY, SHORT, LONG, LONGLONG, INT24, YEAR):
            columns.append(plain(pa.int64()))
        elif kind == FLOAT:  # the text's shortest decimal back to the server's single-precision value
            columns.append((pa.float64(), lambda values: pa.array(values, type=pa.float32()).cast(pa.float64())))
        elif kind == DOUBLE:
            columns.append(plain(pa.float64()))
        elif kind in (DATETIME, TIMESTAMP, DATE, NEWDATE):
            columns.append(plain(pa.timestamp("us")))
        elif kind == TIME:
            columns.append(plain(pa.duration("us")))
        elif kind == GEOMETRY or (kind in STRING_TYPES and getattr(field, "charsetnr", None) == BINARY_CHARSET):
            columns.append(plain(pa.large_binary()))
        else:
            columns.append(plain(pa.large_string()))
    return columns


def arrow_schema(fields: Sequence[Any], columns: Sequence[Column]) -> Any:
    import pyarrow as pa

    from wgmagic.sql.columns import _unique

    names = [field.name for field in fields]
    return pa.schema([pa.field(_unique(names, i), column[0]) for i, column in enumerate(columns)])


def rows_to_arrays(rows: Sequence[Sequence[Any]], columns: Sequence[Column]) -> list[Any]:
    """Row tuples (PyMySQL's values) as one Arrow array per column."""
    values = list(zip(*rows, strict=True)) if rows else [() for _ in columns]
    return [convert(column) for column, (_, convert) in zip(values, columns, strict=True)]


def fetch(cursor: Any, size: int) -> list[Any]:
    """Up to `size` rows of an unbuffered cursor; after KILL QUERY the result is marked ended (PyMySQL leaves it
    open after the server's error, and the next statement would wait for rows that never come), then the error
    is raised."""
    import pymysql

    try:
        return list(cursor.fetchmany(size))
    except pymysql.err.OperationalError as exc:
        if exc.args and exc.args[0] == QUERY_INTERRUPTED:
            ended(cursor)
        raise


def active(cursor: Any) -> bool:
    """Whether an unbuffered cursor's result still has rows (or its end) to read."""
    result = getattr(cursor, "_result", None)
    return bool(result is not None and getattr(result, "unbuffered_active", False))


def ended(cursor: Any) -> None:
    """Mark an unbuffered cursor's result as read to its end (its connection may run the next statement)."""
    result = getattr(cursor, "_result", None)
    if result is not None:
        result.unbuffered_active = False


def read_to_end(cursor: Any) -> None:
    """Read and drop what is left of an unbuffered result (after KILL QUERY: up to the server's error)."""
    import pymysql

    try:
        while fetch(cursor, ROW_BATCH):
            pass
    except pymysql.err.OperationalError as exc:
        if not exc.args or exc.args[0] != QUERY_INTERRUPTED:
            raise
