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
        return f"wgmagic: wrote {self.rows:,} rows to {self.path}"


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
        size = spec.chunks
        return (_form_of_pandas(frame.iloc[start:start + size].reset_index(drop=True), spec.form)
                for start in range(0, len(frame), size))
    return _form_of_pandas(frame, spec.form)


def _form_of_pandas(frame: Any, form: str) -> Any:
    if form == "pandas":
        return frame
    table = pa_table_from_pandas(frame)
    if form == "arrow":
        return table
    import polars as pl

    return pl.from_arrow(table, rechunk=False)


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
    polars) or an iterator of `chunks`-row results built one at a time."""

    def __init__(self, names: Sequence[str], oids: Sequence[int], spec: OutputSpec,
                 frame_builder: Callable[[list[Piece], int], Any]) -> None:
        self.names, self.oids, self.spec = list(names), list(oids), spec
        self.columns: list[list[Piece]] = [[] for _ in oids]
        self._frame_builder = frame_builder

    def add(self, pieces: list[Piece], rows: int) -> None:
        for column, piece in zip(self.columns, pieces, strict=True):
            column.append(piece)

    def finish(self, rows: int) -> Any:
        if self.spec.chunks is None:
            return self._build(self.columns, rows)
        return self._iterate(rows)

    def _build(self, columns: list[list[Piece]], rows: int) -> Any:
        if self.spec.form == "pandas":
            joined: list[Piece] = []
            for k, column in enumerate(columns):  # each column's pieces dropped once joined: one extra column
                if column:
                    joined.append(concat_pieces(column))
                    columns[k] = []
            return self._frame_builder(joined, rows)
        import pyarrow as pa

        schema = arrow_schema(self.names, self.oids)
        arrays = [pa.chunked_array([piece_to_arrow(p) for p in column], type=field.type)
                  for column, field in zip(columns, schema, strict=True)]
        table = pa.Table.from_arrays(arrays, schema=schema) if arrays else pa.table({}).slice(0, 0)
        if self.spec.form == "arrow":
            return table
        import polars as pl

        return pl.from_arrow(table, rechunk=False)

    def _iterate(self, rows: int) -> Iterator[Any]:
        size = self.spec.chunks or rows
        columns, self.columns = self.columns, [[] for _ in self.oids]
        joined = [concat_pieces(c) for c in columns] if rows else []
        del columns
        for start in range(0, rows, size):
            stop = min(rows, start + size)
            part = self._build([[slice_piece(p, start, stop)] for p in joined], stop - start)
            if hasattr(part, "index") and hasattr(part, "iloc"):
                part.index = range(start, stop)
            yield part


class ParquetSink(Sink):
    """Writes each chunk as a row group of a Parquet file at a temporary name beside `path`, renamed to `path`
    by `finish`; `abort` (an error, Ctrl-C) removes it, so nothing is ever left under `path` half-written.
    Holds one chunk at a time."""

    def __init__(self, path: str, names: Sequence[str], oids: Sequence[int]) -> None:
        import pyarrow.parquet as pq

        self.path = os.path.abspath(os.path.expanduser(path))
        self.schema = arrow_schema(names, oids)
        self._atomic = atomic_path(self.path)
        self.temporary = self._atomic.__enter__()
        self.writer = pq.ParquetWriter(self.temporary, self.schema)
        self.rows = 0

    def add(self, pieces: list[Piece], rows: int) -> None:
        import pyarrow as pa

        arrays = [piece_to_arrow(p) for p in pieces]
        batch = pa.RecordBatch.from_arrays(arrays, schema=self.schema) if arrays else None
        if batch is not None:
            self.writer.write_batch(batch)
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
