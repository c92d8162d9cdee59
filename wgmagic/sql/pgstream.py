"""PostgreSQL results read as they arrive, for the outputs that must not hold a whole result: `--chunks N` (an
iterator read from the server as it is consumed) and `--to FILE` of a result the COPY path cannot carry.

- `copy_parts`: the binary COPY stream of a row query (the bulk path's, wgmagic.sql.results.CopyReader and
  wgmagic.sql.copy_stream.StreamDecoder), decoded chunk by chunk, yielded as it is decoded. The COPY is sent
  with libpq directly (psycopg's `Cursor.copy` holds the connection's lock while its block is open, and an
  iterator the user has not finished would keep it).
- `row_batches`: any statement's rows through psycopg's `Cursor.stream` (libpq's chunked-rows mode, libpq
  17: a bounded batch of rows per result; single-row mode before), for statements COPY cannot run:
  statements with parameters, DML with RETURNING, `SELECT ... FOR UPDATE`, a result type the binary decoder
  does not carry.

Both generators leave the connection idle whatever ends them: the end of the rows, `close()` (a ChunkStream
dropped or closed, or another statement on the connection), a decode error, or Ctrl-C, which sends the
server-side cancel and reads what is left (`drain_after_interrupt`) and is raised as QueryCancelledError.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from wgmagic.sql.binary_copy import BULK_OIDS, BulkDecodeError
from wgmagic.sql.loaders import binary_loaders, guarded_loaders
from wgmagic.sql.messages import QueryCancelledError
from wgmagic.sql.results import (
    ClientDecodeError,
    CopyReader,
    Progress,
    _describe,
    _frame_from_pieces,
    _frame_from_rows,
    is_row_query,
)

if TYPE_CHECKING:
    import psycopg

ROW_BATCH = 10_000  # rows per batch on the row path (`Cursor.stream`'s size)
CANCEL_TIMEOUT = 5.0  # seconds for the cancel request and the rest of the rows to be read


def bulk_columns(conn: psycopg.Connection[Any], sql: str,
                 params: dict[str, object] | None) -> tuple[list[str], list[int]] | None:
    """(names, type OIDs) when `sql` can take the COPY path (as wgmagic.sql.results.run_statement decides for
    bulk=True: a parameterless row query, no transaction in an odd state, every column type carried by the
    binary decoder), else None. Costs one round trip (a zero-row describe) for a row query."""
    if params is not None or not is_row_query(sql) or conn.info.transaction_status:
        return None
    described = _describe(conn, sql)
    if described is None or not all(oid in BULK_OIDS for oid in described[1]):
        return None
    return described


def copy_parts(conn: psycopg.Connection[Any], sql: str, described: tuple[list[str], list[int]],
               progress: Progress | None = None) -> Iterator[tuple[list[Any], int]]:
    """Yield (one copy_stream.Piece per column, rows) for each decoded chunk of `COPY (sql) TO STDOUT (FORMAT
    binary)`, as the chunks arrive. Raises ClientDecodeError for bytes this side cannot decode,
    QueryCancelledError after Ctrl-C, psycopg.Error for the server's errors."""
    from psycopg import generators, pq

    from wgmagic.sql.copy_stream import StreamDecoder

    _, oids = described
    body = sql.strip().rstrip(";").strip()
    cur = conn.cursor()
    guarded_loaders(cur.adapters)
    utf8 = conn.info.encoding.lower().replace("_", "-") in ("utf-8", "utf8")
    load_one = binary_loaders(cur)

    decoded: list[tuple[list[Any], int]] = []
    decoder = StreamDecoder(oids, load_one, utf8, lambda pieces, rows: decoded.append((pieces, rows)))
    pgconn = conn.pgconn
    pgconn.send_query(f"COPY ({body}\n) TO STDOUT (FORMAT binary)".encode(conn.info.encoding))
    settled = False
    try:
        results = conn.wait(generators.execute(pgconn))
        if not results or results[-1].status != pq.ExecStatus.COPY_OUT:
            import psycopg

            settled = True
            raise (psycopg.errors.error_from_result(results[-1], encoding=conn.info.encoding) if results else
                   psycopg.OperationalError("the COPY did not start"))
        reader = CopyReader(conn, progress, rows=lambda: decoder.rows)
        for data, lengths in reader.chunks():
            try:
                decoder.feed(data, lengths)
            except BulkDecodeError as exc:
                raise ClientDecodeError(str(exc)) from None
            except ClientDecodeError:
                raise
            except Exception as exc:  # a loader's failure on a value: still this side's
                raise ClientDecodeError(f"{type(exc).__name__}: {exc}") from None
            while decoded:
                yield decoded.pop(0)
        settled = True  # the reader read the COPY's end and its result
        try:
            decoder.finish()
        except BulkDecodeError as exc:
            raise ClientDecodeError(str(exc)) from None
    except KeyboardInterrupt:
        settled = True
        raise _cancelled(conn) from None
    finally:
        cur.close()
        if not settled:
            settle(conn)


