"""%%wgsql against a real MariaDB through the tunnel (issue 14): typed DataFrames, driver-bound parameters,
KILL QUERY on interrupt, the server's error text, no password shown, reconnect after a stale connection; and
pandas.read_sql with a SQLAlchemy engine through a forward."""

from __future__ import annotations

import decimal
import logging
import os
import signal
import threading
import time

import pandas as pd
import pytest
from IPython.core.interactiveshell import InteractiveShell

from tests.integration.helpers import magic_shell
from tests.secret_probe import seen
from wgmagic.sql.jsonvalue import JSON_NULL
from wgmagic.sql.messages import QueryCancelledError, SqlError

pytestmark = pytest.mark.integration

IDENTITY = 6  # its own key: other modules keep tunnels up with 0-5

TYPED = """
CREATE TABLE IF NOT EXISTS typed (id INT PRIMARY KEY, dec_ DECIMAL(30,10), dt DATETIME(6), ts TIMESTAMP(3) NULL,
    d DATE, t TIME(6), j JSON, bl BLOB, ub BIGINT UNSIGNED, flag TINYINT(1), i INT, f FLOAT, dbl DOUBLE, s TEXT,
    bits BIT(64));
DELETE FROM typed;
INSERT INTO typed VALUES
 (1, 12345678901234567890.0123456789, '2026-02-03 04:05:06.789012', '2026-02-03 04:05:06.789', '2026-02-03',
  '838:59:59', '{"a": [1, 2.5, null], "b": "x"}', x'00ff0a', 18446744073709551615, 1, 2147483647, 1.1,
  0.1, 'hello, ''world''', b'1111111111111111111111111111111111111111111111111111111111111111'),
 (2, -0.0000000001, '1000-01-01 00:00:00', '2000-01-01 00:00:00', '9999-12-31', '-01:02:03.5', '[]', x'',
  0, 0, -2147483648, -0.5, -1e300, '', b'0'),
 (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
"""


@pytest.fixture(scope="module")
def shell(testbed):
    testbed.ensure_mariadb()
    with magic_shell(testbed, IDENTITY, name="maria", maria_url=testbed.mariadb_url()) as sh:
        result = sh.run_cell("%%wgsql {maria_url} --alias maria --tunnel maria\nSELECT 1 AS one")
        assert result.success, result.error_in_exec
        yield sh


def run(sh: InteractiveShell, source: str, capsys):
    result = sh.run_cell(source)
    captured = capsys.readouterr()
    return result, captured.out + captured.err


def test_every_type_comes_back_typed(shell, capsys):
    result, out = run(shell, "%%wgsql maria\n" + TYPED, capsys)
    assert result.success, out
    result, out = run(shell, "%%wgsql maria\nSELECT * FROM typed ORDER BY id", capsys)
    assert result.success, out
    frame = result.result
    dtypes = {name: str(dtype) for name, dtype in frame.dtypes.items()}
    assert dtypes == {"id": "int64", "dec_": "object", "dt": "datetime64[us]", "ts": "datetime64[us]",
                      "d": "datetime64[us]", "t": "timedelta64[us]", "j": "object", "bl": "object",
                      "ub": "UInt64", "flag": "boolean", "i": "Int64", "f": "float64", "dbl": "float64",
                      "s": "object", "bits": "UInt64"}
    first, second, nulls = (frame.iloc[k] for k in range(3))
    assert first["dec_"] == decimal.Decimal("12345678901234567890.0123456789")
    assert isinstance(first["dec_"], decimal.Decimal) and second["dec_"] == decimal.Decimal("-1E-10")
    assert first["dt"] == pd.Timestamp("2026-02-03 04:05:06.789012")
    assert second["dt"] == pd.Timestamp("1000-01-01")  # outside datetime64[ns]: held at microseconds
    assert first["ts"] == pd.Timestamp("2026-02-03 04:05:06.789")
    assert first["d"] == pd.Timestamp("2026-02-03") and second["d"] == pd.Timestamp("9999-12-31")
    assert first["t"] == pd.Timedelta(hours=838, minutes=59, seconds=59)
    assert second["t"] == -pd.Timedelta(hours=1, minutes=2, seconds=3.5)
    assert first["j"] == {"a": [1, 2.5, None], "b": "x"} and second["j"] == []
    assert first["bl"] == b"\x00\xff\n" and second["bl"] == b""
    assert first["ub"] == 2**64 - 1 and second["ub"] == 0
    assert first["flag"] is True or first["flag"] == True  # noqa: E712 (numpy/pandas booleans)
    assert bool(second["flag"]) is False
    assert first["i"] == 2**31 - 1 and second["i"] == -(2**31)
    assert first["f"] == float(__import__("numpy").float32(1.1))  # the server's single-precision value
    assert first["dbl"] == 0.1 and second["dbl"] == -1e300
    assert first["s"] == "hello, 'world'" and second["s"] == ""
    assert first["bits"] == 2**64 - 1 and second["bits"] == 0
    for name in frame.columns[1:]:
        assert pd.isna(nulls[name]) or nulls[name] is None, name
    # Without NULLs the plain numpy dtypes, as on the Postgres path.
    result, out = run(shell, "%%wgsql maria\nSELECT ub, flag, i, bits FROM typed WHERE id < 3 ORDER BY id", capsys)
    assert {n: str(t) for n, t in result.result.dtypes.items()} == {"ub": "uint64", "flag": "bool", "i": "int64",
                                                                  "bits": "uint64"}


