"""Query results into pandas DataFrames, with the types a pandas user expects.

Big SELECTs take a bulk path: `COPY (query) TO STDOUT (FORMAT binary)` on the same connection (so the
session's temp tables, settings and transaction are seen), decoded by type (wgmagic.sql.binary_copy), with
column types from a zero-row describe. Other statements, statements with parameters (COPY cannot take them)
and results with a column type the binary decoder does not carry use an ordinary cursor. Both paths end in
the same per-type normalisation, so a column looks the same, value for value and dtype for dtype, whichever
path brought it.
"""

from __future__ import annotations

import re
import select
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from wgmagic.sql.binary_copy import BULK_OIDS, BulkDecodeError
from wgmagic.sql.loaders import binary_loaders, guarded_loaders
from wgmagic.sql.messages import SqlError

if TYPE_CHECKING:
    from array import array

    from psycopg import Connection

    from wgmagic.sql.binary_copy import LoadOne

INT_OIDS = {20, 21, 23, 26}  # int8, int2, int4, oid
FLOAT4_OID = 700
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
    """What one statement gave back: rows as a DataFrame (or None), the row count and the server's status."""

    frame: Any | None  # a DataFrame when the statement returned rows
    rowcount: int
    status: str  # the server's command tag, e.g. "INSERT 0 3"
    bulk: bool = False


Progress = Callable[[int, int], None]  # (rows, bytes) so far


class ClientDecodeError(SqlError):
    """wgmagic could not turn what the server sent into values: a client-side failure, not a server error."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"wgmagic could not decode the result on this side (the server reported no error; the "
                         f"statement ran): {detail}")


def is_row_query(sql: str) -> bool:
    return bool(_ROWS_QUERY.match(_strip_comments(sql))) and not _LOCKING.search(sql)


# What may hide a keyword: comments, string constants (standard, E'', dollar-quoted) and quoted identifiers
# (PostgreSQL docs, "Lexical Structure" 4.1.2-4.1.5).
_OPAQUE = re.compile(r"""--[^\n]*|/\*.*?\*/|[eE]'(?:[^'\\]|\\.|'')*'|'(?:[^']|'')*'|"(?:[^"]|"")*"|"""
                     r"""(\$[A-Za-z_\d]*\$).*?\1""", re.DOTALL)
_FROM = re.compile(r"\bfrom\b", re.IGNORECASE)
_SMALL_LIMIT = re.compile(r"\b(?:limit\s+(\d+)|fetch\s+(?:first|next)\s+(\d+)\s+rows?\s+only)\s*;?\s*$",
                          re.IGNORECASE)
SMALL_ROWS = 1000  # a result known to have at most this many rows takes the row path


def may_be_big(sql: str) -> bool:
    """Whether a statement may return enough rows for the COPY path to pay for its extra round trip.

    Decided from the text alone, without a round trip: False for a statement with no FROM (`SELECT 1`,
    `SELECT now(), version()`, VALUES lists) and for one that ends in `LIMIT n` / `FETCH FIRST n ROWS ONLY` with
    n <= SMALL_ROWS; True otherwise, and whenever the text is not understood. A wrong guess costs speed, never
    a value: both paths return the same frame (set-returning functions without FROM, e.g.
    `SELECT generate_series(1, 1000000)`, take the slower row path)."""
    try:
        text = _OPAQUE.sub(" ", sql)
    except RecursionError:
        return True
    if "'" in text or '"' in text or "$$" in text:
        return True  # an unterminated quote: leave the statement to the server
    limit = _SMALL_LIMIT.search(text)
    if limit and int(limit.group(1) or limit.group(2)) <= SMALL_ROWS:
        return False
    return bool(_FROM.search(text))


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


def run_statement(conn: Connection[Any], sql: str, params: dict[str, object] | None, *, bulk: bool | None = None,
                  progress: Progress | None = None) -> Result:
    """Execute one statement on a psycopg connection and bring back its rows, if any.

    bulk=None (the default) takes the COPY path only for a statement that may return many rows (see
    `may_be_big`): a small one such as `SELECT 1` runs once on the row path, in one round trip, where the COPY
    path costs two (the describe, then the COPY). bulk=True takes the COPY path whenever it can: a
    parameterless row query whose column types the binary decoder carries. bulk=False forces the row (cursor)
    path. Both paths give the same values and dtypes, so the choice is one of speed only. Raises psycopg.Error
    for what the server reported and ClientDecodeError for what this side could not decode."""
    if bulk is None:
        from wgmagic.sql.outputs import current

        bulk = current().streams or may_be_big(sql)
    if bulk and params is None and is_row_query(sql) and not conn.info.transaction_status:
        described = _describe(conn, sql)
        if described is not None and all(oid in BULK_OIDS for oid in described[1]):
            return _copy_out(conn, sql, described, progress)
    import psycopg

    with conn.cursor() as cur:
        guarded_loaders(cur.adapters)
        cur.execute(sql, params) if params is not None else cur.execute(sql)
        status = cur.statusmessage or ""
        if cur.description is None:
            return Result(None, cur.rowcount, status)
        names = [col.name for col in cur.description]
        oids = [col.type_code for col in cur.description]
        try:
            rows = cur.fetchall()
        except psycopg.DataError as exc:  # raised by a loader here, after the server sent the rows
            raise ClientDecodeError(str(exc)) from None
    from wgmagic.sql.outputs import current

    return Result(_frame_from_rows(rows, names, oids, current().string_dtype), len(rows), status)


