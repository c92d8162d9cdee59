"""The SQLite dialect (wgmagic/sql/dialects/sqlite.py) end to end through %%wgsql: no tunnel, no server."""

from __future__ import annotations

import os
import signal
import threading

import pytest
from IPython.core.interactiveshell import InteractiveShell

from wgmagic.connstr import parse_dsn
from wgmagic.sql.dialects import dialect_for
from wgmagic.sql.dialects.sqlite import DIALECT
from wgmagic.sql.messages import QueryCancelledError, SqlError


@pytest.fixture
def shell(tmp_path):
    sh = InteractiveShell.instance()
    sh.run_line_magic("load_ext", "wgmagic")
    sh.user_ns["db_url"] = f"sqlite:///{tmp_path / 'notes.db'}"
    yield sh
    sh.run_line_magic("unload_ext", "wgmagic")


def test_sqlite_urls_get_the_sqlite_dialect():
    for url in ("sqlite:///notes.db", "sqlite:////tmp/notes.db", "sqlite://", "sqlite+pysqlite:///x.db"):
        assert dialect_for(parse_dsn(url)) is DIALECT
    assert dialect_for(parse_dsn("sqlite+aiosqlite:///x.db"), require_driver=False).fallback


def test_a_cell_end_to_end(shell, tmp_path, capsys):
    shell.user_ns.update(body="it's :x {y} %s", score=2)
    result = shell.run_cell("%%wgsql {db_url} --alias notes\n"
                            "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT, score REAL, n INTEGER, b BLOB);\n"
                            "INSERT INTO notes (body, score, n, b) VALUES ('a; -- no comment', 1.5, NULL, x'00ff');\n"
                            "INSERT INTO notes (body, score, n) VALUES (:body, {score}, 9223372036854775807);\n"
                            "SELECT * FROM notes ORDER BY id")
    assert result.success, result.error_in_exec
    frame = result.result
    assert {name: str(dtype) for name, dtype in frame.dtypes.items()} == {
        "id": "int64", "body": "object", "score": "float64", "n": "Int64", "b": "object"}
    assert frame["body"].tolist() == ["a; -- no comment", "it's :x {y} %s"]
    assert frame["score"].tolist() == [1.5, 2.0] and frame["n"][1] == 2**63 - 1 and frame["b"][0] == b"\x00\xff"
    assert (tmp_path / "notes.db").exists()
    # The same alias on the next cell: the same session (no reconnect), the file's rows.
    conn = shell._wgmagic.connections["notes"]
    assert shell.run_cell("%%wgsql notes\nSELECT COUNT(*) AS c FROM notes").result["c"][0] == 2
    assert conn.reconnects == 0 and conn.describe()["tunnel"] == "(none)"


def test_errors_and_reconnect(shell, capsys):
    shell.run_cell("%%wgsql {db_url} --alias e\nSELECT 1")
    result = shell.run_cell("%%wgsql e\nSELECT * FROM nope")
    assert isinstance(result.error_in_exec, SqlError)
    assert "Error: no such table: nope" in capsys.readouterr().out
    conn = shell._wgmagic.connections["e"]
    conn.raw.close()  # closed under it: the next cell opens it again
    assert shell.run_cell("%%wgsql e\nSELECT 2 AS v").result["v"][0] == 2 and conn.reconnects == 1


def test_ctrl_c_interrupts_the_statement_and_keeps_the_session(shell, capsys):
    shell.run_cell("%%wgsql {db_url} --alias slow\nSELECT 1")
    stop = threading.Event()

    def interrupt_once_running() -> None:  # SIGINT once the statement runs (no guess at how long that takes)
        while not stop.is_set():
            if any(t.name == "wgmagic-sqlite-slow" for t in threading.enumerate()):
                os.kill(os.getpid(), signal.SIGINT)
                return
            stop.wait(0.01)

    watcher = threading.Thread(target=interrupt_once_running, daemon=True)
    watcher.start()
    try:
        result = shell.run_cell("%%wgsql slow\nWITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) "
                                "SELECT COUNT(*) FROM r")
    finally:
        stop.set()
        watcher.join(10)
    assert isinstance(result.error_in_exec, QueryCancelledError), result.error_in_exec
    assert shell.run_cell("%%wgsql slow\nSELECT 3 AS v").result["v"][0] == 3
