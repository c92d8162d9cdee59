"""`%%wgsql --chunks N` read from the server as it is consumed, and `--to FILE` written as the rows arrive on
every path (the COPY path, PostgreSQL's row path, MariaDB), through a real IPython shell and the tunnel.

- `--chunks` of a result much bigger than one chunk: the process's peak RSS while it is consumed stays near a
  chunk's size (far under the whole result's), and every row is the server's.
- An iterator abandoned mid-way: the next statement on the connection cancels its query on the server and runs;
  the abandoned iterator then raises instead of ending early. Ctrl-C while it waits cancels the query.
- `--to` of what the COPY path cannot carry (DML with RETURNING, parameters, MariaDB) writes the rows batch by
  batch, value for value the server's.

No timing thresholds; the memory bounds are ratios of the result's own size.
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time

import pandas as pd
import pyarrow.parquet as pq
import pytest

from tests.integration.helpers import magic_shell
from wgmagic.sql.messages import QueryCancelledError
from wgmagic.sql.outputs import ChunkStream, ResultClosedError

pytestmark = pytest.mark.integration

IDENTITY = 5  # this module's own key: other modules keep tunnels up with other identities
BIG = 1_500_000  # rows of stream_big: about 230 MB of COPY data, several hundred MiB as one DataFrame
TABLE = f"""
DROP TABLE IF EXISTS stream_big;
CREATE TABLE stream_big AS SELECT i AS id, i * 0.5::float8 AS x,
    CASE WHEN i % 13 = 0 THEN NULL ELSE repeat(md5(i::text), 3) END AS label
