"""What `%%wgsql` gives back: a pandas DataFrame, a polars DataFrame, a pyarrow Table, a Parquet file written
as the rows arrive, or an iterator of DataFrames of N rows.

`OutputSpec` says which (the magic builds it from `--arrow`, `--to`, `--chunks` and `%config WgMagic.autopolars`
/ `WgMagic.string_dtype`) and `run_cell` runs a cell's statements with it. The PostgreSQL bulk path
(wgmagic.sql.results) reads the spec while it streams and hands each decoded chunk (wgmagic.sql.copy_stream
pieces) to a sink here: the Parquet sink writes a row group per chunk and so holds one chunk at a time, whatever
the row count; the others keep the decoded columns and build their result once, without a pandas detour for
Arrow and polars. A result that did not stream (another dialect, the row path) is converted from its
DataFrame at the end, with the same outcome.

Types in Arrow (and so in polars and Parquet): integers int64, floats float64 (NULL a null, not NaN), bool,
date date32, timestamp timestamp[us], timestamptz timestamp[us, UTC], interval duration[us] (a month 30
days, a year 365, as psycopg and the pandas path count them), text large_string, bytea large_binary. A
date/time value Arrow cannot hold in that unit (PostgreSQL's infinity, -infinity) is null there. Every other
type (numeric, json, arrays, uuid, inet, ...) is the text of its Python value (`str`; json as JSON text).

Text in pandas (PostgreSQL, both paths): pandas' string dtype backed by pyarrow (`str` in pandas 3), NULL as
NaN; with `string_dtype="object"`, Python str objects and None, as before. The other dialects' frames keep
their own text dtype.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from wgmagic.sql.columns import arrow_schema, piece_to_arrow, text_of
from wgmagic.sql.copy_stream import Piece, concat_pieces, slice_piece
from wgmagic.sql.messages import QueryCancelledError, SqlError

if TYPE_CHECKING:
    from wgmagic.sql.dialect import SqlConnection

FORMS = ("pandas", "polars", "arrow")
STRING_DTYPES = ("str", "object")
PARQUET_SUFFIXES = (".parquet", ".pq")  # what --to writes (and all it writes)


@dataclass(frozen=True)
class OutputSpec:
    """form: "pandas", "polars" or "arrow" (a pyarrow.Table); string_dtype: "str" (pandas' Arrow-backed string
    dtype) or "object"; to: a .parquet (or .pq) path to stream the rows into (the cell returns a
    `ParquetWritten`; any other suffix is a ValueError); chunks: return an iterator of DataFrames (in `form`)
    of this many rows."""

    form: str = "pandas"
    string_dtype: str = "str"
    to: str | None = None
    chunks: int | None = None

    def __post_init__(self) -> None:
        if self.form not in FORMS:
            raise ValueError(f"output form must be one of {', '.join(FORMS)}, not {self.form!r}")
        if self.string_dtype not in STRING_DTYPES:
            raise ValueError(f"string_dtype must be 'str' or 'object', not {self.string_dtype!r}")
        if self.chunks is not None and self.chunks < 1:
            raise ValueError("--chunks takes a row count of 1 or more")
        if self.to is not None and self.chunks is not None:
            raise ValueError("--to and --chunks cannot be used together")
        if self.to is not None:
            suffix = os.path.splitext(os.fspath(self.to))[1]
            if suffix.lower() not in PARQUET_SUFFIXES:
                given = f"a {suffix} file" if suffix else "a name without a suffix"
                raise ValueError(f"--to writes Parquet (the one format it writes): give a path ending in .parquet "
                                 f"or .pq, not {given} ({os.path.basename(os.fspath(self.to))})")

    @property
    def streams(self) -> bool:
        """Whether the rows should take the bulk (streaming) path whenever it can carry them."""
        return self.to is not None or self.chunks is not None


_SPEC: contextvars.ContextVar[OutputSpec | None] = contextvars.ContextVar("wgmagic_output", default=None)
DEFAULT = OutputSpec()


def current() -> OutputSpec:
    """The spec of the cell being run (the default one outside `using`)."""
    return _SPEC.get() or DEFAULT


@contextlib.contextmanager
def using(spec: OutputSpec) -> Iterator[OutputSpec]:
    token = _SPEC.set(spec)
    try:
        yield spec
    finally:
        _SPEC.reset(token)


def run_cell(conn: SqlConnection, statements: list[Any], spec: OutputSpec, *, progress: Any = None) -> list[Any]:
    """Run `statements` on an SqlConnection with `spec`; the Results' frames in the form `spec` asks for."""
    if spec.form == "polars":
        import importlib.util

        if importlib.util.find_spec("polars") is None:
            _polars()  # MissingDependencyError before the query runs, not after
        _import_meanwhile("polars")  # a fresh kernel's first polars result: the import overlaps the query
    with using(spec):
        results = conn.run(statements, progress=progress)
    for result in results:
        if result.frame is not None:
            result.frame = convert(result.frame, spec)
    return results


