"""%wg and %%wgsql through a real IPython InteractiveShell, against the test bed (issue 5)."""

from __future__ import annotations

import decimal
import json
import os
import signal
import threading
import time
import uuid

import pandas as pd
import pytest
from IPython.core.interactiveshell import InteractiveShell

from tests.integration.helpers import magic_shell
from tests.testbed.local import silent_udp_port
from tests.testbed.tls import write_ca_and_server_cert
from wgmagic.sql.messages import ConnectionStageError, QueryCancelledError, SqlError

pytestmark = pytest.mark.integration

TYPED = """
CREATE TABLE IF NOT EXISTS typed (i int, i_null int, big bigint, f float8, n numeric(14,4), t text, b bool, d date,
    ts timestamptz, iv interval, j jsonb, js json, arr int[], tarr text[], by bytea, u uuid);
TRUNCATE typed;
INSERT INTO typed VALUES
 (1, NULL, 9007199254740993, 1.25, 12345678.1234, 'hello, "world"', true, '2026-02-03',
  '2026-02-03 04:05:06.789+00', '1 day 02:03:04', '{"a": [1, 2]}', '{"b": null}', '{1,2,3}', '{"x,y",z}',
  '\\x00ff', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'),
 (2, 5, -1, -0.5, -0.0001, '', false, '1999-12-31', '1999-12-31 23:59:59+05', '-3 hours', '[]', '"s"',
  '{}', '{NULL}', '\\x', '00000000-0000-0000-0000-000000000000'),
 (3, 7, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
ALTER TABLE typed OWNER TO app;
"""


def _pg_array(values: list) -> str:
    def one(v: object) -> str:
        if v is None:
            return "NULL"
        text = str(v)
        return f'"{text}"' if any(c in text for c in ',"{} ') else text
    return "{" + ",".join(one(v) for v in values) + "}"


# How psql (-At, TimeZone UTC) prints each column's value: our value -> psql's text.
AS_PSQL = {
    "i": str, "i_null": str, "big": str,
    "f": lambda v: repr(float(v)).removesuffix(".0") if float(v).is_integer() else repr(float(v)),
    "n": lambda v: str(v) if isinstance(v, decimal.Decimal) else "not a Decimal",
    "t": str, "b": lambda v: "t" if v else "f",
    "d": lambda v: v.strftime("%Y-%m-%d"),
    "ts": lambda v: v.tz_convert("UTC").isoformat(sep=" ").replace("+00:00", "+00").replace(".789000", ".789"),
    "iv": lambda v: {pd.Timedelta("1 day 02:03:04"): "1 day 02:03:04", pd.Timedelta("-3h"): "-03:00:00"}[v],
    "j": json.dumps, "js": json.dumps, "arr": _pg_array, "tarr": _pg_array,
    "by": lambda v: "\\x" + v.hex(), "u": lambda v: str(v) if isinstance(v, uuid.UUID) else "not a UUID",
}


@pytest.fixture(scope="module")
def shell(testbed):
    with magic_shell(testbed, bed_config=testbed.client_config(), dsn=testbed.dsn()) as sh:
        yield sh


def run(sh: InteractiveShell, source: str, capsys=None):
    result = sh.run_cell(source)
    if capsys is None:
        return result, ""
    captured = capsys.readouterr()
    return result, captured.out + captured.err


@pytest.fixture(scope="module")
def connected(shell):
    result = shell.run_cell("%wg connect {bed_config} --name bed")
    assert result.success, result.error_in_exec
    result = shell.run_cell("%%wgsql {dsn} --alias main\nSELECT 1")
    assert result.success, result.error_in_exec
    return shell


