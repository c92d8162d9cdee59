"""Issue 11 item 1: the bulk (binary COPY) path of %%wgsql returns exactly what the row (cursor) path returns.

Differential: the same SELECT on the same session through both paths of wgmagic.sql.results.run_statement,
over the test bed's Postgres through the tunnel; DataFrames equal value for value and dtype for dtype
(assert_frame_equal with check_exact, and object columns compared by each value's type and repr, so that
Decimal('NaN') is not taken for None). Values: a fixed table of every documented type's awkward values,
then hypothesis-generated rows, under UTF-8 and under non-UTF-8 client encodings and odd time zones.
"""

from __future__ import annotations

import datetime
import decimal
import uuid

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wgmagic.connstr import parse_dsn
from wgmagic.runtime.tunnel import connect
from wgmagic.sql.dialects import dialect_for
from wgmagic.sql.jsonvalue import JSON_NULL
from wgmagic.sql.results import run_statement

pytestmark = pytest.mark.integration

# column name -> SQL type: every type %%wgsql documents (README) and then some
COLUMNS = {
    "i2": "int2", "i4": "int4", "i8": "int8", "o": "oid", "f4": "float4", "f8": "float8", "n": "numeric",
    "t": "text", "vc": "varchar", "bp": "char(3)", "nm": "name", "ch": '"char"', "b": "bool", "d": "date",
    "ts": "timestamp", "tz": "timestamptz", "iv": "interval", "tm": "time", "j": "json", "jb": "jsonb",
    "ai": "int8[]", "at": "text[]", "an": "numeric[]", "ad": "date[]", "by": "bytea", "u": "uuid",
    "ip": "inet",
}

AWKWARD_TEXT = ["", "\\N", "NULL", "null", "NaN", "nan", "-inf", "1e5", "0x1F", "007", " ", '"', "'", '""', "a,b",
                "line\nbreak", "cr\r\nlf", "tab\there", "back\\slash", "\\\\", "é à ü ß", "ÿ", "£1", "\\.",
                "€ and „quotes“", "日本語"]  # the last two are not LATIN1; the last is not WIN1252 either

# One row per awkward value, written as SQL literals (NULL where a type has nothing more to say).
AWKWARD_ROWS = [
    {"i2": "32767", "i4": "2147483647", "i8": "9223372036854775807", "o": "4294967295", "f4": "'NaN'",
     "f8": "'NaN'", "n": "'NaN'", "d": "'infinity'", "ts": "'infinity'", "tz": "'infinity'",
     "iv": "'178956970 years 7 mons 2147483647 days 2562047788:00:54.775807'", "tm": "'24:00'",
     "j": "'null'", "jb": "'{\"a\": [1, 2.5, \"x\"], \"\\\\N\": null}'", "ai": "'{1,NULL,-9223372036854775808}'",
     "at": "'{\"\\\\\\\\N\",NULL,\"\",\"a,b\",\"x\\\"y\"}'", "an": "'{NaN,1.50,-0.000}'",
     "ad": "'{infinity,2000-02-29,NULL}'", "by": "'\\x00ff5c4e'", "u": "'00000000-0000-0000-0000-000000000000'",
     "ip": "'::1'", "b": "true"},
    {"i2": "-32768", "i4": "-2147483648", "i8": "-9223372036854775808", "o": "0", "f4": "'Infinity'",
     "f8": "'-Infinity'", "n": "'Infinity'", "d": "'-infinity'", "ts": "'-infinity'", "tz": "'-infinity'",
     "iv": "'-178956970 years -8 mons -2147483647 days -2562047788:00:54.775807'", "tm": "'00:00'",
     "j": "'\"\\\\N\"'", "jb": "'[]'", "b": "false"},
    {"f4": "'-Infinity'", "f8": "'Infinity'", "n": "'-Infinity'", "d": "'4713-01-01 BC'",
     "ts": "'4713-01-01 00:00:00 BC'", "tz": "'4713-01-01 00:00:00+00 BC'", "iv": "'1 mon'",
     "tm": "'23:59:59.999999'"},
    {"f4": "'1.1'", "f8": "'1e308'", "n": "'1e131071'", "d": "'5874897-12-31'", "ts": "'294276-12-31 23:59:59.999999'",
     "tz": "'294276-12-31 23:59:59.999999+00'", "iv": "'-1 mon'", "b": "NULL"},
    {"f4": "'3.4028235e38'", "f8": "'5e-324'", "n": "'-1e-16383'", "d": "'0001-01-01'",
     "ts": "'0001-01-01 00:00:00'", "tz": "'0001-01-01 00:00:00+00'", "iv": "'1 year -1 mons 3 days -00:00:01'"},
    {"f4": "'1e-45'", "f8": "'-0'", "n": "'123456789012345678901234567890.123456789012345678901234567890'",
     "d": "'9999-12-31'", "ts": "'9999-12-31 23:59:59.999999'", "tz": "'9999-12-31 23:59:59.999999+00'",
     "iv": "'-3 hours'"},
    {"f4": "'-0'", "f8": "'0.1'", "n": "'0.00'", "d": "'1677-09-21'", "ts": "'1677-09-21 00:12:43.145224'",
     "tz": "'2262-04-11 23:47:16.854776+00'", "iv": "'0'"},
    {"d": "'2262-04-12'", "ts": "'10000-01-01 00:00:00'", "tz": "'0001-01-01 00:00:00+14'",
     "iv": "'100000000 days'"},
]


