"""The SQL text layer: statements and parameters, connection strings, error layout (no database needed)."""

from __future__ import annotations

import re
import string
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wgmagic.connstr import DsnError, parse_dsn
from wgmagic.sql.dialects.postgres import format_server_error
from wgmagic.sql.messages import classify_connection_failure
from wgmagic.sql.parameters import UnknownParameterError, split_sql, split_statements

NS = {"name": "O'Brien", "n": 3, "payload": "'; DROP TABLE t; --"}


def one(cell: str):
    statements = split_statements(cell, NS)
    assert len(statements) == 1
    return statements[0]


@pytest.mark.parametrize("cell", [
    "SELECT 1::int",
    "SELECT arr[1:2] FROM t",
    "SELECT ':name' AS s",
    "SELECT E'\\':name' AS s",
    "SELECT \":name\" FROM t",
    "SELECT $$ :name {name} $$",
    "SELECT $tag$ :name $tag$",
    "SELECT 1 -- :name\n",
    "SELECT /* :name /* nested {name} */ */ 1",
    "SELECT '{name}'",
    "SELECT now()::timestamp(0)",
    "SELECT 10 % 3",
])
def test_colons_and_braces_that_are_not_parameters(cell):
    statement = one(cell)
    assert statement.params is None and statement.sql == cell


def test_parameters_become_driver_placeholders():
    statement = one("SELECT * FROM t WHERE a = :name AND b = {n} AND c LIKE 'x%' AND d = :payload")
    assert statement.sql == "SELECT * FROM t WHERE a = %(name)s AND b = %(n)s AND c LIKE 'x%%' AND d = %(payload)s"
    assert statement.params == {"name": "O'Brien", "n": 3, "payload": NS["payload"]}
    assert "DROP" not in statement.sql
    # SQLAlchemy's text() form: our binds as :name, every other colon escaped (the cast below stays a cast)
    cast = one("SELECT x::int, 'a:b' FROM t WHERE a = :name")
    assert cast.bind_sql == "SELECT x\\:\\:int, 'a\\:b' FROM t WHERE a = :name"


def test_escaped_colon_and_unknown_names():
    assert one("SELECT '\\:x', \\:name").sql.endswith(":name")
    with pytest.raises(UnknownParameterError, match=":missing"):
        split_statements("SELECT :missing", NS)
    with pytest.raises(UnknownParameterError, match=r"\{missing\}"):
        split_statements("SELECT {missing}", NS)


def test_statements_split_on_semicolons_outside_literals():
    statements = split_statements("SELECT ';'; -- only a comment;\n; CREATE FUNCTION f() RETURNS int AS $$ "
                                  "SELECT 1; $$ LANGUAGE sql;\n/* c */", NS)
    assert len(statements) == 2
    assert statements[0].text.strip() == "SELECT ';';"
    assert statements[1].text.strip().startswith("CREATE FUNCTION") and "SELECT 1; $$" in statements[1].text


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=string.printable + "$ü€", max_size=200))
def test_any_cell_text_splits_or_names_a_missing_variable(cell):
    try:
        statements = split_statements(cell, NS)
    except UnknownParameterError:
        return
    for statement in statements:
        assert any(c not in " \t\r\n\f\v" for c in statement.text)
        if statement.params:
            assert set(statement.params) <= set(NS)
            # every bind in the text() form is one of ours; every other colon is escaped
            assert set(re.findall(r"(?<!\\):(\w+)", statement.bind_sql)) <= set(statement.params)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_without_a_namespace_nothing_is_bound(cell):
    for statement in split_statements(cell, None):
        assert statement.params is None and statement.sql == statement.text


def test_dsn_parsing_and_masking():
    dsn = parse_dsn("postgresql://app:s3cr%40t@db.internal:5433/app?sslmode=verify-full")
    assert (dsn.user, dsn.password, dsn.host, dsn.port, dsn.database) == ("app", "s3cr@t", "db.internal", 5433, "app")
    assert "s3cr" not in repr(dsn) + str(dsn) + dsn.masked()
    assert dsn.options["sslmode"] == "verify-full"
    kwargs = dsn.libpq_kwargs({"host": "db.internal", "hostaddr": "127.0.0.1", "port": "40000"})
    assert kwargs["hostaddr"] == "127.0.0.1" and kwargs["host"] == "db.internal" and kwargs["password"] == "s3cr@t"
    assert parse_dsn("mysql+pymysql://u:p@h/d").sqlalchemy_url(host="127.0.0.1", port=1) == "mysql+pymysql://u:p@127.0.0.1:1/d"
    keywords = parse_dsn("host=db.internal user=app password='it\\'s x' dbname=app")
    assert keywords.host == "db.internal" and "it" not in keywords.masked().split("@")[0].split(":")[-1]
    with pytest.raises(DsnError):
        parse_dsn("not a dsn")