def test_wg_subcommands(connected, testbed, capsys):
    sh = connected
    result, out = run(sh, "%wg status", capsys)
    text = repr(result.result) + result.result._repr_html_()
    assert "bed" in text and "handshake" in text
    for secret in (testbed.client_private, testbed.db_password):
        assert secret not in text
    result, out = run(sh, "%wg resolve db.internal", capsys)
    assert "198.18.0.1" in out and result.result[0] == "198.18.0.1"
    result, out = run(sh, "%wg ping db.internal -c 2", capsys)
    assert "2 received" in out
    result, out = run(sh, "%wg forward db.internal:5432 --local 0", capsys)
    forward = result.result
    assert forward.libpq_params()["host"] == "db.internal" and forward.libpq_params()["hostaddr"] == "127.0.0.1"
    result, out = run(sh, "%wg connections", capsys)
    text = repr(result.result) + result.result._repr_html_()
    assert "main" in text and "***" in text and testbed.db_password not in text
    result, out = run(sh, "%wg status --help", capsys)
    assert result.success and "usage: %wg status" in out
    result, out = run(sh, "%wg nosuchcommand", capsys)
    assert not result.success and "invalid choice" in out and "Traceback" not in out


def test_query_alias_output_and_capture(connected, testbed, capsys):
    sh = connected
    result, out = run(sh, "%%wgsql -o rows\nSELECT * FROM measurements ORDER BY id", capsys)
    frame = result.result
    assert frame is None or isinstance(frame, pd.DataFrame)  # 100 rows > display limit: shown, not returned
    rows = sh.user_ns["rows"]
    assert len(rows) == 100 and list(rows.columns) == ["id", "sensor", "value", "taken"]
    assert sh.user_ns["_"] is rows  # `_` holds the whole frame even though only the first rows were shown
    assert "100 rows" in out
    result, out = run(sh, "captured << %%wgsql --limit 500\nSELECT count(*) AS n FROM measurements", capsys)
    assert sh.user_ns["captured"]["n"][0] == 100
    # A second connection by alias, then switching back and forth.
    sh.user_ns["by_address"] = testbed.dsn(host="198.18.0.1")
    result, out = run(sh, "%%wgsql {by_address} --alias second\nSELECT 2 AS v", capsys)
    assert result.success, out
    assert result.result["v"][0] == 2
    assert run(sh, "%%wgsql main\nSELECT current_database() AS db", capsys)[0].result["db"][0] == "app"
    result, out = run(sh, "%wg connections", capsys)
    assert "second" in repr(result.result)
    result, out = run(sh, "%wgsql second --close", capsys)
    assert result.success, out
    assert "second" not in sh._wgmagic.connections
    assert testbed.db_password not in out
    assert connected.run_cell("seven = %wgsql SELECT 7 AS v").success and sh.user_ns["seven"]["v"][0] == 7


def test_parameters_are_bound_never_pasted(connected, capsys):
    sh = connected
    sh.user_ns["payload"] = "'; DROP TABLE notes; --"
    sh.user_ns["limit"] = 5
    run(sh, "%%wgsql\nCREATE TABLE IF NOT EXISTS notes (body text); TRUNCATE notes", capsys)
    result, out = run(sh, "%%wgsql\nINSERT INTO notes VALUES ({payload}); INSERT INTO notes VALUES (:payload)", capsys)
    assert result.success, out
    assert "1 row affected" in out
    result, out = run(sh, "%%wgsql\nSELECT body, '{literal}' AS lit, 1::int AS cast_ok, (ARRAY[1,2,3])[1:2] AS sl "
                          "FROM notes LIMIT :limit", capsys)
    frame = result.result
    assert list(frame["body"]) == [sh.user_ns["payload"]] * 2
    assert frame["lit"][0] == "{literal}" and frame["cast_ok"][0] == 1 and frame["sl"][0] == [1, 2]
    result, out = run(sh, "%%wgsql\nSELECT :nosuchvariable", capsys)
    assert not result.success and "nosuchvariable" in out and "Traceback" not in out