FROM generate_series(1, {BIG}) i;
ALTER TABLE stream_big OWNER TO app;
DROP TABLE IF EXISTS stream_dml;
CREATE TABLE stream_dml (id int, v text, f real, d date, at timestamptz, n numeric);
ALTER TABLE stream_dml OWNER TO app;
"""


def _rss_mib(field: str = "VmRSS") -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":")) / 1024


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as refs:  # "5": reset the peak RSS (VmHWM) to the current RSS
        refs.write("5")


@pytest.fixture(scope="module")
def shell(testbed):
    testbed.psql_admin(TABLE, database="app")
    with magic_shell(testbed, IDENTITY, name="streaming", dsn=testbed.dsn()) as sh:
        result = sh.run_cell("%%wgsql {dsn} --alias st --tunnel streaming\nSELECT 1")
        assert result.success, result.error_in_exec
        yield sh


@pytest.fixture(scope="module")
def server(testbed):
    line = testbed.psql_admin("SELECT count(*), sum(id), sum(x), count(label), sum(length(label)) FROM stream_big",
                              database="app").strip()
    count, ids, xs, labels, chars = line.split("|")
    return {"count": int(count), "id": int(ids), "x": float(xs), "labels": int(labels), "chars": int(chars)}


def _no_query_running(testbed, marker: str) -> bool:
    running = testbed.psql_admin(f"SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%{marker}%' AND "
                                 "state = 'active' AND pid <> pg_backend_pid()", database="app")
    return running.strip() == "0"


def test_chunks_hold_about_one_chunk_whatever_the_result(shell, server):
    warm = shell.run_cell("%%wgsql st --chunks 50000\nSELECT * FROM stream_big ORDER BY id").result
    assert [len(next(warm)) for _ in range(4)] == [50000] * 4  # imports and the heap's first growth done
    warm.close()
    shell.user_ns.pop("_", None)
    del warm
    whole_bytes = server["count"] * 16 + server["chars"]  # the result's own values, without any overhead
    _reset_peak()
    baseline = _rss_mib()
    result = shell.run_cell("%%wgsql st --chunks 50000 -o parts\nSELECT * FROM stream_big ORDER BY id")
    assert result.success, result.error_in_exec
    parts = shell.user_ns.pop("parts")
    shell.user_ns.pop("_", None)
    assert isinstance(parts, ChunkStream) and result.result is parts
    sums = {"count": 0, "id": 0, "x": 0.0, "labels": 0, "chars": 0}
    expected_start, sizes, trace = 1, [], []
    for part in parts:  # kept only as sums: what code that processes in pieces does
        sizes.append(len(part))
        assert part["id"].iloc[0] == expected_start and part["id"].is_monotonic_increasing
        expected_start += len(part)
        labels = part["label"].dropna()
        sums["count"] += len(part)
        sums["id"] += int(part["id"].sum())
        sums["x"] += float(part["x"].sum())
        sums["labels"] += int(labels.size)
        sums["chars"] += int(labels.str.len().sum())
        del part, labels
        trace.append(round(_rss_mib() - baseline))
    grown = _rss_mib("VmHWM") - baseline
    assert sizes == [50000] * (BIG // 50000) + ([BIG % 50000] if BIG % 50000 else [])
    assert {k: v for k, v in sums.items() if k != "x"} == {k: v for k, v in server.items() if k != "x"}
    assert math.isclose(sums["x"], server["x"], rel_tol=1e-12)
    assert parts.exhausted and parts.rows == server["count"]
    after = shell.run_cell("%%wgsql st\nSELECT 7 AS seven")
    assert after.success and after.result["seven"][0] == 7
    # the yardstick, measured the same way: the same result as one DataFrame
    _reset_peak()
    baseline = _rss_mib()
    whole = shell.run_cell("%%wgsql st -o whole\nSELECT * FROM stream_big ORDER BY id")
    assert whole.success, whole.error_in_exec
    whole_grown = _rss_mib("VmHWM") - baseline
    shell.user_ns.pop("whole")
    shell.user_ns.pop("_", None)
    del whole
    # streaming holds one 8 MiB chunk of COPY data and its columns (two while the next is read) and a
    # 50,000-row frame, whatever the row count; the whole result holds every row
    assert whole_grown > whole_bytes / (1 << 20)  # the yardstick measured what it should
    assert grown < whole_grown / 3, (grown, whole_grown, trace)


def test_an_abandoned_iterator_is_cancelled_by_the_next_statement(shell, testbed):
    result = shell.run_cell("%%wgsql st --chunks 10000 -o parts\nSELECT * FROM stream_big ORDER BY id")
    assert result.success, result.error_in_exec
    parts = shell.user_ns["parts"]
    first = next(parts)
    assert list(first["id"]) == list(range(1, 10001))
    after = shell.run_cell("%%wgsql st\nSELECT count(*) AS n FROM stream_big")
    assert after.success, after.error_in_exec
    assert after.result["n"][0] == BIG
    with pytest.raises(ResultClosedError, match="after 10,000 rows"):
        next(parts)
    assert _no_query_running(testbed, "stream_big ORDER BY id")


def test_an_explicit_close_leaves_the_session_idle(shell, testbed):
    parts = shell.run_cell("%%wgsql st --chunks 1000\nSELECT * FROM stream_big ORDER BY id DESC").result
    assert next(parts)["id"].iloc[0] == BIG
    parts.close()
    assert _no_query_running(testbed, "stream_big ORDER BY id DESC")
    assert shell.run_cell("%%wgsql st\nSELECT 1 AS one").result["one"][0] == 1


def test_ctrl_c_while_reading_chunks_cancels_the_query(shell, testbed):
    result = shell.run_cell("%%wgsql st --chunks 5000\n"
                            "SELECT generate_series(1, 2000000000) AS i, md5(random()::text) AS h FROM stream_big "
                            "LIMIT 2000000000")
    assert result.success, result.error_in_exec
    parts = result.result
    assert len(next(parts)) == 5000

    def interrupt_soon() -> None:
        time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_soon, daemon=True).start()
    with pytest.raises(QueryCancelledError):
        for _ in parts:  # far more rows than arrive before the interrupt; all the time is spent in next()
            pass
    assert _no_query_running(testbed, "generate_series(1, 2000000000)")
    assert shell.run_cell("%%wgsql st\nSELECT 2 AS two").result["two"][0] == 2


@pytest.mark.parametrize("form", ["pandas", "arrow", "polars"])
def test_chunks_on_the_row_path_with_parameters(shell, form):
    """Parameters keep a statement off the COPY path: its rows come through Cursor.stream, N at a time."""
    shell.user_ns["lo"] = BIG - 25_000
    options = {"pandas": "", "arrow": " --arrow", "polars": ""}[form]
    if form == "polars":
        shell.run_line_magic("config", "WgMagic.autopolars = True")
    try:
        result = shell.run_cell(f"%%wgsql st --chunks 10000{options}\n"
                                "SELECT id, label FROM stream_big WHERE id > :lo ORDER BY id")
    finally:
        shell.run_line_magic("config", "WgMagic.autopolars = False")
    assert result.success, result.error_in_exec
    parts = list(result.result)
    assert [len(p) for p in parts] == [10000, 10000, 5000]
    ids = [int(v) for p in parts for v in (p["id"].to_list() if form != "arrow" else p.column("id").to_pylist())]
    assert ids == list(range(BIG - 25_000 + 1, BIG + 1))


def test_to_of_dml_with_returning_streams_the_rows(shell, testbed, tmp_path):
    target = tmp_path / "returned.parquet"
    shell.user_ns["target"] = str(target)
    result = shell.run_cell(
        "%%wgsql st --to {target}\n"
        "INSERT INTO stream_dml SELECT i, CASE WHEN i % 5 = 0 THEN NULL ELSE 'v' || i END, i / 3.0, "
        "'2000-01-01'::date + i, '2026-01-01'::timestamptz + i * interval '1 ms', i / 7.0 "
        "FROM generate_series(1, 30000) i RETURNING *")
    assert result.success, result.error_in_exec
    assert result.result.rows == 30000 and result.result.path == str(target)
    parquet = pq.ParquetFile(target)
    assert parquet.metadata.num_rows == 30000 and parquet.metadata.num_row_groups == 3  # 10,000-row batches
    table = parquet.read()
    assert [str(t) for t in table.schema.types] == ["int64", "large_string", "double", "date32[day]",
                                                    "timestamp[us, tz=UTC]", "large_string"]
    # the same values as the COPY path writes for the same rows
    copy_target = tmp_path / "copied.parquet"
    shell.user_ns["target"] = str(copy_target)
    copied = shell.run_cell("%%wgsql st --to {target}\nSELECT * FROM stream_dml ORDER BY id")
    assert copied.success, copied.error_in_exec
    copy_table = pq.read_table(copy_target)
    assert table.sort_by("id").equals(copy_table)
    line = testbed.psql_admin("SELECT count(*), sum(id), count(v), sum(f::float8) FROM stream_dml",
                              database="app").strip().split("|")
    frame = table.to_pandas()
    assert len(frame) == int(line[0]) and int(frame["id"].sum()) == int(line[1])
    assert int(frame["v"].notna().sum()) == int(line[2])
    assert math.isclose(float(frame["f"].sum()), float(line[3]), rel_tol=1e-12)
    assert sorted(os.listdir(tmp_path)) == ["copied.parquet", "returned.parquet"]


def test_to_of_a_statement_without_rows_writes_nothing(shell, tmp_path):
    target = tmp_path / "none.parquet"
    shell.user_ns["target"] = str(target)
    result = shell.run_cell("%%wgsql st --to {target}\nUPDATE stream_dml SET v = v WHERE id < 0")
    assert result.success, result.error_in_exec
    assert os.listdir(tmp_path) == []


def test_to_with_parameters_matches_the_servers_rows(shell, server, tmp_path):
    target = tmp_path / "param.parquet"
    shell.user_ns.update(target=str(target), hi=100_000)
    result = shell.run_cell("%%wgsql st --to {target}\nSELECT * FROM stream_big WHERE id <= :hi ORDER BY id")
    assert result.success, result.error_in_exec
    frame = pd.read_parquet(target)
    assert list(frame["id"]) == list(range(1, 100_001))
    expected = shell.run_cell("%%wgsql st\nSELECT * FROM stream_big WHERE id <= 100000 ORDER BY id").result
    assert frame["x"].equals(expected["x"])
    assert list(frame["label"].astype(object).where(frame["label"].notna(), None)) == \
        list(expected["label"].astype(object).where(expected["label"].notna(), None))


# ---- MariaDB: an unbuffered cursor, a batch at a time -------------------------------------------------------

MARIA_ROWS = 35_000
MARIA_TABLE = f"""
CREATE OR REPLACE TABLE stream_m (id INT, s TEXT, d DECIMAL(20, 6), dt DATETIME(6), f FLOAT, dbl DOUBLE,
    b BLOB, flag TINYINT(1), u BIGINT UNSIGNED, t TIME(6));
