"""Issue 25: `%%wgsql --to PATH.parquet`, `--chunks N`, `--arrow` and `%config WgMagic.autopolars` through a real
IPython shell and the tunnel, against the test bed's PostgreSQL.

`--to` and `--chunks` must return exactly the server's rows (row count and column sums equal the server's own
aggregates); Ctrl-C in the middle of `--to` leaves nothing under the final name and the session usable; the
polars and Arrow results hold the same values as the pandas one.
"""

from __future__ import annotations

import datetime
import math
import os
import signal
import threading
import time

import numpy as np
import pandas as pd
import pytest

from tests.integration.helpers import magic_shell
from wgmagic.sql.messages import QueryCancelledError

pytestmark = pytest.mark.integration

ROWS = 300_000  # several 8 MiB chunks of COPY data
TABLE = f"""
DROP TABLE IF EXISTS outputs_big;
CREATE TABLE outputs_big AS SELECT i AS id, i * 0.25::float8 AS x,
    CASE WHEN i % 7 = 0 THEN NULL ELSE 'row ' || i || repeat('é', i % 5) END AS label,
    '2026-01-01'::timestamptz + i * interval '1 second' AS at, i % 3 = 0 AS flag,
    CASE WHEN i % 11 = 0 THEN NULL ELSE i % 1000 END AS small,
    '2000-01-01'::date + (i % 5000) AS d, (i % 100) * interval '1 minute' AS iv, (i * 0.001)::numeric(12, 3) AS n
FROM generate_series(1, {ROWS}) i;
ALTER TABLE outputs_big OWNER TO app;
"""
AGGREGATES = ("SELECT count(*), sum(id), sum(x), count(label), sum(length(label)), sum(flag::int), count(small), "
              "sum(small) FROM outputs_big")


@pytest.fixture(scope="module")
def shell(testbed):
    testbed.psql_admin(TABLE, database="app")
    with magic_shell(testbed, name="out", dsn=testbed.dsn()) as sh:
        result = sh.run_cell("%%wgsql {dsn} --alias outputs\nSELECT 1")
        assert result.success, result.error_in_exec
        yield sh


@pytest.fixture(scope="module")
def server(testbed):
    """The server's own aggregates of the table (psql as the superuser, not through wgmagic)."""
    line = testbed.psql_admin(AGGREGATES, database="app").strip()
    count, ids, xs, labels, label_chars, flags, smalls, small_sum = line.split("|")
    return {"count": int(count), "id": int(ids), "x": float(xs), "labels": int(labels),
            "label_chars": int(label_chars), "flags": int(flags), "smalls": int(smalls), "small": int(small_sum)}


def _sums_of_frame(frame: pd.DataFrame) -> dict:
    labels = frame["label"].dropna()
    return {"count": len(frame), "id": int(frame["id"].sum()), "x": float(frame["x"].sum()),
            "labels": int(labels.size), "label_chars": int(labels.str.len().sum()), "flags": int(frame["flag"].sum()),
            "smalls": int(frame["small"].notna().sum()), "small": int(frame["small"].sum())}


def _assert_sums(got: dict, server: dict) -> None:
    assert {k: v for k, v in got.items() if k != "x"} == {k: v for k, v in server.items() if k != "x"}
    assert math.isclose(got["x"], server["x"], rel_tol=1e-12)


def test_to_parquet_equals_the_servers_rows(shell, server, tmp_path):
    import pyarrow.parquet as pq

    target = tmp_path / "big.parquet"
    shell.user_ns["target"] = str(target)
    result = shell.run_cell("%%wgsql outputs --to {target}\nSELECT * FROM outputs_big ORDER BY id")
    assert result.success, result.error_in_exec
    written = result.result
    assert written.path == str(target) and written.rows == server["count"]
    assert "rows to" in repr(written)
    parquet = pq.ParquetFile(target)
    assert parquet.metadata.num_rows == server["count"]
    assert parquet.metadata.num_row_groups > 1  # written as the chunks arrived, not at the end
    table = parquet.read()
    frame = table.to_pandas()
    _assert_sums(_sums_of_frame(frame), server)
    assert [f.name for f in table.schema] == ["id", "x", "label", "at", "flag", "small", "d", "iv", "n"]
    assert str(table.schema.field("at").type) == "timestamp[us, tz=UTC]"
    assert frame["at"].iloc[0] == pd.Timestamp("2026-01-01 00:00:01", tz="UTC")
    assert table.column("d")[0].as_py() == datetime.date(2000, 1, 2)
    assert sorted(os.listdir(tmp_path)) == ["big.parquet"]  # no temporary file left beside it


def test_chunks_return_the_servers_rows_n_at_a_time(shell, server):
    result = shell.run_cell("%%wgsql outputs --chunks 70000 -o parts\nSELECT * FROM outputs_big ORDER BY id")
    assert result.success, result.error_in_exec
    parts = list(shell.user_ns["parts"])
    assert [len(p) for p in parts] == [70000] * 4 + [server["count"] - 4 * 70000]
    whole = pd.concat(parts)
    assert list(whole["id"]) == list(range(1, server["count"] + 1))
    _assert_sums(_sums_of_frame(whole), server)
    assert str(parts[0]["label"].dtype) == "str" or "string" in str(parts[0]["label"].dtype)