def test_any_sqlalchemy_url_a_pure_python_driver(connected, testbed, capsys):
    pytest.importorskip("pg8000")
    sh = connected
    sh.user_ns["pure_dsn"] = testbed.dsn().replace("postgresql://", "postgresql+pg8000://")
    sh.user_ns["payload"] = "'; DROP TABLE measurements; --"
    sh.user_ns["limit"] = 5
    result, out = run(sh, "%%wgsql {pure_dsn} --alias pure\n"
                          "SELECT :payload AS body, '10:30 {x} 100%' AS lit, 2::int AS cast_ok, "
                          "(ARRAY[1,2,3])[2:3] AS sl, count(*) AS n FROM measurements WHERE id <= {limit}", capsys)
    assert result.success, out
    assert testbed.db_password not in out
    row = result.result.iloc[0]
    assert row["body"] == sh.user_ns["payload"] and row["lit"] == "10:30 {x} 100%"
    assert row["cast_ok"] == 2 and list(row["sl"]) == [2, 3] and row["n"] == 5
    result, out = run(sh, "%%wgsql pure\nSELECT '50%' AS pct, 'a:b' AS colon", capsys)  # no parameters: verbatim
    assert result.success, out
    assert result.result["pct"][0] == "50%" and result.result["colon"][0] == "a:b"
    result, out = run(sh, "%%wgsql pure\nUPDATE measurements SET value = value WHERE id <= 3", capsys)
    assert "3 rows affected" in out
    result, out = run(sh, "%wg connections", capsys)
    assert "pg8000" in out and testbed.db_password not in out
    run(sh, "%wgsql pure --close", capsys)
    run(sh, "%%wgsql main\nSELECT 1", capsys)


def test_types_match_psql(connected, testbed):
    sh = connected
    testbed.psql_admin(TYPED, database="app")
    columns = list(AS_PSQL)
    psql_rows = [line.split("|") for line in testbed.psql_admin(
        "SET TimeZone = 'UTC'; SELECT * FROM typed ORDER BY i", database="app").splitlines()]
    sh.user_ns["zero"] = 0
    bulk = sh.run_cell("%%wgsql\nSELECT * FROM typed ORDER BY i").result
    cursor = sh.run_cell("%%wgsql\nSELECT * FROM typed WHERE i > :zero ORDER BY i").result  # parameters: no COPY
    for frame in (bulk, cursor):
        assert list(frame.columns) == columns
        assert str(frame["i"].dtype) == "int64" and str(frame["i_null"].dtype) == "Int64"
        assert str(frame["f"].dtype) == "float64" and str(frame["ts"].dtype).startswith("datetime64")
        assert str(frame["ts"].dtype).endswith("UTC]") and str(frame["iv"].dtype).startswith("timedelta64")
        for row_index, psql_row in enumerate(psql_rows):
            for name, psql_text in zip(columns, psql_row, strict=True):
                value = frame[name][row_index]
                if (psql_text == "" and name != "t") or (name == "t" and row_index == 2):
                    assert value is None or pd.isna(value), (name, row_index, value)
                    continue
                assert AS_PSQL[name](value) == psql_text, (name, row_index, value, psql_text)
    assert [str(t) for t in bulk.dtypes] == [str(t) for t in cursor.dtypes]


def test_ddl_and_dml_row_counts(connected, capsys):
    result, out = run(connected, "%%wgsql\nCREATE TEMP TABLE counted (v int);\n"
                                 "INSERT INTO counted SELECT generate_series(1, 3);\n"
                                 "UPDATE counted SET v = v + 1 WHERE v > 1;\nDELETE FROM counted", capsys)
    assert result.success, out
    assert out.splitlines() == ["CREATE TABLE", "3 rows affected", "2 rows affected", "3 rows affected"]


def test_transactions_follow_the_cell(connected, capsys):
    run(connected, "%%wgsql\nCREATE TABLE IF NOT EXISTS tx (v int); TRUNCATE tx", capsys)
    run(connected, "%%wgsql\nBEGIN; INSERT INTO tx VALUES (1); ROLLBACK", capsys)
    run(connected, "%%wgsql\nINSERT INTO tx VALUES (2)", capsys)  # autocommit, like psql
    assert list(connected.run_cell("%%wgsql\nSELECT v FROM tx").result["v"]) == [2]


def test_interrupt_cancels_on_the_server(connected, testbed, capsys):
    sh = connected
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
    started = time.monotonic()
    timer.start()
    result, out = run(sh, "%%wgsql\nSELECT pg_sleep(60)", capsys)
    returned_after = time.monotonic() - started - 1.0
    print(f"cancel: the cell returned {returned_after:.2f} s after the interrupt")
    assert isinstance(result.error_in_exec, QueryCancelledError), out
    assert "cancel" in out.lower() and "Traceback" not in out
    assert returned_after < 10  # the 2 s is reported above; this only catches a hang
    sleeping = testbed.psql_admin("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%' "
                                  "AND state = 'active'",
                                  database="app")
    assert sleeping.strip() == "0"  # cancelled on the server, not just abandoned
    assert sh.run_cell("%%wgsql\nSELECT 42 AS answer").result["answer"][0] == 42