def _describe(conn: Connection[Any], sql: str) -> tuple[list[str], list[int]] | None:
    import psycopg

    body = sql.strip().rstrip(";").strip()
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT * FROM ({body}\n) AS wgmagic_describe LIMIT 0")
            assert cur.description is not None
            return [col.name for col in cur.description], [col.type_code for col in cur.description]
    except psycopg.Error:
        return None  # not expressible as a subquery: the ordinary path will run it (and report any error)


def _copy_out(conn: Connection[Any], sql: str, described: tuple[list[str], list[int]],
              progress: Progress | None) -> Result:
    """The COPY path: the binary COPY stream read from libpq and decoded chunk by chunk as it arrives
    (wgmagic.sql.copy_stream) into the sink the cell's output asks for (wgmagic.sql.outputs)."""
    from wgmagic.sql import outputs
    from wgmagic.sql.copy_stream import StreamDecoder

    names, oids = described
    spec = outputs.current()
    body = sql.strip().rstrip(";").strip()
    with conn.cursor() as cur:
        guarded_loaders(cur.adapters)
        utf8 = conn.info.encoding.lower().replace("_", "-") in ("utf-8", "utf8")
        load_one = binary_loaders(cur)

        def frame(pieces: list[Any], rows: int) -> Any:
            return _frame_from_pieces(pieces, names, oids, rows, load_one, spec.string_dtype)

        sink = outputs.make_sink(spec, names, oids, frame)
        decoder = StreamDecoder(oids, load_one, utf8, sink.add)
        failure: str | None = None
        try:
            with cur.copy(f"COPY ({body}\n) TO STDOUT (FORMAT binary)"):
                reader = CopyReader(conn, progress, rows=lambda: decoder.rows)
                for data, lengths in reader.chunks():
                    if failure is not None:
                        continue  # read on to the end: the connection must be left idle
                    try:
                        decoder.feed(data, lengths)
                    except BulkDecodeError as exc:
                        failure = str(exc)
                    except Exception as exc:  # a loader's failure on a value: still this side's
                        failure = f"{type(exc).__name__}: {exc}"
            if failure is None:
                try:
                    decoder.finish()
                except BulkDecodeError as exc:
                    failure = str(exc)
            if failure is not None:
                raise ClientDecodeError(failure)
            status = reader.status
            if not names:
                count = int(status.split()[-1]) if status.split()[-1:] and status.split()[-1].isdigit() else 0
                sink.abort()
                return Result(outputs.convert(_frame_from_rows([()] * count, [], [], spec.string_dtype), spec),
                              count, status, bulk=True)
            rows = decoder.rows
            try:
                value = sink.finish(rows)
            except BulkDecodeError as exc:
                raise ClientDecodeError(str(exc)) from None
        except BaseException:
            sink.abort()
            raise
    return Result(value, rows, status, bulk=True)


def _frame_from_pieces(pieces: list[Any], names: list[str], oids: list[int], rows: int, load_one: LoadOne,
                       string_dtype: str) -> Any:
    """A DataFrame from one piece per column, each column in the row path's dtype."""
    import pandas as pd

    from wgmagic.sql.columns import piece_to_pandas

    if not pieces:
        pieces = [None] * len(names)  # no rows: every column empty
    decoded: list[tuple[Any, bool]] = []  # (values, final): a finished column, or values to normalise
    for k, (piece, oid) in enumerate(zip(pieces, oids, strict=True)):
        if k < len(pieces) and pieces[k] is not None:
            pieces[k] = None  # the caller's reference: each piece can go once it is a column
        if piece is None:
            decoded.append(([], False) if oid not in TEXT_OIDS else
                           (pd.Series([], dtype=object if string_dtype == "object" else _text_dtype()), True))
        else:
            decoded.append(piece_to_pandas(piece, load_one, string_dtype))
    loose = [i for i, (_, final) in enumerate(decoded) if not final]
    columns = {i: values for i, (values, final) in enumerate(decoded) if final}
    if loose:
        objects = pd.DataFrame({k: pd.Series(decoded[i][0], dtype=object) for k, i in enumerate(loose)},
                               index=range(rows))
        objects = _normalise(objects, [oids[i] for i in loose])
        columns.update({i: objects[k] for k, i in enumerate(loose)})
        for i in loose:  # text the bulk path loaded value by value ("char", a non-UTF-8 session): as the row path
            if oids[i] in TEXT_OIDS and string_dtype == "str":
                columns[i] = columns[i].astype(_text_dtype())
    frame = pd.DataFrame({i: columns.pop(i) for i in range(len(names))}, index=range(rows), copy=False)
    frame.columns = names
    return frame