def row_batches(conn: psycopg.Connection[Any], sql: str, params: dict[str, object] | None,
                described: Callable[[list[str], list[int]], None] | None = None,
                ended: Callable[[str, int], None] | None = None,
                size: int = ROW_BATCH) -> Iterator[tuple[list[Any], int]]:
    """Yield (a list of row tuples, rows) of any statement, up to `size` rows at a time, through
    `Cursor.stream`. `described(names, oids)` is called once the result's columns are known (before the first
    batch, also for a result of no rows; not at all for a statement without a result); `ended(status,
    rowcount)` when the statement has ended (the server's command tag). Raises ClientDecodeError,
    QueryCancelledError after Ctrl-C, psycopg.Error for the server's errors."""
    import psycopg

    settled = False
    with _stream_cursor(conn) as cur:
        guarded_loaders(cur.adapters)
        stream = cur.stream(sql, params, size=size) if _chunked_rows() else cur.stream(sql, params)
        batch: list[Any] = []
        told = False

        def tell() -> None:
            nonlocal told
            if not told and described is not None and cur.description is not None:
                described([c.name for c in cur.description], [c.type_code for c in cur.description])
            told = True

        try:
            for row in stream:
                if not told:
                    tell()
                batch.append(row)
                if len(batch) >= size:
                    yield batch, len(batch)
                    batch = []
            settled = True
            final = getattr(cur, "final", None)
            if final is not None:
                cur.pgresult = final  # the command tag, and the columns of a result of no rows
            tell()
            if batch:
                yield batch, len(batch)
        except psycopg.DataError as exc:  # raised by a loader here, after the server sent the rows
            raise ClientDecodeError(str(exc)) from None
        except KeyboardInterrupt:
            settled = True
            stream.close()  # psycopg cancels the query and reads the rest
            raise _cancelled(conn) from None
        finally:
            if not settled:
                stream.close()
        if ended is not None:
            ended(cur.statusmessage or "", cur.rowcount)


def _stream_cursor(conn: psycopg.Connection[Any]) -> Any:
    """A cursor whose `stream` keeps the statement's last result (`final`: the command tag of a statement
    without rows, the columns of a result of no rows) where psycopg's drops it (and raises "didn't produce a
    result" for a statement without rows). Mirrors psycopg 3.2-3.3's Cursor._stream_fetchone_gen; with
    another psycopg, the plain cursor."""
    import psycopg
    from psycopg import pq
    from psycopg.generators import fetch

    base = getattr(psycopg.Cursor, "_stream_fetchone_gen", None)
    if base is None:
        return conn.cursor()
    rows_statuses = (pq.ExecStatus.SINGLE_TUPLE, getattr(pq.ExecStatus, "TUPLES_CHUNK", pq.ExecStatus.SINGLE_TUPLE))
    ended_statuses = (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK)

    class StreamCursor(psycopg.Cursor):  # type: ignore[type-arg]
        final: Any = None

        def _stream_fetchone_gen(self, first: bool) -> Any:
            res = yield from fetch(self._pgconn)
            if res is None or res.status in rows_statuses:
                if res is not None:
                    self.pgresult = res
                    self._tx.set_pgresult(res, set_loaders=first)
                    if first:
                        self._make_row = self._make_row_maker()
                return res
            if res.status in ended_statuses:
                self.final = res
                while res:
                    res = yield from fetch(self._pgconn)
                return None
            return self._raise_for_result(res)

    return StreamCursor(conn)