def test_sql_error_is_short_with_caret(connected, capsys):
    result, out = run(connected, "%%wgsql\nSELECT id,\n  nocolumn FROM measurements", capsys)
    assert isinstance(result.error_in_exec, SqlError)
    assert "Traceback" not in out
    lines = out.strip().splitlines()
    assert lines[0] == 'ERROR:  column "nocolumn" does not exist'
    assert lines[1] == "LINE 2:   nocolumn FROM measurements"
    assert lines[2].index("^") == len("LINE 2:   ")
    result, out = run(connected, "%%wgsql\nSELECT * FROM measurments", capsys)
    assert "does not exist" in out and len(out.strip().splitlines()) <= 4


def test_reconnects_after_the_server_drops_the_connection(connected, testbed, capsys):
    conn = connected._wgmagic.connections["main"]
    before = conn.reconnects
    testbed.psql_admin("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'wgmagic'",
                       database="app")
    result, out = run(connected, "%%wgsql main\nSELECT 7 AS v", capsys)
    assert result.success, out
    assert result.result["v"][0] == 7 and conn.reconnects == before + 1


@pytest.mark.parametrize("case", ["authentication", "DNS", "TCP connect", "TLS"])
def test_connection_failures_name_the_stage(connected, testbed, tmp_path, capsys, case):
    other_ca, _, _ = write_ca_and_server_cert(tmp_path, ["elsewhere"], [])
    urls = {
        "authentication": "postgresql://app:wrong-password@db.internal/app",
        "DNS": "postgresql://app@nothere.internal/app",
        "TCP connect": "postgresql://app@db.internal:5439/app",
        "TLS": f"postgresql://app@db.internal/app?sslmode=verify-full&sslrootcert={other_ca}",
    }
    connected.user_ns["failing"] = urls[case]
    result, out = run(connected, "%%wgsql {failing} --alias failing\nSELECT 1", capsys)
    assert isinstance(result.error_in_exec, ConnectionStageError), out
    assert result.error_in_exec.stage == case
    assert f"at the {case} stage" in out and "check:" in out and "Traceback" not in out
    assert "wrong-password" not in out and testbed.db_password not in out
    assert "failing" not in connected._wgmagic.connections  # a connection that never opened is not kept
    run(connected, "%%wgsql main\nSELECT 1", capsys)


def test_password_prompt_and_pgpassword(connected, testbed, monkeypatch, capsys):
    """Where someone can answer (here a terminal: stdin a TTY), a missing password is asked for with a hidden
    prompt, once; PGPASSWORD is used without asking (tests/unit/test_new_user_messages.py: no prompt where
    nobody can answer)."""
    import getpass
    import sys
    import types

    monkeypatch.setattr(sys, "stdin", types.SimpleNamespace(isatty=lambda: True))
    asked: list[str] = []
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", "/nonexistent")
    monkeypatch.setattr(getpass, "getpass",
                        lambda prompt: asked.append(prompt) or testbed.db_password)
    result, out = run(connected, "%%wgsql postgresql://app@db.internal/app --alias prompted\nSELECT 3 AS v", capsys)
    assert result.success, out
    assert len(asked) == 1 and testbed.db_password not in asked[0] + out
    monkeypatch.setenv("PGPASSWORD", testbed.db_password)
    result, out = run(connected, "%%wgsql postgresql://app@db.internal/app --alias fromenv\nSELECT 4 AS v", capsys)
    assert result.success and len(asked) == 1
    for alias in ("prompted", "fromenv"):
        run(connected, f"%wgsql {alias} --close", capsys)
    run(connected, "%%wgsql main\nSELECT 1", capsys)


