"""Statements are cut where psql cuts them: scripts run by psql on the bed and by %%wgsql through the tunnel
give the same statements and the same result (issue 11, item 2)."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.integration.helpers import magic_shell
from tests.testbed.bed import run
from wgmagic.sql.parameters import split_sql, split_statements

pytestmark = pytest.mark.integration

CORPUS = sorted((Path(__file__).parent.parent / "sql_corpus").glob("*.sql"))
IDENTITY = 5
_LOGGED = re.compile(r"\*{9} QUERY \*{10}\n(.*?)\n\*{26}\n", re.DOTALL)


def psql_statements(bed, script: str, *, stop_on_error: bool = True) -> tuple[list[str], str]:
    """What psql sends for `script` (from its -L log: one entry per query, as sent) and its -At output."""
    with tempfile.TemporaryDirectory() as directory:
        os.chmod(directory, 0o777)
        path, log = Path(directory) / "script.sql", Path(directory) / "log.txt"
        path.write_text(script)
        os.chmod(path, 0o644)
        result = run("runuser", "-u", "postgres", "--", "psql", "-X", "-q", "-At", "-v",
                     f"ON_ERROR_STOP={int(stop_on_error)}", "-h", str(bed.dir / "pgdata"), "-d", "app",
                     "-L", str(log), "-f", str(path), cwd="/", check=False)
        assert result.returncode == 0 or not stop_on_error, result.stderr
        logged = log.read_text() if log.exists() else ""
    return _LOGGED.findall(logged), result.stdout


def normalized(statement: str) -> str:
    """A statement without whitespace and without the -- comments before its first token (psql drops them)."""
    text = statement
    while (stripped := re.sub(r"^(?:\s+|--[^\n\r]*)", "", text)) != text:
        text = stripped
    return re.sub(r"\s+", "", text)


def meaningful(statements: list[str]) -> list[str]:
    return [normalized(s) for s in statements if split_statements(s, None)]


@pytest.fixture(scope="module")
def shell(testbed):
    with magic_shell(testbed, IDENTITY, name="split", split_dsn=testbed.dsn()) as sh:
        yield sh


@pytest.mark.parametrize("script", CORPUS, ids=lambda p: p.stem)
def test_corpus_same_statements_and_result_as_psql(shell, testbed, script):
    text = script.read_text()
    sent, output = psql_statements(testbed, text)
    ours = [s.text for s in split_statements(text, None)]
    assert meaningful(sent) == [normalized(s) for s in ours]
    result = shell.run_cell(f"%%wgsql {{split_dsn}} --alias split_{script.stem}\n{text}")
    assert result.success, result.error_in_exec
    assert [str(v) for v in result.result["result"]] == output.strip().splitlines()[-1:]


def test_begin_atomic_cell_from_the_issue(shell):
    result = shell.run_cell("%%wgsql {split_dsn} --alias split_issue\n"
                            "CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END;\n"
                            "SELECT pg_temp.f() AS v")
    assert result.success, result.error_in_exec
    assert result.result["v"][0] == 1


FRAGMENTS = st.sampled_from([
    " ", "\n", ";", "'", '"', "$", "$$", "$a$", "E'", "U&'", "B'", "(", ")", "[", "]", "--", "/*", "*/", "::int ",
    "BEGIN ", "END ", "CASE ", "ATOMIC ", "CREATE ", "OR ", "REPLACE ", "FUNCTION ", "PROCEDURE ", "SELECT ",
    "1", "x", "é", "''", "$1", "1e", "\t", "pg_temp.f() ", "RETURNS int LANGUAGE sql ", "-", "+", ".", "\r", "e", "n",
    "N'", "u", "&", "0x", "_"])


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(FRAGMENTS, min_size=1, max_size=40).map("".join))
@example("SELECT 1e--;\n; SELECT 2")
@example("SELECT 1e+;x; SELECT 0x;1; SELECT 1.e; $1e$;$1e$")
@example("SELECT E'a'\n'\\';'; SELECT 3")
@example("SELECT E'a'\r'\\';'; SELECT 3")
@example("SELECT n';'; SELECT u&';'; SELECT u&x; x")
@example("CREATE FUNCTION f() BEGIN ATOMIC; CASE; END; END; x; CREATE OR REPLACE PROCEDURE p() BEGIN END; y")
def test_random_scripts_cut_like_psql(testbed, script):
    """Differential: psql itself (no ON_ERROR_STOP: it sends every statement, valid or not) against split_sql.
    Nothing here can change data: the fragments make no table and name only pg_temp."""
    sent, _ = psql_statements(testbed, script, stop_on_error=False)
    assert meaningful(sent) == meaningful(split_sql(script))


def test_cut_follows_the_servers_standard_conforming_strings(shell, testbed):
    script = "SELECT '\\';' AS x;\nSELECT 2 AS y;\n"
    sent, _ = psql_statements(testbed, "SET standard_conforming_strings = off;\n" + script, stop_on_error=False)
    assert meaningful(sent)[1:] == meaningful(split_sql(script, standard_conforming_strings=False))
    assert shell.run_cell("%%wgsql {split_dsn} --alias split_scs\nSET standard_conforming_strings = off").success
    result = shell.run_cell("%%wgsql split_scs\n" + script)
    assert result.success, result.error_in_exec
    assert result.result["y"][0] == 2
    assert shell.run_cell("%%wgsql split_scs\nRESET standard_conforming_strings").success