def _text_dtype() -> Any:
    from wgmagic.sql.columns import text_dtype

    return text_dtype()


class CopyReader:
    """The CopyData messages of a COPY TO STDOUT, read straight from libpq, in chunks of about CHUNK_BYTES:
    `chunks()` yields (data, message lengths); `status` is the command tag once it has ended. Progress reports
    `rows()` (the decoder's count of rows decoded so far), not messages: the binary COPY's header and trailer
    travel in CopyData messages too (PostgreSQL sends the trailer as a message of its own).

    psycopg's Copy iterator costs about a microsecond of Python per message and a message is one row: for a
    million rows that was half the time of a query through the tunnel. Here each row costs one libpq call;
    a signal (Ctrl-C) interrupts the wait for the socket."""

    def __init__(self, conn: Connection[Any], progress: Progress | None, rows: Callable[[], int]) -> None:
        self.conn = conn
        self.progress = progress
        self.rows = rows  # rows decoded so far (the consumer decodes each chunk before asking for the next)
        self.status = ""
        self.messages = 0
        self.bytes = 0

    def chunks(self) -> Iterator[tuple[bytearray, array[int]]]:
        from array import array

        import psycopg
        from psycopg import generators, pq

        from wgmagic.sql.copy_stream import CHUNK_BYTES

        conn, progress = self.conn, self.progress
        pgconn = conn.pgconn
        get = pgconn.get_copy_data
        started = time.monotonic()
        next_report = started + PROGRESS_AFTER
        data = bytearray()
        lengths = array("q")
        while True:
            nbytes, chunk = get(1)
            if nbytes > 0:
                data += chunk
                lengths.append(nbytes)
                if len(data) >= CHUNK_BYTES:
                    self.messages += len(lengths)
                    self.bytes += len(data)
                    yield data, lengths
                    data, lengths = bytearray(), array("q")
                    if progress is not None and time.monotonic() >= next_report:
                        progress(self.rows(), self.bytes)
                        next_report = time.monotonic() + 0.25
            elif nbytes == 0:  # nothing buffered: wait for the socket (a signal, e.g. Ctrl-C, interrupts it)
                select.select([pgconn.socket], [], [], 0.5)
                pgconn.consume_input()
            else:
                break
        if lengths:
            self.messages += len(lengths)
            self.bytes += len(data)
            yield data, lengths
        if nbytes == -2:
            raise psycopg.OperationalError(pgconn.get_error_message())
        results = conn.wait(generators.fetch_many(pgconn))
        if not results or results[-1].status != pq.ExecStatus.COMMAND_OK:
            raise psycopg.errors.error_from_result(results[-1], encoding=conn.info.encoding) if results else \
                psycopg.OperationalError("the COPY ended without a result")
        if progress is not None and time.monotonic() - started >= PROGRESS_AFTER:
            progress(self.rows(), self.bytes)
        self.status = (results[-1].command_status or b"").decode() or f"COPY {self.rows()}"


def _frame_from_rows(rows: list[tuple[Any, ...]], names: list[str], oids: list[int], string_dtype: str = "str") -> Any:
    import pandas as pd

    columns = list(zip(*rows, strict=True)) if rows else [() for _ in names]
    data = {i: _plain_column(values, oid) for i, (values, oid) in enumerate(zip(columns, oids, strict=True))}
    loose = [i for i, column in data.items() if column is None]
    if loose:  # the other types: Python objects through the shared normalisation
        objects = pd.DataFrame({k: pd.Series(list(columns[i]), dtype=object) for k, i in enumerate(loose)},
                               index=range(len(rows)))
        objects = _normalise(objects, [oids[i] for i in loose])
        data.update({i: objects[k] for k, i in enumerate(loose)})
    index = range(len(rows))
    for i, oid in enumerate(oids):
        if oid in TEXT_OIDS:  # pandas' Arrow-backed string dtype, or Python str objects when asked for
            if string_dtype == "str":
                data[i] = pd.Series(data[i], index=index, dtype=_text_dtype())
            else:
                data[i] = pd.Series(data[i], index=index, dtype=object, copy=False)
    frame = pd.DataFrame(data, index=index)
    frame.columns = names
    return frame