def _import_meanwhile(name: str) -> None:
    """Import module `name` on a thread while the query runs (a later `import` waits for it to finish)."""
    import sys
    import threading

    if name in sys.modules:
        return

    def load() -> None:
        import importlib

        with contextlib.suppress(Exception):  # a missing module fails later, where it is used
            importlib.import_module(name)

    threading.Thread(target=load, name=f"wgmagic-import-{name}", daemon=True).start()


@dataclass(frozen=True)
class ParquetWritten:
    """What `%%wgsql --to PATH` returns: the file written and its row count."""

    path: str
    rows: int

    def __repr__(self) -> str:
        return f"wgmagic: wrote {self.rows:,} row{'' if self.rows == 1 else 's'} to {self.path}"


def convert(frame: Any, spec: OutputSpec) -> Any:
    """A result that came back as a pandas DataFrame (another dialect, the row path) in `spec`'s form;
    anything else (already converted while streaming) as it is."""
    import pandas as pd

    if not isinstance(frame, pd.DataFrame):
        return frame
    if spec.to is not None:
        table = pa_table_from_pandas(frame)
        with atomic_path(spec.to) as temporary:
            import pyarrow.parquet as pq

            pq.write_table(table, temporary)
        return ParquetWritten(os.path.abspath(os.path.expanduser(spec.to)), len(frame))
    if spec.chunks is not None:
        return ChunkStream(iter([(frame, len(frame))]), spec.chunks,
                           lambda part, rows: _form_of_pandas(part, spec.form),
                           lambda parts: parts[0] if len(parts) == 1 else pd.concat(parts),
                           lambda part, start, stop: part.iloc[start:stop])
    return _form_of_pandas(frame, spec.form)


def _form_of_pandas(frame: Any, form: str) -> Any:
    if form == "pandas":
        return frame
    table = pa_table_from_pandas(frame)
    if form == "arrow":
        return table
    pl = _polars()

    return pl.from_arrow(table, rechunk=False)


def _polars() -> Any:
    """The polars module, or MissingDependencyError naming `pip install 'wgmagic[polars]'`."""
    from wgmagic.errors import import_optional

    return import_optional("polars", "polars", "%config WgMagic.autopolars = True")


def pa_table_from_pandas(frame: Any) -> Any:
    import pyarrow as pa

    try:
        return pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        columns = {}
        for name in frame.columns:
            try:
                columns[str(name)] = pa.Array.from_pandas(frame[name])
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
                columns[str(name)] = pa.array([text_of(v) for v in frame[name]], pa.large_string())
        return pa.table(columns)


# ---- sinks: where the bulk path's chunks go -----------------------------------------------------------------

class Sink:
    """Receives a result's chunks (`add`), then gives what the cell returns (`finish`); `abort` on failure."""

    def add(self, pieces: list[Piece], rows: int) -> None:
        raise NotImplementedError

    def finish(self, rows: int) -> Any:
        raise NotImplementedError

    def abort(self) -> None:
        return None


class ColumnsSink(Sink):
    """Keeps the pieces per column; `finish` builds the whole result (pandas via `frame_builder`, Arrow,
    polars), or, with `spec.chunks`, a ChunkStream over the pieces it holds (the PostgreSQL dialect streams
    `--chunks` from the server instead: wgmagic.sql.pgstream)."""

    def __init__(self, names: Sequence[str], oids: Sequence[int], spec: OutputSpec,
                 frame_builder: Callable[[list[Piece], int], Any]) -> None:
        self.names, self.oids, self.spec = list(names), list(oids), spec
        self.columns: list[list[Piece]] = [[] for _ in oids]
        self._frame_builder = frame_builder
        self._parts: list[tuple[list[Piece], int]] = []

    def add(self, pieces: list[Piece], rows: int) -> None:
        if self.spec.chunks is not None:
            self._parts.append((pieces, rows))
            return
        for column, piece in zip(self.columns, pieces, strict=True):
            column.append(piece)

    def finish(self, rows: int) -> Any:
        if self.spec.chunks is None:
            return build_columns(self.columns, rows, self.names, self.oids, self.spec.form, self._frame_builder)
        parts, self._parts = self._parts, []
        return piece_chunks(iter(parts), self.spec.chunks, self.names, self.oids, self.spec.form,
                            self._frame_builder)