def test_missing_private_key_from_environment_and_disconnect(connected, testbed, monkeypatch, capsys):
    config = testbed.client_config(identity=2)  # the module's tunnel 'bed' is up with identity 0
    text = "\n".join(line for line in config.splitlines() if not line.startswith("PrivateKey"))
    connected.user_ns["keyless"] = text
    private = testbed.clients[2][0]
    monkeypatch.setenv("WGMAGIC_PRIVATE_KEY", private)
    result, out = run(connected, "%wg connect $keyless --name keyless", capsys)
    assert result.success, out
    assert private not in out
    result, out = run(connected, "%wg resolve db.internal --tunnel keyless", capsys)
    assert "198.18.0.1" in out
    result, out = run(connected, "%wg disconnect keyless", capsys)
    assert "closed" in out and "keyless" not in connected._wgmagic.tunnels


def test_sql_connection_survives_the_tunnel_going_down_and_up(connected, capsys):
    result, out = run(connected, "%wg disconnect bed", capsys)
    assert result.success, out
    result, out = run(connected, "%%wgsql main\nSELECT 1 AS v", capsys)
    assert not result.success and "%wg connect" in out and "Traceback" not in out  # says what to do
    assert connected.run_cell("%wg connect {bed_config} --name bed").success
    conn = connected._wgmagic.connections["main"]
    before = conn.reconnects
    result, out = run(connected, "%%wgsql main\nSELECT 8 AS v", capsys)
    assert result.success, out
    assert result.result["v"][0] == 8 and conn.reconnects == before + 1


def test_handshake_failure_is_short(connected, testbed, capsys):
    with silent_udp_port("127.0.0.1") as port:  # ours, read by nobody: nothing answers
        dead = testbed.client_config(endpoint=f"127.0.0.1:{port}", identity=3)
        connected.user_ns["dead"] = dead
        result, out = run(connected, "%wg connect {dead} --name dead --timeout 2", capsys)
    assert not result.success
    assert "HandshakeTimeoutError" in out and "Traceback" not in out
    assert testbed.clients[3][0] not in out


def test_same_key_twice_hands_back_the_running_tunnel(connected, testbed, capsys):
    connected.user_ns["twin"] = testbed.client_config()  # what the tunnel 'bed' already uses
    tunnels = connected._wgmagic.tunnels
    for line in ("%wg connect {twin} --name twin", "%wg connect {twin}"):  # another name, or the default one
        result, out = run(connected, line, capsys)
        assert result.success and "Traceback" not in out, out
        assert "tunnel 'bed' is already up (same key and peer): using it" in out, out
        assert "is up" not in out.replace("is already up", "") and testbed.client_private not in out
        assert [name for name, held in tunnels.items() if held is tunnels["bed"]] == ["bed"]  # registered once
        assert tunnels["bed"].holders == 1 and connected._wgmagic.current_tunnel == "bed"
    result, out = run(connected, "%wg status", capsys)
    assert result.success, out
    assert [row["tunnel"] for row in result.result.rows].count("bed") == 1  # one row, not one per connect
    connected._wgmagic.current_tunnel = "bed"
    connected.user_ns["changed"] = testbed.client_config().replace("DNS = ", "DNS = 198.18.0.53, ")
    result, out = run(connected, "%wg connect {changed} --name changed", capsys)
    assert not result.success and "Traceback" not in out
    assert "TunnelConflictError" in out and "%wg disconnect bed" in out and "get_tunnel('bed').close()" in out
    assert testbed.client_private not in out and "changed" not in tunnels
    result, out = run(connected, "%wg disconnect --all", capsys)  # the shared tunnel closes once, by its name
    assert result.success and out.count("closed") == out.count("'bed' closed") == 1, out
    assert connected.run_cell("%wg connect {bed_config} --name bed").success  # as the module's tests expect it


def test_unload_closes_what_it_opened(testbed):
    sh = InteractiveShell.instance()
    sh.run_line_magic("unload_ext", "wgmagic")  # the module fixture's state goes
    sh.run_line_magic("load_ext", "wgmagic")
    sh.user_ns["cfg2"] = testbed.client_config()
    assert sh.run_cell("%wg connect {cfg2} --name temporary").success
    tunnel = sh._wgmagic.tunnels["temporary"]
    sh.run_line_magic("unload_ext", "wgmagic")
    assert tunnel.closed
    sh.run_line_magic("load_ext", "wgmagic")
