"""`x = %wgsql DSN SELECT ...` on one line, as JupySQL users write it (issue 21, "Also"): the words that are the
magic's own (options, one DSN as a URL or libpq keywords, an alias) and the SQL after them, exactly as typed."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from IPython.core.interactiveshell import InteractiveShell

from wgmagic.notebook.arguments import split_sql_line, wgsql_parser, words_with_offsets

PARSER = wgsql_parser()


def split(line: str, aliases: tuple[str, ...] = ()) -> tuple[str, str]:
    result = split_sql_line(line, PARSER, lambda word: word in aliases)
    return result.arguments, result.sql


@pytest.mark.parametrize(("line", "arguments", "sql"), [
    ("SELECT 1", "", "SELECT 1"),
    ("postgresql://app@db.internal/app SELECT 1", "postgresql://app@db.internal/app ", "SELECT 1"),
    ("sqlite:// --no-tunnel SELECT 1", "sqlite:// --no-tunnel ", "SELECT 1"),
    ("host=db.internal user=app dbname=app SELECT * FROM t", "host=db.internal user=app dbname=app ",
     "SELECT * FROM t"),
    ("host=db.internal password='a b\\' c' SELECT 1", "host=db.internal password='a b\\' c' ", "SELECT 1"),
    ("--alias w postgresql://a@db/app --limit 5 WITH x AS (SELECT 1) SELECT * FROM x",
     "--alias w postgresql://a@db/app --limit 5 ", "WITH x AS (SELECT 1) SELECT * FROM x"),
    ("--limit=5 --tunnel corp {dsn} select 1", "--limit=5 --tunnel corp {dsn} ", "select 1"),
    ("$dsn SELECT 'a  b'", "$dsn ", "SELECT 'a  b'"),
    ("lite SELECT 1", "lite ", "SELECT 1"),
    ("--section warehouse SELECT count(*) FROM orders", "--section warehouse ", "SELECT count(*) FROM orders"),
    ("-S warehouse -o out SELECT 1", "-S warehouse -o out ", "SELECT 1"),
    ("postgresql://a@db/app", "postgresql://a@db/app", ""),
    ("lite --close", "lite --close", ""),
    ("--bogus SELECT 1", "--bogus ", "SELECT 1"),  # not ours: left for the parser to name
    ("postgresql://a@db/app -- a comment\n", "postgresql://a@db/app ", "-- a comment\n"),
    ("VALUES (1), (2)", "", "VALUES (1), (2)"),
    ("", "", ""),
])
def test_known_lines(line, arguments, sql):
    assert split(line, aliases=("lite",)) == (arguments, sql)


_SQL_HEAD = st.sampled_from(["SELECT", "select", "WITH", "VALUES", "INSERT", "UPDATE", "DELETE", "SHOW",
                             "EXPLAIN", "CREATE", "(SELECT", "TABLE"])
_REST = st.text(alphabet=st.characters(exclude_characters="\x00"), max_size=40)
_HOST = st.from_regex(r"[a-z][a-z0-9-]{0,10}(\.[a-z]{1,6})?", fullmatch=True)
_URL = st.builds(lambda scheme, user, host, db: f"{scheme}://{user}@{host}/{db}",
                 st.sampled_from(["postgresql", "postgres", "mysql+pymysql", "mariadb", "postgresql+psycopg"]),
                 st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True), _HOST,
                 st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True))
_VALUE = st.one_of(st.from_regex(r"[A-Za-z0-9._/-]{1,12}", fullmatch=True),
                   st.text(alphabet=st.characters(codec="ascii", exclude_characters="\x00"), max_size=10).map(
                       lambda v: "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"))
_KEYWORDS = st.lists(st.tuples(st.sampled_from(["host", "user", "dbname", "port", "sslmode", "password"]), _VALUE),
                     min_size=1, max_size=4).map(lambda pairs: " ".join(f"{k}={v}" for k, v in pairs))
_OPTIONS = st.lists(st.sampled_from(["--no-tunnel", "--close", "--limit 5", "--limit=7", "--alias a1", "-A a2",
                                     "-o out", "--out=res", "--tunnel corp"]), max_size=3).map(" ".join)


@settings(max_examples=300, deadline=None)
@given(dsn=st.one_of(_URL, _KEYWORDS, st.just("{dsn}"), st.just("$dsn"), st.just("")), before=_OPTIONS,
       after=_OPTIONS, head=_SQL_HEAD, rest=_REST, gap=st.sampled_from([" ", "  ", "\t"]))
def test_the_sql_is_everything_after_our_words(dsn, before, after, head, rest, gap):
    ours = gap.join(part for part in (before, dsn, after) if part)
    line = f"{ours}{gap}{head} {rest}" if ours else f"{head} {rest}"
    arguments, sql = split(line)
    assert sql == f"{head} {rest}"
    assert arguments.strip() == ours.strip()


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_any_line_splits_into_itself(line):
    arguments, sql = split(line, aliases=("lite",))
    assert arguments + sql == line
    words = words_with_offsets(line)
    assert all(word and line.startswith(word, offset) for offset, word in words)
    assert [offset for offset, _ in words] == sorted({offset for offset, _ in words})


# ---- through the magic -------------------------------------------------------------------------------------

@pytest.fixture
def shell(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    sh = InteractiveShell.instance()
    sh.run_line_magic("load_ext", "wgmagic")
    yield sh
    sh.run_line_magic("unload_ext", "wgmagic")


def test_a_dsn_on_the_one_line_form(shell):
    result = shell.run_cell("x = %wgsql sqlite:// --no-tunnel --alias lite SELECT 41 + 1 AS answer")
    assert result.success, result.error_in_exec
    assert int(shell.user_ns["x"]["answer"][0]) == 42
    assert shell.run_cell("y = %wgsql lite SELECT 'a  b' AS s").success  # an alias, the SQL as typed
    assert shell.user_ns["y"]["s"][0] == "a  b"
    assert shell.run_cell("z = %wgsql --limit 1 SELECT 1 AS one UNION ALL SELECT 2").success
    assert len(shell.user_ns["z"]) == 2
    result = shell.run_cell("%wgsql --bogus SELECT 1")
    assert "unrecognized arguments: --bogus" in str(result.error_in_exec)


def test_a_variable_dsn_on_the_one_line_form(shell):
    shell.user_ns["dsn"] = "sqlite://"
    result = shell.run_cell("x = %wgsql {dsn} --no-tunnel SELECT 7 AS seven")
    assert result.success, result.error_in_exec
    assert int(shell.user_ns["x"]["seven"][0]) == 7