def build_columns(columns: list[list[Piece]], rows: int, names: Sequence[str], oids: Sequence[int], form: str,
                  frame_builder: Callable[[list[Piece], int], Any]) -> Any:
    """One result in `form` from each column's pieces (`columns[k]` is emptied as column k is built)."""
    if form == "pandas":
        joined: list[Piece] = []
        for k, column in enumerate(columns):  # each column's pieces dropped once joined: one extra column
            if column:
                joined.append(concat_pieces(column))
                columns[k] = []
        return frame_builder(joined, rows)
    import pyarrow as pa

    schema = arrow_schema(names, oids)
    arrays = [pa.chunked_array([piece_to_arrow(p) for p in column], type=field.type)
              for column, field in zip(columns, schema, strict=True)]
    table = pa.Table.from_arrays(arrays, schema=schema) if arrays else pa.table({}).slice(0, 0)
    if form == "arrow":
        return table
    pl = _polars()

    return pl.from_arrow(table, rechunk=False)


def piece_chunks(source: Iterator[tuple[list[Piece], int]], size: int, names: Sequence[str], oids: Sequence[int],
                 form: str, frame_builder: Callable[[list[Piece], int], Any], **stream: Any) -> ChunkStream:
    """A ChunkStream over decoded COPY chunks (one Piece per column, and the row count)."""

    def join(parts: list[list[Piece]]) -> list[Piece]:
        return [concat_pieces([part[k] for part in parts]) for k in range(len(oids))]

    def cut(part: list[Piece], start: int, stop: int) -> list[Piece]:
        return [slice_piece(p, start, stop) for p in part]

    def build(part: list[Piece], rows: int) -> Any:
        return build_columns([[p] for p in part], rows, names, oids, form, frame_builder)

    return ChunkStream(source, size, build, join, cut, **stream)


def row_chunks(source: Iterator[tuple[list[Any], int]], size: int, frame_of_rows: Callable[[list[Any]], Any],
               form: str, **stream: Any) -> ChunkStream:
    """A ChunkStream over batches of row tuples (the row path), each result built by `frame_of_rows` (the
    dialect's DataFrame of those rows) in `form`."""

    def join(parts: list[list[Any]]) -> list[Any]:
        return parts[0] if len(parts) == 1 else [row for part in parts for row in part]

    def cut(part: list[Any], start: int, stop: int) -> list[Any]:
        return part[start:stop]

    def build(part: list[Any], rows: int) -> Any:
        return _form_of_pandas(frame_of_rows(part), form)

    return ChunkStream(source, size, build, join, cut, **stream)


class ResultClosedError(SqlError):
    """A `--chunks` result read after it was closed (another statement ran on its connection, or
    `close()`): its remaining rows were never read, and the query was cancelled on the server."""