password_text = st.text(alphabet=string.ascii_letters + string.digits + "!$&'()*+,;=-._~", min_size=6, max_size=20)


@settings(max_examples=300, deadline=None)
@given(password_text)
def test_no_repr_or_error_shows_the_password(password):
    password = "Zq9" + password  # never a piece of the surrounding message
    dsn = parse_dsn(f"postgresql://app:{password}@db.internal/app")
    assert password not in repr(dsn) + str(dsn) + dsn.masked()
    error = classify_connection_failure(ValueError(f"failed for postgresql://app:{password}@db.internal/app"),
                                        host="db.internal", port=5432)
    assert password not in str(error)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120))
def test_any_text_parses_or_raises_dsn_error(text):
    try:
        parse_dsn(text)
    except DsnError:
        pass


def _error(message, position=None, hint=None, detail=None):
    diag = SimpleNamespace(message_primary=message, severity="ERROR", statement_position=position,
                           message_hint=hint, message_detail=detail, context=None)
    return SimpleNamespace(diag=diag)


def test_server_error_layout_like_psql():
    sql = "SELECT id,\n  nocolumn FROM t"
    text = format_server_error(_error('column "nocolumn" does not exist', str(sql.index("nocolumn") + 1),
                                      hint="Perhaps you meant id."), sql)
    assert text.splitlines() == ['ERROR:  column "nocolumn" does not exist', "LINE 2:   nocolumn FROM t",
                                 "          ^", "HINT:  Perhaps you meant id."]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300), st.integers(min_value=-5, max_value=400))
def test_caret_never_fails(sql, position):
    text = format_server_error(_error("boom", str(position) if position >= 0 else None), sql)
    assert text.startswith("ERROR:  boom")


# ---- statement splitting follows psql's lexer (src/fe_utils/psqlscan.l) ---------------------------------------

@pytest.mark.parametrize(("cell", "parts"), [
    # SQL-standard function bodies: psql counts BEGIN/CASE ... END after CREATE [OR REPLACE] FUNCTION/PROCEDURE
    ("CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END; SELECT 2",
     ["CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END;", " SELECT 2"]),
    ("create or replace procedure p() begin atomic select case when true then 1 end; select 2; end;select 3",
     ["create or replace procedure p() begin atomic select case when true then 1 end; select 2; end;",
      "select 3"]),
    ("BEGIN; SELECT CASE WHEN true THEN 1 END; END;", ["BEGIN;", " SELECT CASE WHEN true THEN 1 END;", " END;"]),
    ("SELECT (1; 2); SELECT 3", ["SELECT (1; 2);", " SELECT 3"]),
    ("SELECT arr[1;2]; SELECT 3", ["SELECT arr[1;", "2];", " SELECT 3"]),  # psql does not count brackets
    ("SELECT E'\\';'; SELECT 2", ["SELECT E'\\';';", " SELECT 2"]),
    ("SELECT '\\'; SELECT 2", ["SELECT '\\';", " SELECT 2"]),  # standard_conforming_strings: no escapes
    ("SELECT 'a'\n';'; SELECT 3", ["SELECT 'a'\n';';", " SELECT 3"]),
    # psql scans line by line: across a \n, E'a' and '\' are two literals, the second without escapes ...
    ("SELECT E'a'\n'\\';'; SELECT 3", ["SELECT E'a'\n'\\';", "'; SELECT 3"]),
    ("SELECT E'a'\r'\\';'; SELECT 3", ["SELECT E'a'\r'\\';';", " SELECT 3"]),  # ... across a bare \r, one
    ("SELECT U&'d\\0061t;a'; SELECT 2", ["SELECT U&'d\\0061t;a';", " SELECT 2"]),
    ("SELECT B'01', X'ff;'; x", ["SELECT B'01', X'ff;';", " x"]),
    ('SELECT "a;""b"; x', ['SELECT "a;""b";', " x"]),
    ("SELECT $1; SELECT $a$;$b$;$a$; x", ["SELECT $1;", " SELECT $a$;$b$;$a$;", " x"]),
    ("SELECT a$b$; x", ["SELECT a$b$;", " x"]),  # $ inside an identifier is no quote
    ("SELECT 1 /* a /* ; */ ; */; x", ["SELECT 1 /* a /* ; */ ; */;", " x"]),
    ("SELECT 1 -- ;\n; x", ["SELECT 1 -- ;\n;", " x"]),
    ("", [""]),
])
def test_split_like_psql(cell, parts):
    assert split_sql(cell) == parts


