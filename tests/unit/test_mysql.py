"""The MySQL/MariaDB path's pure parts: option files, error text, column types (the real server is in
tests/integration/test_mariadb.py)."""

from __future__ import annotations

import decimal
import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pymysql
from hypothesis import given
from hypothesis import strategies as st

from wgmagic.sql import mysql
from wgmagic.sql.connection import SqlConnection
from wgmagic.sql.connstr import parse_dsn
from wgmagic.sql.mysql import (
    MySqlConnection,
    connection_class,
    format_mysql_error,
    frame_from_rows,
    my_cnf_password,
)


def field(name: str, type_code: int, *, flags: int = 0, length: int = 11) -> SimpleNamespace:
    return SimpleNamespace(name=name, type_code=type_code, flags=flags, length=length)


def test_mysql_urls_get_the_mysql_connection():
    for url in ("mysql+pymysql://app@h/app", "mysql://app@h/app", "mariadb://app@h/app"):
        assert connection_class(parse_dsn(url)) is MySqlConnection
    assert connection_class(parse_dsn("postgresql://app@h/app")) is SqlConnection
    assert connection_class(parse_dsn("mysql+mysqldb://app@h/app")) is SqlConnection  # through SQLAlchemy


def test_errors_read_like_the_mysql_client():
    error = pymysql.err.ProgrammingError(1146, "Table 'app.nope' doesn't exist", sqlstate="42S02")
    assert format_mysql_error(error) == "ERROR 1146 (42S02): Table 'app.nope' doesn't exist"
    lost = pymysql.err.OperationalError(2013, "Lost connection to MySQL server during query")
    assert format_mysql_error(lost) == "ERROR 2013 (HY000): Lost connection to MySQL server during query"
    assert "s3cret" not in format_mysql_error(pymysql.err.OperationalError(1, "mysql://u:s3cret@h/d"))


def test_column_types_follow_the_postgres_conventions():
    rows = [(1, 2**64 - 1, 1, 7, decimal.Decimal("0.1"), 1.1, b"\xff", '{"a": [1]}', "[1, 2]", b"\x00\x01"),
            (None, None, None, 1, None, None, None, None, "3", None)]
    fields = [field("i", mysql.LONG), field("ub", mysql.LONGLONG, flags=mysql.UNSIGNED_FLAG),
              field("flag", mysql.TINY, length=1), field("tiny", mysql.TINY, length=1),
              field("d", mysql.NEWDECIMAL), field("f", mysql.FLOAT), field("b", mysql.BLOB),
              field("j", mysql.JSON), field("jt", mysql.BLOB), field("bits", mysql.BIT)]
    frame = frame_from_rows(rows, fields, {7, 8})
    assert [str(t) for t in frame.dtypes] == ["Int64", "UInt64", "boolean", "int64", "object", "float64", "object",
                                              "object", "object", "UInt64"]
    assert frame["ub"][0] == 2**64 - 1 and frame["f"][0] == float(np.float32(1.1))
    assert frame["j"][0] == {"a": [1]} and frame["jt"].tolist() == [[1, 2], 3]
    assert frame["bits"][0] == 1 and frame["d"][1] is None and frame["b"][1] is None
    empty = frame_from_rows([], fields[:2])
    assert [str(t) for t in empty.dtypes] == ["int64", "uint64"] and len(empty) == 0


def test_driver_params_are_python_values():
    params = mysql._driver_params({"a": np.int64(3), "b": pd.Timestamp("2026-01-02 03:04:05"), "c": {"k": 1},
                                   "d": "x'y"})
    assert params == {"a": 3, "b": pd.Timestamp("2026-01-02 03:04:05").to_pydatetime(), "c": json.dumps({"k": 1}),
                      "d": "x'y"}
    assert type(params["a"]) is int


def test_my_cnf_client_password(tmp_path):
    path = tmp_path / "my.cnf"
    path.write_text("# comment\n[mysql]\npassword = other\n\n[client]\nuser=app\npassword = 'a b#c' # note\n"
                    "!includedir /etc/mysql/conf.d/\n")
    path.chmod(0o600)
    assert my_cnf_password(path) == "a b#c"
    path.write_text("[client]\npassword=plain#comment\n")
    assert my_cnf_password(path) == "plain"
    path.chmod(0o666)
    assert my_cnf_password(path) is None  # world-writable: ignored, as libmysqlclient does
    assert my_cnf_password(tmp_path / "missing") is None


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\n\r"), max_size=30))
def test_my_cnf_quoted_values_round_trip(tmp_path_factory, value):
    path = tmp_path_factory.mktemp("cnf") / "my.cnf"
    quoted = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    path.write_text(f"[client]\npassword = {quoted}   # trailing comment\n", encoding="utf-8")
    path.chmod(0o600)
    assert my_cnf_password(path) == value


def test_mysql_cells_are_cut_by_mysql_rules():
    from wgmagic.sql.parameters import split_statements

    cell = ("SELECT 1; # a comment; with :nothing\nSELECT `a;b:c`, \"x;\\\"y:z\" FROM t WHERE v = :v;\n"
            "-- psql-style comment; too\nSELECT 'it\\'s; :fine'")
    statements = split_statements(cell, {"v": 3}, standard_conforming_strings=False, mysql=True)
    assert [s.text.strip() for s in statements] == [
        "SELECT 1;", "# a comment; with :nothing\nSELECT `a;b:c`, \"x;\\\"y:z\" FROM t WHERE v = :v;",
        "-- psql-style comment; too\nSELECT 'it\\'s; :fine'"]
    assert statements[1].params == {"v": 3} and statements[1].sql.endswith("v = %(v)s;")
    assert statements[0].params is None and statements[2].params is None


@given(st.text(alphabet="ab;:`\"'#\\\n -/*{}", max_size=60))
def test_mysql_cutting_keeps_every_character_in_order(cell):
    from wgmagic.sql.parameters import _scan

    parts = _scan(cell, False, mysql=True)
    assert "".join(cell[part.start:part.end] for part in parts) == cell