INSERT INTO stream_m SELECT seq, IF(seq % 7 = 0, NULL, CONCAT('m', seq, REPEAT('é', seq % 4))), seq / 7,
    '2026-01-01' + INTERVAL seq SECOND, seq / 3, seq / 9, IF(seq % 5 = 0, NULL, UNHEX(HEX(seq))), seq % 2,
    18446744073709551615 - seq, SEC_TO_TIME(seq) FROM seq_1_to_{MARIA_ROWS};
"""


@pytest.fixture(scope="module")
def maria(shell, testbed):
    testbed.ensure_mariadb()
    shell.user_ns["maria_url"] = testbed.mariadb_url()
    result = shell.run_cell("%%wgsql {maria_url} --alias sm --tunnel streaming\n" + MARIA_TABLE)
    assert result.success, result.error_in_exec
    return shell


def _maria_count(shell, sql: str) -> int:
    return int(shell.run_cell(f"%%wgsql sm\n{sql}").result.iloc[0, 0])


def test_mariadb_to_writes_batches_with_the_servers_values(maria, tmp_path):
    import datetime
    import decimal

    target = tmp_path / "m.parquet"
    maria.user_ns["target"] = str(target)
    result = maria.run_cell("%%wgsql sm --to {target}\nSELECT * FROM stream_m ORDER BY id")
    assert result.success, result.error_in_exec
    assert result.result.rows == MARIA_ROWS
    parquet = pq.ParquetFile(target)
    assert parquet.metadata.num_rows == MARIA_ROWS and parquet.metadata.num_row_groups == 4  # 10,000 a group
    table = parquet.read()
    assert {f.name: str(f.type) for f in table.schema} == {
        "id": "int64", "s": "large_string", "d": "large_string", "dt": "timestamp[us]", "f": "double",
        "dbl": "double", "b": "large_binary", "flag": "int64", "u": "uint64", "t": "duration[us]"}
    frame = maria.run_cell("%%wgsql sm\nSELECT * FROM stream_m ORDER BY id").result  # the pandas path
    assert table.column("id").to_pylist() == list(frame["id"])
    assert table.column("s").to_pylist() == [None if v is None else v for v in frame["s"]]
    assert [decimal.Decimal(v) for v in table.column("d").to_pylist()] == list(frame["d"])
    assert table.column("dt").to_pylist() == [v.to_pydatetime() for v in frame["dt"]]
    assert table.column("f").to_pylist() == list(frame["f"]) and table.column("dbl").to_pylist() == list(frame["dbl"])
    assert table.column("b").to_pylist() == list(frame["b"])
    assert table.column("flag").to_pylist() == [int(v) for v in frame["flag"]]
    assert table.column("u").to_pylist() == [int(v) for v in frame["u"]]
    assert table.column("t").to_pylist() == [datetime.timedelta(seconds=i) for i in range(1, MARIA_ROWS + 1)]
    assert sum(table.column("id").to_pylist()) == _maria_count(maria, "SELECT SUM(id) FROM stream_m")
    assert sorted(os.listdir(tmp_path)) == ["m.parquet"]


def test_mariadb_chunks_read_as_consumed_and_the_next_statement_closes_them(maria):
    parts = maria.run_cell("%%wgsql sm --chunks 4000\nSELECT id, s FROM stream_m ORDER BY id").result
    whole = pd.concat(list(parts))
    assert [int(v) for v in whole["id"]] == list(range(1, MARIA_ROWS + 1)) and parts.exhausted
    assert list(whole.index) == list(range(MARIA_ROWS))
    # far more rows than could be read to the end: the next statement must kill the query, not drain it
    parts = maria.run_cell("%%wgsql sm --chunks 1000\nSELECT seq FROM seq_1_to_1000000000").result
    assert list(next(parts)["seq"]) == list(range(1, 1001))
    watchdog = threading.Timer(120, os.kill, (os.getpid(), signal.SIGINT))  # a hang fails instead of blocking
    watchdog.start()
    try:
        assert _maria_count(maria, "SELECT COUNT(*) FROM stream_m") == MARIA_ROWS  # the session is usable
    finally:
        watchdog.cancel()
    with pytest.raises(ResultClosedError):
        next(parts)


def test_mariadb_interrupt_mid_to_leaves_no_file_and_the_session_usable(maria, tmp_path):
    target = tmp_path / "never.parquet"
    maria.user_ns["target"] = str(target)

    def interrupt_once_the_file_is_open() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if any(p.name.endswith(".part") for p in tmp_path.iterdir()):
                time.sleep(0.3)
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.02)

    watcher = threading.Thread(target=interrupt_once_the_file_is_open, daemon=True)
    watcher.start()
    result = maria.run_cell("%%wgsql sm --to {target}\nSELECT seq, SLEEP(0.0005) FROM seq_1_to_100000000")
    watcher.join(5)
    assert isinstance(result.error_in_exec, QueryCancelledError), result.error_in_exec
    assert list(tmp_path.iterdir()) == []
    assert _maria_count(maria, "SELECT 41 + 1") == 42
