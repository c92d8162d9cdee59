"""wgmagic.sql.outputs and columns without a database: the spec, the atomic Parquet write, the sinks and the
conversion of results that did not stream."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from wgmagic.sql.columns import arrow_schema, piece_to_arrow
from wgmagic.sql.copy_stream import SIGNATURE, StreamDecoder
from wgmagic.sql.outputs import (
    ColumnsSink,
    OutputSpec,
    ParquetSink,
    ParquetWritten,
    atomic_path,
    convert,
    current,
    using,
)


def test_spec_refuses_what_cannot_be():
    with pytest.raises(ValueError):
        OutputSpec(form="excel")
    with pytest.raises(ValueError):
        OutputSpec(string_dtype="bytes")
    with pytest.raises(ValueError):
        OutputSpec(chunks=0)
    with pytest.raises(ValueError):
        OutputSpec(to="x.parquet", chunks=5)
    spec = OutputSpec(chunks=3)
    with using(spec):
        assert current() is spec
    assert current() == OutputSpec()


def test_atomic_path_renames_at_the_end_and_removes_on_interrupt(tmp_path):
    target = tmp_path / "out.parquet"
    with atomic_path(str(target)) as temporary:
        assert temporary != str(target) and temporary.startswith(str(tmp_path))
        Path(temporary).write_bytes(b"data")
        assert not target.exists()
    assert target.read_bytes() == b"data" and sorted(p.name for p in tmp_path.iterdir()) == ["out.parquet"]
    with pytest.raises(KeyboardInterrupt), atomic_path(str(tmp_path / "never.parquet")) as temporary:
        Path(temporary).write_bytes(b"half")
        raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.parquet"]


def _stream(rows):
    body = [struct.pack(">h", 2) + struct.pack(">iq", 8, i) + (struct.pack(">i", -1) if t is None else
                                                                struct.pack(">i", len(t)) + t) for i, t in rows]
    body[0] = SIGNATURE + b"\0" * 8 + body[0]
    return [*body, b"\xff\xff"]


def test_parquet_sink_writes_a_row_group_per_chunk_and_abort_leaves_nothing(tmp_path):
    messages = _stream([(i, None if i % 3 == 0 else f"v{i}".encode()) for i in range(10)])
    sink = ParquetSink(str(tmp_path / "t.parquet"), ["i", "t"], [20, 25])
    decoder = StreamDecoder([20, 25], None, True, sink.add)
    for m in messages:  # one message per feed: one chunk per row
        decoder.feed(m, [len(m)])
    decoder.finish()
    written = sink.finish(decoder.rows)
    assert written == ParquetWritten(str(tmp_path / "t.parquet"), 10)
    table = pq.read_table(written.path)
    assert pq.ParquetFile(written.path).metadata.num_row_groups == 10
    assert table.column("i").to_pylist() == list(range(10))
    assert table.column("t").to_pylist() == [None if i % 3 == 0 else f"v{i}" for i in range(10)]
    aborted = ParquetSink(str(tmp_path / "a.parquet"), ["i", "t"], [20, 25])
    decoder = StreamDecoder([20, 25], None, True, aborted.add)
    decoder.feed(messages[0], [len(messages[0])])
    aborted.abort()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.parquet"]


def test_chunks_sink_gives_frames_of_n_rows():
    messages = _stream([(i, f"v{i}".encode()) for i in range(7)])

    def frame(pieces, rows):
        from wgmagic.sql.results import _frame_from_pieces

        return _frame_from_pieces(pieces, ["i", "t"], [20, 25], rows, None, "str")

    sink = ColumnsSink(["i", "t"], [20, 25], OutputSpec(chunks=3), frame)
    decoder = StreamDecoder([20, 25], None, True, sink.add)
    decoder.feed(b"".join(messages), [len(m) for m in messages])
    decoder.finish()
    parts = list(sink.finish(decoder.rows))
    assert [len(p) for p in parts] == [3, 3, 1]
    assert list(pd.concat(parts)["i"]) == list(range(7)) and list(parts[2].index) == [6]


def test_results_that_did_not_stream_are_converted():
    frame = pd.DataFrame({"a": [1, 2, 3], "b": ["x", None, "z"]})
    assert convert(frame, OutputSpec()) is frame
    table = convert(frame, OutputSpec(form="arrow"))
    assert isinstance(table, pa.Table) and table.column("a").to_pylist() == [1, 2, 3]
    parts = list(convert(frame, OutputSpec(chunks=2)))
    assert [len(p) for p in parts] == [2, 1]


def test_results_that_did_not_stream_are_converted_to_polars():
    pytest.importorskip("polars")  # the test extra has it; the lighter `unit` extra of the other Pythons does not
    frame = pd.DataFrame({"a": [1, 2, 3], "b": ["x", None, "z"]})
    polars = convert(frame, OutputSpec(form="polars"))
    assert polars["b"].to_list() == ["x", None, "z"]


def test_arrow_types_of_the_fixed_width_kinds():
    from wgmagic.sql.copy_stream import Piece

    null = np.array([False, True, False])
    stamps = Piece("time", 1184, null, np.array([0, 5, 2**63 - 1], dtype=np.int64))  # infinity: null in Arrow
    array = piece_to_arrow(stamps)
    assert str(array.type) == "timestamp[us, tz=UTC]"
    assert array.to_pylist()[0].isoformat() == "2000-01-01T00:00:00+00:00" and array.null_count == 2
    dates = piece_to_arrow(Piece("time", 1082, np.zeros(1, bool), np.array([1], dtype=np.int64)))
    assert str(dates.to_pylist()[0]) == "2000-01-02"
    assert [f.name for f in arrow_schema(["a", "a", "b"], [23, 23, 25])] == ["a", "a_1", "b"]


def test_polars_output_without_polars_says_which_extra_before_the_query(monkeypatch):
    """autopolars without polars installed: MissingDependencyError (an ImportError too) naming the extra, raised
    before the statements run (a long query is not run to be thrown away)."""
    import importlib.util
    import sys

    from wgmagic.errors import MissingDependencyError
    from wgmagic.sql import outputs

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "polars" else
                        real_find_spec(name, *a))
    monkeypatch.setitem(sys.modules, "polars", None)  # `import polars` raises ModuleNotFoundError

    class NeverRun:
        def run(self, statements, progress=None):
            raise AssertionError("the statements ran")

    with pytest.raises(MissingDependencyError, match=r"pip install 'wgmagic\[polars\]'"):
        outputs.run_cell(NeverRun(), ["SELECT 1"], OutputSpec("polars"))