def _plain_column(values: tuple[Any, ...], oid: int) -> Any:
    """A column of a common type with no NULL as one numpy array in the dtype `_normalise` gives it, built in one
    step (a small result's DataFrame cost more than its round trip when every column went through
    pandas' astype); None for everything else."""
    import numpy as np

    if oid in TEXT_OIDS:  # str or None: object either way
        column = np.empty(len(values), dtype=object)
        column[:] = values
        return column
    if None in values:
        return None
    if oid in INT_OIDS:
        return np.array(values, dtype=np.int64)
    if oid in FLOAT_OIDS:
        column = np.array(values, dtype=np.float64)
        return column.astype(np.float32).astype(np.float64) if oid == FLOAT4_OID else column
    if oid == BOOL_OID:
        return np.array(values, dtype=bool)
    return None


def _normalise(frame: Any, oids: list[int]) -> Any:
    """One dtype per PostgreSQL type, from columns of Python values (as psycopg's loaders give them).

    The binary bulk decoder builds the same dtypes directly for the types it decodes without Python objects;
    the differential test (tests/integration/test_wgsql_values.py) holds the two to each other."""
    import numpy as np

    for i, oid in enumerate(oids):
        col = frame[i]
        if oid in INT_OIDS:
            col = col.astype("Int64")
            frame[i] = col.astype("int64") if not col.isna().any() else col
        elif oid in FLOAT_OIDS:
            col = col.astype("float64")
            if oid == FLOAT4_OID:  # the text's shortest decimal back to the server's float4, held exactly
                col = col.astype(np.float32).astype("float64")
            frame[i] = col
        elif oid == BOOL_OID:
            col = col.astype("boolean")
            frame[i] = col.astype(bool) if not col.isna().any() else col
        elif oid == TIMESTAMPTZ_OID:
            frame[i] = _unit(_objects_to_datetimes(col, utc=True), "datetime64[us, UTC]")
        elif oid in (TIMESTAMP_OID, DATE_OID):
            frame[i] = _unit(_objects_to_datetimes(col, utc=False), "datetime64[us]")
        if oid == INTERVAL_OID:
            frame[i] = _unit(_timedeltas(frame[i]), "timedelta64[us]")
        elif oid not in INT_OIDS | FLOAT_OIDS | {BOOL_OID, TIMESTAMPTZ_OID, TIMESTAMP_OID, DATE_OID}:
            frame[i] = col.astype(object)  # NULL is None; a value pandas calls NA (Decimal('NaN')) stays
    return frame


def _objects_to_datetimes(col: Any, *, utc: bool) -> Any:
    import pandas as pd

    if col.map(lambda value: isinstance(value, str)).any():
        return col  # a stand-in ('infinity', a year Python cannot hold): the column stays Python objects
    try:
        return pd.to_datetime(col, utc=utc)
    except (ValueError, OverflowError, TypeError, pd.errors.OutOfBoundsDatetime):
        return _microseconds(col, "datetime64[us]", utc=utc)


def _timedeltas(col: Any) -> Any:
    import pandas as pd

    if col.map(lambda value: isinstance(value, str)).any():
        return col
    try:
        return pd.to_timedelta(col)
    except (ValueError, OverflowError, TypeError):
        return _microseconds(col, "timedelta64[us]")


def _microseconds(col: Any, dtype: str, *, utc: bool = False) -> Any:
    """pandas 2 (the newest on Python 3.10) parses Python datetimes and timedeltas into nanoseconds only (years
    1677-2262, durations up to 292 years); pandas 3 into microseconds. Past that range, the same microsecond
    column as pandas 3 and the bulk path give, built by NumPy (None -> NaT); the objects if NumPy cannot."""
    import datetime

    import numpy as np
    import pandas as pd

    values = col.tolist()
    try:
        if utc:
            values = [None if v is None else v.astimezone(datetime.timezone.utc).replace(tzinfo=None)
                      for v in values]
        series = pd.Series(np.array(values, dtype=dtype), index=col.index)
    except (ValueError, OverflowError, TypeError, AttributeError):
        return col
    return series.dt.tz_localize("UTC") if utc else series


def _unit(col: Any, dtype: str) -> Any:
    """One resolution (microseconds, PostgreSQL's own) whichever path and pandas version made the column."""
    if col.dtype == object:
        return col  # values pandas cannot hold (infinity, year 10000) stay Python objects
    try:
        return col.astype(dtype)
    except (ValueError, TypeError, OverflowError):
        return col