KINDS = """
CREATE TABLE IF NOT EXISTS kinds (id INT PRIMARY KEY, doc JSON);
DELETE FROM kinds;
INSERT INTO kinds VALUES (1, '{"a": [1, null], "b": "x"}'), (2, 'null'), (3, NULL), (4, '"text"'), (5, '1.5'),
 (6, '[]'), (7, 'true');
CREATE OR REPLACE VIEW kinds_view AS SELECT * FROM kinds;
CREATE OR REPLACE VIEW typed_view AS SELECT * FROM typed;
CREATE TEMPORARY TABLE IF NOT EXISTS kinds_tmp (id INT PRIMARY KEY, doc JSON);
DELETE FROM kinds_tmp;
INSERT INTO kinds_tmp SELECT * FROM kinds;
CREATE TEMPORARY TABLE IF NOT EXISTS typed_tmp LIKE typed;
DELETE FROM typed_tmp;
INSERT INTO typed_tmp SELECT * FROM typed;
SELECT 1
"""

# The same rows through every shape a query takes: a column's type is decided by the result's own column
# definitions (MariaDB's extended metadata for JSON), so none of these may change a value or a dtype.
SHAPES = {
    "table": "SELECT * FROM {t} ORDER BY id",
    "view": "SELECT * FROM {t}_view ORDER BY id",
    "CTE": "WITH c AS (SELECT * FROM {t}) SELECT * FROM c ORDER BY id",
    "derived table": "SELECT * FROM (SELECT * FROM {t}) AS d ORDER BY id",
    "subquery": "SELECT * FROM {t} WHERE id IN (SELECT id FROM {t}) ORDER BY id",
    "temporary table": "SELECT * FROM {t}_tmp ORDER BY id",
}


def _same_frames(left: pd.DataFrame, right: pd.DataFrame, shape: str) -> None:
    assert list(left.columns) == list(right.columns), shape
    assert [str(t) for t in left.dtypes] == [str(t) for t in right.dtypes], shape
    for name in left.columns:  # type and repr value by value: None, JSON_NULL and NaN never pass for each other
        assert [(type(v).__name__, repr(v)) for v in left[name]] == \
            [(type(v).__name__, repr(v)) for v in right[name]], (shape, name)


