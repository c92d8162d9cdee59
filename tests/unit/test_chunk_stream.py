"""wgmagic.sql.outputs.ChunkStream without a database: results of exactly N rows cut from batches of any
sizes, nothing read before it is asked for, close() and Ctrl-C closing the source; columns.values_to_arrow."""

from __future__ import annotations

import datetime

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from wgmagic.sql.columns import values_to_arrow
from wgmagic.sql.copy_stream import Piece
from wgmagic.sql.messages import QueryCancelledError
from wgmagic.sql.outputs import ChunkStream, ResultClosedError, piece_chunks, row_chunks


class Source:
    """Batches of consecutive integers, counting what was read and whether it was closed."""

    def __init__(self, sizes: list[int]) -> None:
        self.sizes, self.read, self.closed, self.next_value = list(sizes), 0, False, 0

    def __iter__(self) -> Source:
        return self

    def __next__(self) -> tuple[list[tuple[int]], int]:
        if self.closed or not self.sizes:
            raise StopIteration
        size = self.sizes.pop(0)
        rows = [(self.next_value + k,) for k in range(size)]
        self.next_value += size
        self.read += 1
        return rows, size

    def close(self) -> None:
        self.closed = True


def _frame(rows: list[tuple[int]]):
    import pandas as pd

    return pd.DataFrame({"i": [r[0] for r in rows]}, dtype="int64")


@given(st.lists(st.integers(0, 40), max_size=12), st.integers(1, 50))
def test_results_are_n_rows_cut_from_batches_of_any_size(sizes, n):
    source = Source(sizes)
    stream = row_chunks(source, n, _frame, "pandas")
    parts = list(stream)
    total = sum(sizes)
    assert [len(p) for p in parts] == [n] * (total // n) + ([total % n] if total % n else [])
    assert [v for p in parts for v in p["i"]] == list(range(total))
    assert [list(p.index) for p in parts] == [list(range(k * n, k * n + len(p))) for k, p in enumerate(parts)]
    assert stream.exhausted and stream.rows == total


def test_nothing_is_read_before_it_is_asked_for():
    source = Source([10] * 100)
    stream = row_chunks(source, 25, _frame, "pandas")
    assert source.read == 0
    stream.fill()
    assert source.read == 3  # 30 rows buffered: enough for one result
    next(stream)
    assert source.read == 3
    next(stream)
    assert source.read == 5 and stream.rows == 50


def test_close_closes_the_source_and_later_reads_raise():
    source = Source([10] * 5)
    closed = []
    stream = row_chunks(source, 10, _frame, "pandas", on_close=closed.append)
    next(stream)
    stream.close("another statement ran")
    assert source.closed and closed == [stream]
    with pytest.raises(ResultClosedError, match="after 10 rows \\(another statement ran\\)"):
        next(stream)
    stream.close()  # idempotent


def test_ctrl_c_while_building_closes_the_source():
    source = Source([10] * 5)

    def build(part, rows):
        raise KeyboardInterrupt

    stream = ChunkStream(source, 5, build, lambda parts: parts[0], lambda part, a, b: part[a:b])
    with pytest.raises(QueryCancelledError):
        next(stream)
    assert source.closed
    with pytest.raises(ResultClosedError):
        next(stream)


def test_an_error_of_the_source_is_raised_once_and_ends_the_stream():
    def failing():
        yield [(1,)], 1
        raise RuntimeError("server error")

    ended = []
    stream = row_chunks(failing(), 5, _frame, "pandas", on_close=ended.append)
    with pytest.raises(RuntimeError):
        stream.fill()
    assert ended == [stream]
    with pytest.raises(ResultClosedError, match="reading it failed: RuntimeError"):
        next(stream)


@given(st.lists(st.integers(0, 30), max_size=8), st.integers(1, 40))
def test_piece_chunks_cut_inside_decoded_batches(sizes, n):
    start, parts = 0, []
    for size in sizes:
        values = np.arange(start, start + size, dtype=np.int64)
        parts.append(([Piece("int", 20, np.zeros(size, dtype=bool), values)], size))
        start += size
    stream = piece_chunks(iter(parts), n, ["i"], [20], "arrow", lambda pieces, rows: None)
    tables = list(stream)
    assert [t.num_rows for t in tables] == [n] * (start // n) + ([start % n] if start % n else [])
    assert [v for t in tables for v in t.column("i").to_pylist()] == list(range(start))


def test_values_to_arrow_as_the_bulk_path_types_them():
    utc = datetime.timezone.utc
    assert values_to_arrow([1, None], pa.int64()).to_pylist() == [1, None]
    assert values_to_arrow([{"a": 1}, None, 2], pa.large_string()).to_pylist() == ['{"a": 1}', None, "2"]
    assert values_to_arrow([b"\x00", None], pa.large_binary()).to_pylist() == [b"\x00", None]
    stamps = values_to_arrow([datetime.datetime(2026, 1, 1, 1, tzinfo=datetime.timezone(datetime.timedelta(hours=1))),
                              "infinity", None], pa.timestamp("us", tz="UTC")).to_pylist()
    assert stamps == [datetime.datetime(2026, 1, 1, tzinfo=utc), None, None]
    assert values_to_arrow([datetime.date(2000, 1, 2), "-infinity"], pa.date32()).to_pylist() == \
        [datetime.date(2000, 1, 2), None]
    assert values_to_arrow([datetime.date(2000, 1, 2)], pa.timestamp("us")).to_pylist() == \
        [datetime.datetime(2000, 1, 2)]
    assert values_to_arrow([datetime.timedelta(days=30), None], pa.duration("us")).to_pylist() == \
        [datetime.timedelta(days=30), None]