def _literal_rows() -> list[dict[str, str]]:
    rows = [dict(row) for row in AWKWARD_ROWS]
    for text in AWKWARD_TEXT:
        quoted = "'" + text.replace("'", "''") + "'"
        rows.append({"t": quoted, "vc": quoted, "bp": quoted if len(text) <= 3 else "NULL", "nm": quoted,
                     "ch": quoted if len(text) == 1 and text.isascii() else "NULL",
                     "j": "to_json(" + quoted + "::text)"})
    rows.append({})  # all NULL
    return rows


@pytest.fixture(scope="module")
def session(testbed):
    """One tunnel and one %%wgsql connection (its raw psycopg session) for the whole module."""
    tunnel = connect(testbed.client_config(identity=5))  # its own key: other modules' tunnels use 0-4
    dsn = parse_dsn(testbed.dsn())
    sql = dialect_for(dsn).connection(dsn, "values", lambda: tunnel)
    try:
        sql.ensure()
        yield sql.raw
    finally:
        sql.close()
        tunnel.close()


def _both(conn, sql: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    bulk = run_statement(conn, sql, None, bulk=True)
    rows = run_statement(conn, sql, None, bulk=False)
    assert bulk.bulk and not rows.bulk, "the bulk path was not taken (a type it should carry fell back?)"
    return bulk.frame, rows.frame


def assert_same(bulk: pd.DataFrame, rows: pd.DataFrame) -> None:
    """Equal dtypes; typed columns equal exactly; object columns equal value by value, type and repr (so
    Decimal('NaN') inside a list, which never == itself, still compares, and is never taken for None)."""
    assert list(bulk.columns) == list(rows.columns)
    assert [str(t) for t in bulk.dtypes] == [str(t) for t in rows.dtypes]
    objects = [name for name in bulk.columns if bulk[name].dtype == object]
    pd.testing.assert_frame_equal(bulk.drop(columns=objects), rows.drop(columns=objects), check_exact=True)
    for name in objects:
        left = [(type(v).__name__, repr(v)) for v in bulk[name]]
        right = [(type(v).__name__, repr(v)) for v in rows[name]]
        assert left == right, name


def _fill(conn, rows: list[dict[str, str]]) -> None:
    conn.execute("DROP TABLE IF EXISTS pg_temp.awkward")
    conn.execute("CREATE TEMP TABLE awkward (k int, " + ", ".join(f"{c} {t}" for c, t in COLUMNS.items()) + ")")
    for k, row in enumerate(rows):
        names = ["k", *row]
        values = [str(k), *(f"({v})::{COLUMNS[c]}" for c, v in row.items())]
        conn.execute(f"INSERT INTO awkward ({', '.join(names)}) VALUES ({', '.join(values)})")


@pytest.mark.parametrize(("encoding", "zone"), [("UTF8", "UTC"), ("LATIN1", "America/St_Johns"),
                                                ("WIN1252", "Asia/Kathmandu")])
def test_awkward_values_equal_on_both_paths(session, encoding, zone):
    conn = session
    try:
        conn.execute(f"SET client_encoding = '{encoding}'")
        conn.execute(f"SET TimeZone = '{zone}'")
        codec = {"UTF8": "utf-8", "LATIN1": "latin-1", "WIN1252": "cp1252"}[encoding]
        rows = []
        for row in _literal_rows():
            texts = list(row.values())
            if all(_encodable(t, codec) for t in texts):
                rows.append(row)
        _fill(conn, rows)
        bulk, cursor = _both(conn, "SELECT * FROM awkward ORDER BY k")
        assert len(bulk) == len(rows)
        assert_same(bulk, cursor)
        by_key = bulk.set_index("k")
        text_rows = {v: k for k, r in enumerate(rows) for v in [r.get("t")] if v}
        for text in AWKWARD_TEXT:
            key = text_rows.get("'" + text.replace("'", "''") + "'")
            if key is not None:
                assert by_key.loc[key, "t"] == text  # never a NULL marker, a number or another encoding's text
        assert by_key.loc[0, "d"] == "infinity" and by_key.loc[1, "tz"] == "-infinity"
        assert pd.isna(by_key.loc[0, "f8"]) and by_key.loc[1, "f8"] == float("-inf")
        assert isinstance(by_key.loc[0, "n"], decimal.Decimal) and by_key.loc[0, "n"].is_nan()
        assert pd.isna(by_key.loc[len(rows) - 1, "t"])
    finally:
        conn.execute("RESET client_encoding")
        conn.execute("RESET TimeZone")


def _encodable(text: str, codec: str) -> bool:
    try:
        text.encode(codec)
    except UnicodeEncodeError:
        return False
    return True


def test_issue_inputs(session):
    conn = session
    bulk, cursor = _both(conn, "SELECT 'NaN'::float8 AS x")
    assert_same(bulk, cursor)
    assert str(bulk["x"].dtype) == "float64" and pd.isna(bulk["x"][0])
    bulk, cursor = _both(conn, "SELECT '\\N'::text AS t")
    assert_same(bulk, cursor)
    assert bulk["t"][0] == "\\N"
    bulk, cursor = _both(conn, "SELECT pg_sleep(0) AS v")  # void
    assert_same(bulk, cursor)


def test_json_null_is_not_sql_null(session):
    """The JSON text null is JSON_NULL, SQL NULL is None, on both paths and inside arrays (the MariaDB path
    keeps the same convention: tests/integration/test_mariadb.py)."""
    sql = ("SELECT * FROM (VALUES (1, 'null'::json, 'null'::jsonb, ARRAY['null'::jsonb, NULL]), "
           "(2, NULL, NULL, NULL), (3, '[null]', '{\"a\": null}', '{}')) AS v(k, j, jb, ja) ORDER BY k")
    bulk, cursor = _both(session, sql)
    assert_same(bulk, cursor)
    assert bulk["j"].tolist() == [JSON_NULL, None, [None]] and bulk["j"][0] is JSON_NULL and bulk["j"][1] is None
    assert bulk["jb"].tolist() == [JSON_NULL, None, {"a": None}] and bulk["ja"][0] == [JSON_NULL, None]
    assert bulk["j"].isna().tolist() == [False, True, False]


def test_same_session_settings_and_temp_tables(session):
    """The bulk path sees what the session set up: a temp table, search_path, an open transaction's rows."""
    conn = session
    conn.execute("CREATE TEMP TABLE seen (v int); INSERT INTO seen VALUES (1), (2)")
    bulk, cursor = _both(conn, "SELECT v, current_setting('search_path') AS sp FROM seen ORDER BY v")
    assert_same(bulk, cursor)
    assert list(bulk["v"]) == [1, 2]
    conn.execute("DROP TABLE seen")


def test_unknown_type_falls_back_to_rows(session):
    frame = run_statement(session, "SELECT '(1,2)'::point AS p, '12:00+02'::timetz AS tt", None, bulk=True)
    assert not frame.bulk and frame.frame["p"][0] == "(1,2)"


# PostgreSQL text (and so every jsonb string, keys included) cannot hold NUL: the server refuses \u0000.
PG_TEXT_CHARS = st.characters(exclude_characters="\x00", codec="utf-8")
JSON = st.recursive(st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(PG_TEXT_CHARS, max_size=8),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(PG_TEXT_CHARS, max_size=3), inner, max_size=3),
                    max_leaves=6)
