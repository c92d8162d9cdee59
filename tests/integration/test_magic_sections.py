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