class ChunkStream:
    """What `%%wgsql --chunks N` returns: an iterator of results (DataFrames, or polars/Arrow per `form`) of N
    rows each, the last one shorter, read from the server as it is consumed.

    `source` yields (part, rows): the server's rows as they are decoded, a bounded batch at a time; this holds
    at most N rows plus one such batch, whatever the result's size. The connection is busy until the iterator
    is exhausted or closed: `close()` (also called when another statement runs on the same connection, or the
    connection is closed) cancels the query on the server and reads the connection back to idle; an iterator
    read after that raises ResultClosedError rather than end early. Ctrl-C while it waits for rows cancels the
    query the same way (the source raises QueryCancelledError). `rows`: rows handed out so far; `exhausted`:
    all of them.
    """

    def __init__(self, source: Iterator[tuple[Any, int]], size: int, build: Callable[[Any, int], Any],
                 join: Callable[[list[Any]], Any], cut: Callable[[Any, int, int], Any], *,
                 on_close: Callable[[ChunkStream], None] | None = None) -> None:
        if size < 1:
            raise ValueError("--chunks takes a row count of 1 or more")
        self._source: Iterator[tuple[Any, int]] | None = source
        self.size = size
        self._build, self._join, self._cut = build, join, cut
        self._parts: list[tuple[Any, int]] = []
        self._buffered = 0
        self._on_close = on_close
        self.closed_because: str | None = None
        self.exhausted = False
        self.rows = 0

    def __iter__(self) -> ChunkStream:
        return self

    def __repr__(self) -> str:
        state = "exhausted" if self.exhausted else "closed" if self.closed_because else "open"
        return f"<wgmagic ChunkStream of {self.size:,}-row results: {self.rows:,} rows read, {state}>"

    def fill(self) -> None:
        """Read until a whole result of `size` rows is buffered or the rows have ended (the magic does this once
        in the cell, so an error of the query shows there)."""
        while self._buffered < self.size and self._source is not None:
            try:
                part, rows = next(self._source)
            except StopIteration:
                self._source = None
                self._done()
                break
            except BaseException as exc:
                self._source = None
                self._parts, self._buffered = [], 0
                if self.closed_because is None:
                    self.closed_because = f"reading it failed: {type(exc).__name__}"
                self._done()
                raise
            if rows:
                self._parts.append((part, rows))
                self._buffered += rows

    def __next__(self) -> Any:
        try:
            return self._next()
        except KeyboardInterrupt:  # outside the source (which turns its own into QueryCancelledError)
            self.close("interrupted")
            raise QueryCancelledError("Interrupted: the rest of this --chunks result is not read; its query was "
                                      "cancelled on the server.") from None

    def _next(self) -> Any:
        if self.closed_because is not None:
            raise ResultClosedError(f"this --chunks result was closed after {self.rows:,} rows "
                                    f"({self.closed_because}); the rest was not read: run the cell again")
        self.fill()
        if not self._buffered:
            self.exhausted = True
            raise StopIteration
        count = min(self.size, self._buffered)
        taken, need = [], count
        while need:
            part, rows = self._parts[0]
            if rows <= need:
                taken.append(part)
                self._parts.pop(0)
                need -= rows
            else:
                taken.append(self._cut(part, 0, need))
                self._parts[0] = (self._cut(part, need, rows), rows - need)
                need = 0
        self._buffered -= count
        start = self.rows
        self.rows += count
        result = self._build(self._join(taken), count)
        if hasattr(result, "index") and hasattr(result, "iloc"):
            result.index = range(start, start + count)
        return result

    def close(self, reason: str = "closed") -> None:
        """Stop reading: the query is cancelled on the server if rows were left; idempotent."""
        source, self._source = self._source, None
        self._parts, self._buffered = [], 0
        if source is not None:
            if self.closed_because is None:
                self.closed_because = reason
            close = getattr(source, "close", None)
            if close is not None:
                close()
            self._done()

    def _done(self) -> None:
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close(self)



class ParquetSink(Sink):
    """Writes each chunk as a row group of a Parquet file at a temporary name beside `path`, renamed to `path`
    by `finish`; `abort` (an error, Ctrl-C) removes it, so nothing is ever left under `path` half-written.
    Holds one chunk at a time."""

    def __init__(self, path: str, names: Sequence[str], oids: Sequence[int], *, schema: Any = None) -> None:
        import pyarrow.parquet as pq

        self.path = os.path.abspath(os.path.expanduser(path))
        self.schema = arrow_schema(names, oids) if schema is None else schema
        self._atomic = atomic_path(self.path)
        self.temporary = self._atomic.__enter__()
        self.writer = pq.ParquetWriter(self.temporary, self.schema)
        self.rows = 0

    def add(self, pieces: list[Piece], rows: int) -> None:
        self.add_arrays([piece_to_arrow(p) for p in pieces], rows)

    def add_arrays(self, arrays: list[Any], rows: int) -> None:
        """One row group from one Arrow array per column (of the schema's types)."""
        import pyarrow as pa

        if arrays:
            self.writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=self.schema))
        self.rows += rows

    def finish(self, rows: int) -> Any:
        self.writer.close()
        self._atomic.__exit__(None, None, None)
        return ParquetWritten(self.path, rows)

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()
        with contextlib.suppress(Exception):
            self._atomic.__exit__(KeyboardInterrupt, KeyboardInterrupt(), None)


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """A temporary file name beside `path` (same directory, so the rename is atomic); renamed to `path` when
    the block ends normally, removed when it raises (Ctrl-C included)."""
    target = os.path.abspath(os.path.expanduser(path))
    directory = os.path.dirname(target) or "."
    handle, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=".part", dir=directory)
    os.close(handle)
    try:
        yield temporary
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    else:
        os.replace(temporary, target)


def make_sink(spec: OutputSpec, names: Sequence[str], oids: Sequence[int],
              frame_builder: Callable[[list[Piece], int], Any]) -> Sink:
    if spec.to is not None:
        return ParquetSink(spec.to, names, oids)
    return ColumnsSink(names, oids, spec, frame_builder)