def test_standard_conforming_strings_off():
    assert split_sql("SELECT '\\';'; x", standard_conforming_strings=False) == ["SELECT '\\';';", " x"]


def test_begin_atomic_is_one_statement_with_parameters():
    statements = split_statements("CREATE FUNCTION pg_temp.f(x int) RETURNS int LANGUAGE sql\nBEGIN ATOMIC\n"
                                  "  SELECT x + 1;\nEND;\nSELECT pg_temp.f(:n)", NS)
    assert len(statements) == 2 and statements[0].params is None and statements[1].params == {"n": 3}


SQL_ALPHABET = st.sampled_from([
    " ", "\n", "\t", ";", "'", '"', "$", "$$", "$a$", "E'", "e'", "U&'", "B'", "(", ")", "[", "]", "--", "/*", "*/",
    "\\", ":", "::", "{n}", ":n", "BEGIN", "END", "CASE", "ATOMIC", "CREATE", "OR", "REPLACE", "FUNCTION",
    "PROCEDURE", "SELECT", "1", "1e", "x", "é", "€", "''", "\r"])


@settings(max_examples=500, deadline=None)
@given(st.lists(SQL_ALPHABET, max_size=60).map("".join), st.booleans())
def test_split_keeps_all_text_and_never_fails(cell, standard):
    parts = split_sql(cell, standard_conforming_strings=standard)
    assert "".join(parts) == cell
    assert parts and all(part for part in parts[:-1])
    assert all(part.endswith(";") for part in parts[:-1])
    statements = split_statements(cell, None, standard_conforming_strings=standard)
    assert len(statements) <= len(parts)
    # each part, split on its own, is one statement at most (cuts are stable)
    for part in parts:
        assert len(split_sql(part, standard_conforming_strings=standard)) == 1


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_split_any_text(cell):
    assert "".join(split_sql(cell)) == cell


@pytest.mark.parametrize("text", [
    "postgresql://app@db.internal/app?password=Zq9pw&sslmode=require",
    "postgresql://app:Zq9pw@db.internal/app?sslpassword=Zq9pw",
    "host=db.internal user=app password=Zq9pw sslpassword=Zq9pw",
    "host=db.internal user=app password='Zq9pw with space'",
])
def test_passwords_in_every_dsn_form_are_never_shown(text):
    dsn = parse_dsn(text)
    assert "Zq9pw" not in repr(dsn) + str(dsn) + dsn.masked()
    assert dsn.password is not None and dsn.password.startswith("Zq9pw")
    assert dsn.libpq_kwargs()["password"].startswith("Zq9pw")


@pytest.mark.parametrize("text", [
    "postgresql://u:Zq9pw@h/db", "postgresql://u:Zq9p@w@h/db", "postgresql://u:Zq9/pw@h/db", "password=Zq9pw",
    "PASSWORD = 'Zq9 pw'", "sslpassword=Zq9pw", "PGPASSWORD=Zq9pw", "x?password=Zq9pw&y=1", "PWD%3DZq9pw;",
    "u:Zq9pw@host", "key " + "A" * 43 + "=",
])
def test_mask_all_secrets(text):
    from wgmagic.connstr import mask_all_secrets

    masked = mask_all_secrets(text)
    assert "Zq9" not in masked and "A" * 43 not in masked


@given(st.sampled_from(["postgresql", "mysql+pymysql", "ws", "socks5h"]),
       st.from_regex(r"[a-z][a-z0-9_.-]{0,12}", fullmatch=True),
       st.from_regex(r"[a-z][a-z0-9.-]{0,20}(:[0-9]{1,5})?(/[a-z0-9_]{0,10})?", fullmatch=True))
def test_a_url_without_a_password_is_shown_as_it_is(scheme, user, rest):
    """scheme://user@host has no secret to mask (it was shown as `scheme:***@host`); with a password it is."""
    from wgmagic.connstr import mask_all_secrets

    url = f"{scheme}://{user}@{rest}"
    assert mask_all_secrets(f"start with %%wgsql {url} here") == f"start with %%wgsql {url} here"
    assert "Zq9" not in mask_all_secrets(f"try {scheme}://{user}:Zq9pw@{rest} now")


def test_dsn_errors_never_repeat_the_text():
    for text in ("host=h password=Zq9pw 'broken", "Zq9pw", "host=h port=Zq9pw"):
        with pytest.raises(DsnError) as info:
            parse_dsn(text)
        assert "Zq9pw" not in str(info.value)


def test_a_raw_slash_in_a_url_password_is_not_echoed():
    with pytest.raises(DsnError) as info:
        parse_dsn("postgresql://u:Zq9/pw@h/db")
    assert "Zq9" not in str(info.value) and "percent-encoded" in str(info.value)