TEXT = st.one_of(st.sampled_from(AWKWARD_TEXT),
                 st.text(PG_TEXT_CHARS, max_size=20))
INTERVAL = st.builds(lambda m, d, us: f"{m} mons {d} days {us} microseconds",
                     st.integers(-(2**31) + 1, 2**31 - 1), st.integers(-(2**31) + 1, 2**31 - 1),
                     st.integers(-(10**17), 10**17))
DATE_TEXT = st.one_of(st.dates().map(str), st.sampled_from(["infinity", "-infinity", "0044-03-15 BC",
                                                            "12345-06-07", "0001-01-01", "9999-12-31"]))
STAMP = st.one_of(st.datetimes().map(str),
                  st.sampled_from(["infinity", "-infinity", "0001-01-01 00:00:00", "9999-12-31 23:59:59.999999",
                                   "0100-02-03 04:05:06.5 BC", "20000-01-01 00:00:00"]))
ROW = st.fixed_dictionaries({
    "i2": st.none() | st.integers(-(2**15), 2**15 - 1),
    "i8": st.none() | st.integers(-(2**63), 2**63 - 1),
    "f4": st.none() | st.floats(width=32),
    "f8": st.none() | st.floats(),
    "n": st.none() | st.decimals(allow_nan=True, allow_infinity=False, min_value=-(10**40), max_value=10**40)
                   .filter(lambda v: not v.is_snan() and not (v.is_nan() and v.is_signed())),
    "t": st.none() | TEXT,
    "b": st.none() | st.booleans(),
    "d": st.none() | DATE_TEXT,
    "ts": st.none() | STAMP,
    "tz": st.none() | STAMP.map(lambda s: s if "infinity" in s else s.replace(" BC", "+05:30 BC")
                                if s.endswith(" BC") else s + "-03:30"),
    "iv": st.none() | INTERVAL,
    "jb": st.none() | JSON,
    "ai": st.none() | st.lists(st.none() | st.integers(-(2**63), 2**63 - 1), max_size=4),
    "at": st.none() | st.lists(st.none() | TEXT, max_size=4),
    "by": st.none() | st.binary(max_size=16),
    "u": st.none() | st.uuids(),
})
CASTS = {"i2": "int2", "i8": "int8", "f4": "float4", "f8": "float8", "n": "numeric", "t": "text", "b": "bool",
         "d": "date", "ts": "timestamp", "tz": "timestamptz", "iv": "interval", "jb": "jsonb", "ai": "int8[]",
         "at": "text[]", "by": "bytea", "u": "uuid"}


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(rows=st.lists(ROW, min_size=1, max_size=6))
def test_generated_values_equal_on_both_paths(session, rows):
    from psycopg.types.json import Jsonb

    conn = session
    conn.execute("DROP TABLE IF EXISTS pg_temp.generated")
    conn.execute("CREATE TEMP TABLE generated (k int, " + ", ".join(f"{c} {t}" for c, t in CASTS.items()) + ")")
    placeholders = ", ".join(f"%s::{t}" for t in CASTS.values())
    with conn.cursor() as cur:
        for k, row in enumerate(rows):
            values = [Jsonb(row[c]) if c == "jb" and row[c] is not None else row[c] for c in CASTS]
            cur.execute(f"INSERT INTO generated VALUES (%s, {placeholders})", [k, *values])
    bulk, cursor = _both(conn, "SELECT * FROM generated ORDER BY k")
    assert_same(bulk, cursor)
    for k, row in enumerate(rows):
        got = bulk["t"][k]
        assert got == row["t"] or (pd.isna(got) and row["t"] is None)
        if row["f8"] is not None and row["f8"] == row["f8"]:
            assert bulk["f8"][k] == row["f8"]
        if isinstance(row["n"], decimal.Decimal) and not row["n"].is_nan():
            assert bulk["n"][k] == row["n"]
        if isinstance(row["u"], uuid.UUID):
            assert bulk["u"][k] == row["u"]
        if row["d"] and len(row["d"]) == 10 and str(bulk["d"].dtype).startswith("datetime64"):
            assert bulk["d"][k] == pd.Timestamp(datetime.date.fromisoformat(row["d"]))
