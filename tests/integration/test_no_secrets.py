"""No secret in any output with a tunnel up and a connection open: the secret in every form into every
argument of every subcommand, the bed's real password and private key through the working paths, and the
server's own failures (issue 11, item 7)."""

from __future__ import annotations

import logging

import pytest

from tests.integration.helpers import magic_shell
from tests.secret_probe import SECRET, leaks, lines, seen

pytestmark = pytest.mark.integration

IDENTITY = 5


@pytest.fixture(scope="module")
def shell(testbed):
    with magic_shell(testbed, IDENTITY, name="sec", sec_dsn=testbed.dsn()) as sh:
        result = sh.run_cell("%%wgsql {sec_dsn} --alias sec\nSELECT 1")
        assert result.success, result.error_in_exec
        yield sh


def real_secrets(testbed) -> list[str]:
    return [testbed.db_password, testbed.clients[IDENTITY][0], testbed.clients[IDENTITY][0][:20]]


def assert_nothing_secret_seen(shell, testbed, line: str, capsys, caplog, monkeypatch) -> None:
    """Run `line` (no password prompt answered) and check all it showed and logged: no probe secret, no real
    secret of the bed, no traceback."""
    monkeypatch.setattr("getpass.getpass", lambda *a, **k: "")
    caplog.set_level(logging.DEBUG)
    text = seen(shell, line, capsys, caplog)
    assert not leaks(text), text
    assert not any(secret in text for secret in real_secrets(testbed)), text
    assert "Traceback (most recent call last)" not in text, text


@pytest.mark.parametrize("line", lines())
def test_no_secret_with_a_tunnel_up(shell, testbed, line, capsys, caplog, monkeypatch):
    monkeypatch.setenv("PGCONNECT_TIMEOUT", "5")
    assert_nothing_secret_seen(shell, testbed, line, capsys, caplog, monkeypatch)


@pytest.mark.parametrize("line", [
    "%wg status", "%wg status sec", "%wg connections", "%wg resolve db.internal", "%wg ping db.internal -c 1",
    "%wg forward db.internal:5432 --local 0", "%wg plot", "%wg diag --window 90s",
    "%%wgsql sec\nSELECT current_user AS u", "%%wgsql sec\nSELECT :nosuchvariable",
    "%%wgsql sec\nSELECT 1/0", "%%wgsql sec\nSELECT * FROM nosuchtable",
    "%%wgsql {sec_wrong}\nSELECT 1", "%%wgsql {sec_nodb}\nSELECT 1", "%%wgsql {sec_query}\nSELECT 1",
    "%%wgsql {sec_keywords}\nSELECT 1", "%%wgsql {sec_wrong_keywords}\nSELECT 1",
    "%wg connect {sec_broken_config} --name broken", "%wg doctor {sec_broken_config}",
])
def test_working_and_failing_paths_show_no_real_secret(shell, testbed, line, capsys, caplog, monkeypatch):
    password = testbed.db_password
    shell.user_ns.update(
        sec_wrong=testbed.dsn().replace(password, SECRET),
        sec_nodb=testbed.dsn().replace("/app", "/nosuchdb"),
        sec_query=testbed.dsn().replace(f":{password}@", "@") + f"?password={password}",
        sec_keywords=f"host=db.internal user=app dbname=app password={password}",
        sec_wrong_keywords=f"host=db.internal user=app dbname=app password='{SECRET} x'",
        sec_broken_config=testbed.client_config(identity=IDENTITY).replace("Address", "Adress"),
    )
    assert_nothing_secret_seen(shell, testbed, line, capsys, caplog, monkeypatch)


def test_keyword_dsn_on_the_magic_line_connects(shell, testbed, capsys, caplog):
    line = f"%%wgsql host=db.internal user=app dbname=app password={testbed.db_password} --alias kw\nSELECT 41 + 1 AS v"
    result = shell.run_cell(line)
    assert result.success, result.error_in_exec
    assert result.result["v"][0] == 42
    text = capsys.readouterr().out + seen(shell, "%wg connections", capsys, caplog)
    assert "kw" in text and testbed.db_password not in text


@pytest.mark.parametrize("line", [
    "%wg socks 99999", "%wg socks -5", "%wg ping db.internal -c -1", "%wg ping db.internal -c 0",
    "%wg ping nosuch.internal -c 1", "%wg ping 300.1.1.1 -c 1", "%wg ping 8.8.8.8 -c 1", "%wg resolve ''",
    "%wg resolve nosuch.internal", "%wg resolve 'a..b'", "%wg forward db.internal:99999", "%wg forward garbage",
    "%wg forward db.internal:5432 --local 99999", "%wg forward db.internal:5432 --local unix:/nonexistent/dir",
    "%wg forward db.internal:5432 --local 127.0.0.1:99999", "%wg bench garbage",
    "%wg bench db.internal:1 --seconds 0.2",
    "%wg plot --save /nonexistent/dir/x.png", "%wg plot --window 0", "%wg diag --window -1", "%wg status nosuch",
    "%wg disconnect nosuch", "%wg connect /tmp --name x", "%wg connect /dev/null --name x",
    "%wg connect {sec_bytes} --name x", "%wg connect {sec_nothing} --name x", "%wg connect {nosuchvar}",
    "%wg connect {sec_config.nosuchattr}", "%wg doctor /tmp --timeout 1", "%wg connect",
    "%wg ping", "%wg nosuchcommand", "%wg 'unclosed", "%%wgsql --limit -1\nSELECT 1",
    "%%wgsql -o 'not a name'\nSELECT 1",
    "%%wgsql nosuchalias\nSELECT 1", "%%wgsql 'postgresql://app@db.internal:notaport/app'\nSELECT 1",
    "%%wgsql 'host=db.internal port=notaport'\nSELECT 1", "%%wgsql 'postgresql://[::1'\nSELECT 1",
])
def test_garbage_arguments_give_one_clean_line(shell, line, capsys, caplog):
    shell.user_ns.update(sec_bytes=b"\xff\xfe\x00\xd8", sec_nothing=12)
    result = shell.run_cell(line)
    text = seen(shell, "None", capsys, caplog)  # what the failed cell printed (seen() reads the capture)
    error = result.error_before_exec or result.error_in_exec
    assert error is not None and "Traceback (most recent call last)" not in text, text
    assert len(str(error).strip().splitlines()) <= 4, str(error)  # a message (and usage), not a dump
    assert shell.run_cell("%wg status sec").success  # the tunnel is still up
    capsys.readouterr()