def test_types_follow_the_result_not_the_table(shell, capsys):
    result, out = run(shell, "%%wgsql maria\n" + TYPED + KINDS, capsys)
    assert result.success, out
    for table in ("typed", "kinds"):
        frames = {}
        for shape, sql in SHAPES.items():
            result, out = run(shell, "%%wgsql maria\n" + sql.format(t=table), capsys)
            assert result.success, out
            frames[shape] = result.result
        for shape, frame in frames.items():
            _same_frames(frames["table"], frame, shape)
    docs = frames["table"]["doc"].tolist()
    assert docs == [{"a": [1, None], "b": "x"}, JSON_NULL, None, "text", 1.5, [], True]
    assert docs[1] is JSON_NULL and docs[2] is None  # the JSON text null is a value; SQL NULL is missing
    assert frames["table"]["doc"].isna().tolist() == [False, False, True, False, False, False, False]
    # Expressions: JSON functions' results are JSON too, whatever table (if any) they read.
    result, out = run(shell, "%%wgsql maria\nSELECT id, JSON_EXTRACT(doc, '$') AS doc FROM kinds ORDER BY id", capsys)
    assert result.success, out
    _same_frames(frames["table"], result.result, "JSON_EXTRACT")
    result, out = run(shell, "%%wgsql maria\nSELECT JSON_OBJECT('a', 1, 'b', NULL) AS o, JSON_ARRAY() AS a, "
                             "JSON_EXTRACT('[null]', '$[0]') AS n, JSON_EXTRACT('{}', '$.x') AS m, "
                             "CAST(doc AS CHAR) AS t FROM kinds WHERE id = 1", capsys)
    assert result.success, out
    row = result.result.iloc[0]
    assert row["o"] == {"a": 1, "b": None} and row["a"] == [] and row["n"] is JSON_NULL and row["m"] is None
    assert row["t"] == '{"a": [1, null], "b": "x"}'  # cast to text: the server says text, so a str
    # A JSON_NULL parameter goes to the server as the JSON text null.
    shell.user_ns["nothing"] = JSON_NULL
    result, out = run(shell, "%%wgsql maria\nSELECT JSON_EXTRACT(:nothing, '$') AS n, JSON_TYPE(:nothing) AS t",
                      capsys)
    assert result.success, out
    assert result.result["n"][0] is JSON_NULL and result.result["t"][0] == "NULL"


def test_tinyint1_holding_other_values_stays_an_integer(shell, capsys):
    result, out = run(shell, "%%wgsql maria\nCREATE TEMPORARY TABLE tiny (v TINYINT(1));\n"
                             "INSERT INTO tiny VALUES (0), (1), (7), (-128);\nSELECT v FROM tiny", capsys)
    assert result.success, out
    assert list(result.result["v"]) == [0, 1, 7, -128] and str(result.result["v"].dtype) == "int64"


def test_parameters_are_bound_by_the_driver(shell, capsys):
    injection = "x'); DROP TABLE typed; -- \\' \" ; :notaparam {nor_this} %s %(x)s"
    shell.user_ns.update(evil=injection, wanted=2, when=pd.Timestamp("2026-05-06 07:08:09"),
                         amount=decimal.Decimal("0.1000000001"))
    result, out = run(shell, "%%wgsql maria\nCREATE TABLE IF NOT EXISTS notes (id INT AUTO_INCREMENT PRIMARY KEY, "
                             "body TEXT, at DATETIME, amount DECIMAL(20,10));\n"
                             "INSERT INTO notes (body, at, amount) VALUES (:evil, {when}, :amount)", capsys)
    assert result.success, out
    result, out = run(shell, "%%wgsql maria\nSELECT body, at, amount FROM notes WHERE body = :evil", capsys)
    assert result.success, out
    row = result.result.iloc[0]
    assert row["body"] == injection and row["at"] == pd.Timestamp("2026-05-06 07:08:09")
    assert row["amount"] == decimal.Decimal("0.1000000001")
    result, out = run(shell, "%%wgsql maria\nSELECT COUNT(*) AS n FROM typed WHERE id <= {wanted}", capsys)
    assert result.result["n"][0] == 2  # the table is still there
    # A literal colon, a backslash escape and a semicolon inside a string stay SQL text.
    result, out = run(shell, "%%wgsql maria\nSELECT 'a:b' AS c, 'it\\'s; fine' AS d, TIME('10:11:12') AS e", capsys)
    assert result.success, out
    assert result.result.iloc[0].tolist()[:2] == ["a:b", "it's; fine"]
    # MySQL's own lexical rules: # comments, `backtick` identifiers and "double-quoted" strings.
    result, out = run(shell, "%%wgsql maria\nSELECT 1 AS `x;:y`, \"a;:b\" AS s # a note; with :nothing\n"
                             "FROM typed WHERE id = :wanted", capsys)
    assert result.success, out
    assert result.result.columns.tolist() == ["x;:y", "s"] and result.result["s"][0] == "a;:b"


