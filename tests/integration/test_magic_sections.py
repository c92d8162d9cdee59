"""`%%wgsql --section NAME` through a real tunnel to the test bed's PostgreSQL: the connections file names the
DSN (no password) and the tunnel, the password comes from ~/.pgpass (PGPASSFILE), and no output of the path
shows it (issue 17)."""

from __future__ import annotations

import logging

import pytest

from tests.integration.helpers import magic_shell
from tests.secret_probe import seen

pytestmark = pytest.mark.integration

IDENTITY = 4  # its own key: no other tunnel of the suite is up with it while this module runs


@pytest.fixture
def shell(testbed, tmp_path, monkeypatch):
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(f"# host:port:database:user:password\ndb.internal:5432:app:app:{testbed.db_password}\n")
    pgpass.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(pgpass))
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setattr("getpass.getpass", lambda *a, **k: pytest.fail("prompted for a password"))
    (tmp_path / "connections.ini").write_text(
        "[warehouse]\ndsn = postgresql://app@db.internal:5432/app?sslmode=disable\ntunnel = corp\n\n"
        "[keys]\ndrivername = postgresql\nusername = app\nhost = db.internal\ndatabase = app\ntunnel = corp\n")
    with magic_shell(testbed, corp_config=testbed.client_config(identity=IDENTITY)) as sh:
        sh.run_line_magic("config", f"WgMagic.dsn_filename = {str(tmp_path / 'connections.ini')!r}")
        yield sh


def test_section_connects_with_the_password_from_pgpass(shell, testbed, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    shown = seen(shell, "%wg connect {corp_config} --name corp", capsys, caplog)
    assert "tunnel 'corp' is up" in shown
    result = shell.run_cell("%%wgsql --section warehouse\nSELECT count(*) AS n FROM measurements")
    assert result.success, result.error_in_exec
    assert int(result.result["n"][0]) == 100
    conn = shell._wgmagic.connections["warehouse"]
    assert conn.tunnel_name == "corp" and conn.forward_address is not None  # through the tunnel
    shown += seen(shell, "%%wgsql --section keys\nSELECT current_user AS u", capsys, caplog)
    assert "app" in shown
    shown += seen(shell, "%wg connections", capsys, caplog)
    shown += seen(shell, "%wg status corp", capsys, caplog)
    shown += seen(shell, "%%wgsql warehouse\nSELECT 1/0", capsys, caplog)  # an error path too
    assert "division by zero" in shown
    for secret in (testbed.db_password, testbed.clients[IDENTITY][0]):
        assert secret not in shown


def test_autocommit_off_leaves_the_transaction_to_the_user(shell, testbed):
    assert shell.run_cell("%wg connect {corp_config} --name corp").success
    shell.run_line_magic("config", "WgMagic.autocommit = False")
    assert shell.run_cell("%%wgsql --section warehouse --alias tx\nCREATE TEMP TABLE t (i int);\n"
                          "INSERT INTO t VALUES (1)").success
    status = shell.run_cell("%%wgsql tx\nSELECT now() = statement_timestamp() AS fresh").result
    assert not bool(status["fresh"][0])  # still inside the transaction the first cell began
    assert shell.run_cell("%%wgsql tx\nROLLBACK").success
    shell.run_line_magic("config", "WgMagic.autocommit = True")  # applies to the open connection, now idle
    assert shell.run_cell("%%wgsql tx\nCREATE TEMP TABLE u (i int)").success
    fresh = shell.run_cell("%%wgsql tx\nSELECT now() = statement_timestamp() AS fresh").result
    assert bool(fresh["fresh"][0])


def test_a_dsn_on_the_one_line_form_through_the_tunnel(shell, testbed):
    """`x = %wgsql DSN SELECT ...` as JupySQL users write it (issue 21): a URL or libpq keywords, then the SQL."""
    assert shell.run_cell("%wg connect {corp_config} --name corp").success
    result = shell.run_cell("x = %wgsql postgresql://app@db.internal/app?sslmode=disable --alias u "
                            "SELECT count(*) AS n FROM measurements")
    assert result.success, result.error_in_exec
    assert int(shell.user_ns["x"]["n"][0]) == 100
    result = shell.run_cell("y = %wgsql host=db.internal user=app dbname=app sslmode=disable --alias k "
                            "SELECT current_user AS who, 'a  b' AS s")
    assert result.success, result.error_in_exec
    assert (shell.user_ns["y"]["who"][0], shell.user_ns["y"]["s"][0]) == ("app", "a  b")
    assert set(shell._wgmagic.connections) >= {"u", "k"}


def _readme_block(after: str, language: str) -> str:
    """The first ```LANGUAGE block after the text `after` in README.md, byte for byte."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    match = re.search(re.escape(after) + r".*?```" + language + r"\n(.*?)```", text, re.S)
    assert match, f"README.md has no ```{language} block after {after!r}"
    return match.group(1)


def test_the_readme_connections_file_as_printed(testbed, tmp_path, monkeypatch, capsys, caplog):
    """README.md's connections file and its `%%wgsql --section warehouse` cell, run exactly as printed (issue 21):
    `tunnel = corp            ; the %wg connect --name ...` is the tunnel corp, the DSN's sslmode=verify-full
    verifies db.internal through the tunnel, the password comes from ~/.pgpass."""
    if not testbed.psql_admin("SELECT 1 FROM pg_roles WHERE rolname = 'analyst'").strip():
        testbed.psql_admin(f"CREATE ROLE analyst LOGIN PASSWORD '{testbed.db_password}'")
    if not testbed.psql_admin("SELECT 1 FROM pg_database WHERE datname = 'warehouse'").strip():
        testbed.psql_admin("CREATE DATABASE warehouse OWNER analyst")
    testbed.psql_admin("CREATE TABLE IF NOT EXISTS orders (id int PRIMARY KEY); ALTER TABLE orders OWNER TO "
                       "analyst; INSERT INTO orders SELECT i FROM generate_series(1, 7) i ON CONFLICT DO NOTHING",
                       database="warehouse")
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(f"db.internal:5432:warehouse:analyst:{testbed.db_password}\n")
    pgpass.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(pgpass))
    monkeypatch.setenv("PGSSLROOTCERT", str(testbed.ca_file))  # the bed's CA: what verify-full checks against
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setattr("getpass.getpass", lambda *a, **k: pytest.fail("prompted for a password"))
    connections = tmp_path / "connections.ini"
    connections.write_text(_readme_block("Named connections live in", "ini"), encoding="utf-8")
    cell = _readme_block("Named connections live in", "sql")
    assert cell.startswith("%%wgsql --section warehouse\n")
    with magic_shell(testbed, corp_config=testbed.client_config(identity=IDENTITY)) as sh:
        sh.run_line_magic("config", f"WgMagic.dsn_filename = {str(connections)!r}")
        assert sh.run_cell("%wg connect {corp_config} --name corp").success
        result = sh.run_cell(cell)
        assert result.success, result.error_in_exec
        assert int(result.result.iloc[0, 0]) == 7
        conn = sh._wgmagic.connections["warehouse"]
        assert conn.tunnel_name == "corp" and conn.forward_address is not None
        shown = seen(sh, "%wg connections", capsys, caplog)
        assert testbed.db_password not in shown