def _chunked_rows() -> bool:
    from psycopg import pq

    return pq.version() >= 170000


def frame_builders(conn: psycopg.Connection[Any], names: list[str], oids: list[int], string_dtype: str
                   ) -> tuple[Callable[[list[Any], int], Any], Callable[[list[Any]], Any]]:
    """(pieces -> DataFrame, rows -> DataFrame): the two paths' frames for a result of these columns."""
    cur = conn.cursor()
    guarded_loaders(cur.adapters)
    load_one = binary_loaders(cur)

    def of_pieces(pieces: list[Any], rows: int) -> Any:
        return _frame_from_pieces(pieces, names, oids, rows, load_one, string_dtype)

    def of_rows(rows: list[Any]) -> Any:
        return _frame_from_rows(rows, names, oids, string_dtype)

    return of_pieces, of_rows


def rows_to_arrays(rows: list[Any], oids: list[int]) -> list[Any]:
    """Row tuples (psycopg's values) as one Arrow array per column, of the types the COPY path gives them
    (wgmagic.sql.columns.arrow_type): the same file whichever path brought the rows."""
    import pyarrow as pa

    from wgmagic.sql.columns import arrow_type, values_to_arrow

    columns = list(zip(*rows, strict=True)) if rows else [() for _ in oids]
    arrays = []
    for values, oid in zip(columns, oids, strict=True):
        if oid == 700:  # float4: the text's shortest decimal back to the server's single-precision value
            arrays.append(pa.array(values, type=pa.float32()).cast(pa.float64()))
        else:
            arrays.append(values_to_arrow(values, arrow_type(oid)))
    return arrays


def settle(conn: psycopg.Connection[Any]) -> None:
    """Leave the connection idle after a COPY or a stream ended early: cancel on the server and read the rest;
    a connection that cannot be read back to idle is closed (the next statement opens a fresh one)."""
    if conn.closed or conn.broken:
        return
    if not drain_after_interrupt(conn, CANCEL_TIMEOUT):
        import contextlib

        with contextlib.suppress(Exception):
            conn.close()


def _cancelled(conn: psycopg.Connection[Any]) -> QueryCancelledError:
    if drain_after_interrupt(conn, CANCEL_TIMEOUT):
        return QueryCancelledError("Query cancelled: a cancel request went to the server through the tunnel and "
                                   "the query has stopped. The connection is still usable.", sqlstate="57014")
    import contextlib

    with contextlib.suppress(Exception):
        conn.close()
    return QueryCancelledError("Query interrupted; the server did not confirm the cancel, so the connection was "
                               "closed and the next cell opens a new one.")


def drain_after_interrupt(raw: psycopg.Connection[Any], timeout: float = 5.0) -> bool:
    """After Ctrl-C, a psycopg connection may still be mid-query (a COPY's data not yet read): send the
    server-side cancel and read what is left, until the connection is idle. True when it is usable again."""
    import psycopg
    from psycopg import generators, pq

    active = psycopg.pq.TransactionStatus.ACTIVE
    if raw.info.transaction_status != active:
        return True
    deadline = time.monotonic() + timeout
    try:
        raw.cancel_safe(timeout=timeout)
        while raw.info.transaction_status == active and time.monotonic() < deadline:
            left = max(0.1, deadline - time.monotonic())
            try:
                results = raw.wait(generators.fetch_many(raw.pgconn), timeout=left)
                if results and results[-1].status == pq.ExecStatus.COPY_OUT:
                    while not isinstance(raw.wait(generators.copy_from(raw.pgconn), timeout=left), pq.PGresult):
                        pass  # rows still in flight: read and drop them
                elif not results:
                    break
            except psycopg.errors.QueryCanceled:
                continue  # the cancel's own answer: read on to the end of the query
    except (psycopg.Error, OSError):
        return False
    return raw.info.transaction_status != active and not raw.broken