def test_server_errors_read_like_the_mysql_client(shell, capsys):
    result, out = run(shell, "%%wgsql maria\nSELECT * FROM nope", capsys)
    assert isinstance(result.error_in_exec, SqlError) and "Traceback" not in out
    assert out.strip() == "ERROR 1146 (42S02): Table 'app.nope' doesn't exist"
    assert result.error_in_exec.sqlstate == "42S02"
    result, out = run(shell, "%%wgsql maria\nSELEC 1", capsys)
    assert out.strip().startswith("ERROR 1064 (42000): You have an error in your SQL syntax")
    assert shell.run_cell("%%wgsql maria\nSELECT 5 AS v").result["v"][0] == 5  # still usable


def _sleeping(testbed) -> str:
    return testbed.mariadb_admin("SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                                 "WHERE INFO LIKE 'SELECT SLEEP(60)%'").strip()


def test_interrupt_kills_the_query_on_the_server(shell, testbed, capsys):
    conn = shell._wgmagic.connections["maria"]
    before = conn.connection_id
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
    started = time.monotonic()
    timer.start()
    result, out = run(shell, "%%wgsql maria\nSELECT SLEEP(60)", capsys)
    print(f"KILL QUERY: the cell returned {time.monotonic() - started - 1.0:.2f} s after the interrupt")
    assert isinstance(result.error_in_exec, QueryCancelledError), out
    assert "cancel" in out.lower() and "Traceback" not in out
    assert _sleeping(testbed) == "0"  # stopped on the server, not abandoned
    assert shell.run_cell("%%wgsql maria\nSELECT 42 AS answer").result["answer"][0] == 42
    assert conn.connection_id == before  # the same session: the cancel left it usable


def test_interrupt_while_rows_stream_in(shell, testbed, capsys):
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    result, out = run(shell, "%%wgsql maria\nSELECT a.seq AS a, b.seq AS b, REPEAT('x', 50) AS pad "
                             "FROM seq_1_to_5000 a, seq_1_to_2000 b", capsys)
    timer.cancel()
    assert isinstance(result.error_in_exec, QueryCancelledError), out
    running = testbed.mariadb_admin("SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                                    "WHERE INFO LIKE '%seq_1_to_5000%' AND ID <> CONNECTION_ID()").strip()
    assert running == "0"
    assert shell.run_cell("%%wgsql maria\nSELECT 43 AS answer").result["answer"][0] == 43


def test_a_stale_connection_reconnects_by_itself(shell, testbed, capsys):
    conn = shell._wgmagic.connections["maria"]
    before = conn.reconnects
    testbed.mariadb_admin(f"KILL CONNECTION {conn.connection_id}")
    result, out = run(shell, "%%wgsql maria\nSELECT 7 AS v", capsys)
    assert result.success, out
    assert result.result["v"][0] == 7 and conn.reconnects == before + 1
    testbed.restart_mariadb()  # every connection dies with the server
    result, out = run(shell, "%%wgsql maria\nSELECT 8 AS v", capsys)
    assert result.success, out
    assert result.result["v"][0] == 8 and conn.reconnects == before + 2
    # A write is never re-run on its own: it may have taken effect.
    testbed.mariadb_admin(f"KILL CONNECTION {conn.connection_id}")
    result, out = run(shell, "%%wgsql maria\nCREATE TEMPORARY TABLE once (v INT)", capsys)
    assert isinstance(result.error_in_exec, SqlError) and "not run again" in out
    assert shell.run_cell("%%wgsql maria\nSELECT 9 AS v").result["v"][0] == 9


def test_a_tunnel_flap_costs_no_failed_cell(shell, testbed, capsys):
    testbed.kill_peer()
    testbed.restart_peer()  # the peer forgot every session: the tunnel handshakes again by itself
    started = time.monotonic()
    result, out = run(shell, "%%wgsql maria\nSELECT 10 AS v", capsys)
    print(f"flap: the first cell after the peer restart took {time.monotonic() - started:.1f} s")
    assert result.success, out
    assert result.result["v"][0] == 10


def test_password_never_shown(shell, testbed, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    password = testbed.db_password
    shell.user_ns["maria_wrong"] = testbed.mariadb_url().replace(password, password[::-1])
    for line in ("%%wgsql maria\nSELECT CURRENT_USER() AS u", "%wg connections", "%%wgsql maria\nSELECT * FROM x",
                 "%%wgsql {maria_wrong} --alias wrong --tunnel maria\nSELECT 1",
                 "%%wgsql {maria_url} --alias maria2 --tunnel maria\nSELECT 1"):
        text = seen(shell, line, capsys, caplog)
        assert password not in text and password[::-1] not in text, text
    text = seen(shell, "%%wgsql {maria_wrong} --alias wrong --tunnel maria\nSELECT 1", capsys, caplog)
    assert "authentication" in text and "ERROR 1045 (28000)" in text
    conn = shell._wgmagic.connections["maria"]
    assert password not in repr(conn) and password not in str(conn.describe())


def test_password_from_my_cnf_and_mysql_pwd(shell, testbed, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path))
    shell.user_ns["maria_nopw"] = testbed.mariadb_url(password=False)
    (tmp_path / ".my.cnf").write_text(f"[mysql]\npassword=wrong\n[client]\nport = 1\n"
                                      f"password = \"{testbed.db_password}\"  # the bed's\n")
    result, out = run(shell, "%%wgsql {maria_nopw} --alias cnf --tunnel maria\nSELECT 1 AS v", capsys)
    assert result.success, out
    run(shell, "%%wgsql cnf --close", capsys)
    (tmp_path / ".my.cnf").unlink()
    monkeypatch.setenv("MYSQL_PWD", testbed.db_password)
    result, out = run(shell, "%%wgsql {maria_nopw} --alias env --tunnel maria\nSELECT 1 AS v", capsys)
    assert result.success, out
    run(shell, "%%wgsql env --close", capsys)


def test_tls_verifies_the_real_name(shell, testbed, capsys):
    ca = testbed.mariadb_ca_file
    shell.user_ns["maria_tls"] = f"{testbed.mariadb_url()}?ssl_ca={ca}&ssl_verify_identity=true"
    result, out = run(shell, "%%wgsql {maria_tls} --alias tls --tunnel maria\n"
                             "SHOW SESSION STATUS LIKE 'Ssl_version'", capsys)
    assert result.success, out
    assert result.result["Value"][0].startswith("TLS")
    run(shell, "%%wgsql tls --close", capsys)
    # db.internal reaches the same server, but its certificate does not name db.internal.
    shell.user_ns["maria_wrong_name"] = shell.user_ns["maria_tls"].replace("mariadb.internal", "db.internal")
    result, out = run(shell, "%%wgsql {maria_wrong_name} --alias tls2 --tunnel maria\nSELECT 1", capsys)
    print(f"wrong name: {out.strip()}")
    assert not result.success and "TLS stage" in out and "certificate" in out.lower(), out
    assert testbed.db_password not in out


def test_pandas_read_sql_with_an_engine_through_a_forward(shell, testbed):
    import sqlalchemy

    tunnel = shell._wgmagic.tunnel("maria")
    forward = tunnel.forward("mariadb.internal:3306", local=0)
    try:
        host, port = forward.local_address
        url = f"mysql+pymysql://app:{testbed.db_password}@{host}:{port}/app"
        engine = sqlalchemy.create_engine(url, pool_pre_ping=True)
        try:
            # coerce_float=False: pandas' default turns Decimals and big integers into float64 itself.
            frame = pd.read_sql("SELECT id, ub, dec_ FROM typed ORDER BY id", engine, coerce_float=False)
        finally:
            engine.dispose()
    finally:
        tunnel.close_forward(forward)
    assert list(frame["id"]) == [1, 2, 3]
    assert frame["ub"][0] == 2**64 - 1 and frame["dec_"][0] == decimal.Decimal("12345678901234567890.0123456789")


def test_pandas_read_sql_with_tunnel_engine(shell, testbed):
    """issue 14: `tunnel.engine(url)` for MariaDB, as for Postgres: every pooled connection through the tunnel."""
    tunnel = shell._wgmagic.tunnel("maria")
    engine = tunnel.engine(testbed.mariadb_url())
    try:
        frame = pd.read_sql("SELECT id, ub, dec_ FROM typed ORDER BY id", engine, coerce_float=False)
        assert testbed.db_password not in repr(engine) and testbed.db_password not in str(engine.url)
    finally:
        engine.dispose()
    assert list(frame["id"]) == [1, 2, 3]
    assert frame["ub"][0] == 2**64 - 1 and frame["dec_"][0] == decimal.Decimal("12345678901234567890.0123456789")