def _plain(value):
    """A value as plain Python, whichever library held it: None for NULL/NaN/NaT."""
    if value is None or value is pd.NaT or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    if isinstance(value, pd.Timedelta):
        value = value.to_pytimedelta()
    if isinstance(value, datetime.date) and not isinstance(value, datetime.datetime):
        value = datetime.datetime(value.year, value.month, value.day)
    return value


def test_polars_and_arrow_hold_the_pandas_values(shell):
    import polars as pl
    import pyarrow as pa

    query = "SELECT * FROM outputs_big WHERE id <= 20000 OR id % 9973 = 0 ORDER BY id"
    frame = shell.run_cell(f"%%wgsql outputs -o frame\n{query}").result
    table = shell.run_cell(f"%%wgsql outputs --arrow -o table\n{query}").result
    shell.run_line_magic("config", "WgMagic.autopolars = True")
    try:
        polars_frame = shell.run_cell(f"%%wgsql outputs\n{query}").result
    finally:
        shell.run_line_magic("config", "WgMagic.autopolars = False")
    assert isinstance(frame, pd.DataFrame) and isinstance(table, pa.Table)
    assert isinstance(polars_frame, pl.DataFrame)
    assert shell.user_ns["table"] is table
    assert list(frame.columns) == table.column_names == polars_frame.columns
    assert len(frame) == table.num_rows == polars_frame.height > 20000
    for name in frame.columns:
        want = [_plain(v) for v in frame[name].astype(object)]
        if name == "n":  # numeric: its text in Arrow and polars
            want = [None if v is None else str(v) for v in want]
        assert [_plain(v) for v in table.column(name).to_pylist()] == want, name
        assert [_plain(v) for v in polars_frame[name].to_list()] == want, name
    assert str(frame["label"].dtype) == "str" or "string" in str(frame["label"].dtype)


def test_object_text_where_asked(shell):
    shell.run_line_magic("config", "WgMagic.string_dtype = 'object'")
    try:
        frame = shell.run_cell("%%wgsql outputs\nSELECT label FROM outputs_big WHERE id BETWEEN 6 AND 8 ORDER BY id"
                               ).result
    finally:
        shell.run_line_magic("config", "WgMagic.string_dtype = 'str'")
    assert frame["label"].dtype == object and list(frame["label"]) == ["row 6é", None, "row 8ééé"]


def test_interrupt_mid_stream_leaves_no_file_and_the_session_usable(shell, tmp_path, testbed):
    target = tmp_path / "never.parquet"
    shell.user_ns["target"] = str(target)
    started = threading.Event()

    def interrupt_once_a_row_group_is_written() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            parts = [p for p in tmp_path.iterdir() if p.name.endswith(".part")]
            if parts and any(p.stat().st_size > 4 for p in parts):
                started.set()
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.02)

    watcher = threading.Thread(target=interrupt_once_a_row_group_is_written, daemon=True)
    watcher.start()
    # rows made on the fly (no FROM: the set-returning function streams), far more than arrive in 120 s
    result = shell.run_cell("%%wgsql outputs --to {target}\n"
                            "SELECT generate_series(1, 2000000000) AS i, md5(random()::text) AS h")
    watcher.join(5)
    assert started.is_set(), "the COPY never reached the file: nothing was interrupted mid-stream"
    assert isinstance(result.error_in_exec, QueryCancelledError), result.error_in_exec
    assert list(tmp_path.iterdir()) == []  # no file under the final name, no temporary beside it
    answer = shell.run_cell("%%wgsql outputs\nSELECT 42 AS answer")
    assert answer.success and answer.result["answer"][0] == 42
    running = testbed.psql_admin("SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%generate_series(1, "
                                 "2000000000)%' AND state = 'active' AND pid <> pg_backend_pid()", database="app")
    assert running.strip() == "0"


@pytest.mark.parametrize("rows", [0, 1, 25_000])
def test_progress_counts_rows_not_copy_messages(shell, monkeypatch, rows):
    """The progress bar read 1000001 rows for 1,000,000 (the binary COPY's trailer is a message of its own):
    what progress reports is rows decoded, the last report the result's row count."""
    import wgmagic.sql.results as results
    from wgmagic.sql.outputs import DEFAULT, run_cell

    monkeypatch.setattr(results, "PROGRESS_AFTER", 0.0)  # report from the first chunk on (not a timing threshold)
    conn = shell._wgmagic.connections["outputs"]
    statements = conn.statements(f"SELECT i AS id FROM generate_series(1, {rows}) i", None)
    reported: list[int] = []
    (result,) = run_cell(conn, statements, DEFAULT, progress=lambda done, nbytes: reported.append(done))
    assert len(result.frame) == rows and result.bulk
    assert reported and reported[-1] == rows and max(reported) == rows, reported
