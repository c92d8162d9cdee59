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

from wgmagic.connstr import parse_dsn
from wgmagic.sql import mysql_types as mysql
from wgmagic.sql.dialects import dialect_for
from wgmagic.sql.dialects.mysql import DIALECT as MYSQL
from wgmagic.sql.dialects.mysql import format_mysql_error
from wgmagic.sql.mysql_types import frame_from_rows
from wgmagic.sql.passwords import my_cnf_password


def field(name: str, type_code: int, *, flags: int = 0, length: int = 11) -> SimpleNamespace:
    return SimpleNamespace(name=name, type_code=type_code, flags=flags, length=length)


def test_mysql_urls_get_the_mysql_dialect():
    for url in ("mysql+pymysql://app@h/app", "mysql://app@h/app", "mariadb://app@h/app"):
        assert dialect_for(parse_dsn(url)) is MYSQL
    assert dialect_for(parse_dsn("postgresql://app@h/app")).name == "PostgreSQL"
    assert dialect_for(parse_dsn("mysql+mysqldb://app@h/app"), require_driver=False).fallback  # SQLAlchemy


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
    params = mysql.driver_params({"a": np.int64(3), "b": pd.Timestamp("2026-01-02 03:04:05"), "c": {"k": 1},
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


# ---- MariaDB's extended type info (wgmagic.sql.mysql_wire): bytes only --------------------------------------

def _lenenc(value: int) -> bytes:
    if value < 0xFB:
        return bytes([value])
    if value < 1 << 16:
        return b"\xfc" + value.to_bytes(2, "little")
    if value < 1 << 24:
        return b"\xfd" + value.to_bytes(3, "little")
    return b"\xfe" + value.to_bytes(8, "little")


def _string(text: bytes) -> bytes:
    return _lenenc(len(text)) + text


def _block(entries: list[tuple[int, bytes]]) -> bytes:
    return b"".join(bytes([key]) + _string(value) for key, value in entries)


ENTRY = st.tuples(st.integers(0, 255), st.binary(max_size=300))


@given(st.lists(ENTRY, max_size=6))
def test_extended_metadata_round_trips(entries):
    from wgmagic.sql.mysql_wire import parse_extended_metadata

    parsed = parse_extended_metadata(_block(entries))
    expected = {key: value.decode("ascii", "replace").lower() for key, value in entries}
    assert parsed == expected


@given(st.binary(max_size=64))
def test_extended_metadata_garbage_is_a_metadata_error_or_entries(data):
    from wgmagic.sql.mysql_wire import MetadataError, parse_extended_metadata

    try:
        entries = parse_extended_metadata(data)
    except MetadataError:
        return
    assert all(isinstance(k, int) and isinstance(v, str) for k, v in entries.items())


@given(st.lists(ENTRY, max_size=3), st.integers(1, 40))
def test_truncated_extended_metadata_never_reads_past_its_block(entries, cut):
    from wgmagic.sql.mysql_wire import MetadataError, parse_extended_metadata

    block = _block(entries)
    if not block:
        return
    try:
        parse_extended_metadata(block[:max(0, len(block) - cut)])
    except MetadataError:
        pass


def _column_definition(name: bytes, type_code: int, block: bytes | None, *, charset: int = 45, flags: int = 0) -> bytes:
    import struct

    names = b"".join(_string(part) for part in (b"def", b"app", b"kinds_view", b"kinds", name, name))
    extended = b"" if block is None else _lenenc(len(block)) + block
    return names + extended + b"\x0c" + struct.pack("<HIBHBxx", charset, 0xFFFFFFFF, type_code, flags, 0)


def test_column_definition_with_extended_metadata():
    from wgmagic.sql.mysql_wire import ExtendedFieldPacket

    packet = ExtendedFieldPacket(_column_definition(b"doc", mysql.BLOB, _block([(1, b"json")]), flags=144),
                                 "utf-8")
    assert (packet.name, packet.org_table, packet.type_code, packet.flags, packet.charsetnr) == \
        ("doc", "kinds", mysql.BLOB, 144, 45)
    assert packet.format == "json" and packet.type_name is None
    packet = ExtendedFieldPacket(_column_definition(b"u", mysql.STRING, _block([(0, b"uuid")])), "utf-8")
    assert packet.type_name == "uuid" and packet.format is None
    packet = ExtendedFieldPacket(_column_definition(b"t", mysql.BLOB, b""), "utf-8")
    assert packet.type_name is None and packet.format is None and packet.type_code == mysql.BLOB


def _greeting(low_caps: int, extended: int) -> bytes:
    import struct

    return (b"\x0a" + b"5.5.5-10.11.19-MariaDB\x00" + struct.pack("<I", 7) + b"12345678" + b"\x00"
            + struct.pack("<HBHHB", low_caps, 45, 2, 0x81FF, 21) + bytes(6) + struct.pack("<I", extended)
            + b"abcdefghijkl\x00mysql_native_password\x00")


def test_the_servers_extended_capabilities_come_from_its_greeting():
    from wgmagic.sql.mysql_wire import MARIADB_CLIENT_EXTENDED_TYPE_INFO, mariadb_capabilities

    assert mariadb_capabilities(_greeting(0xF7FE, 0x1D)) == 0x1D  # MariaDB 10.11's greeting
    assert mariadb_capabilities(_greeting(0xF7FE, 0x1D)) & MARIADB_CLIENT_EXTENDED_TYPE_INFO
    assert mariadb_capabilities(_greeting(0xF7FF, 0x1D)) == 0  # CLIENT_MYSQL set: MySQL, no extension
    assert mariadb_capabilities(b"\x0a5.7\x00") == 0 and mariadb_capabilities(b"") == 0


@given(st.binary(max_size=80))
def test_any_greeting_gives_capabilities_or_zero(data):
    from wgmagic.sql.mysql_wire import mariadb_capabilities

    assert 0 <= mariadb_capabilities(data) < 2**32


def test_the_handshake_response_announces_the_extension():
    import struct

    from wgmagic.sql.mysql_wire import with_extended_capabilities

    response = struct.pack("<iIB23s", 0x000FA68D, 1 << 24, 45, b"") + b"app\x00rest"
    patched = with_extended_capabilities(response, 8)
    assert struct.unpack_from("<I", patched)[0] == 0x000FA68C  # CLIENT_MYSQL cleared, the rest kept
    assert patched[4:28] == response[4:28] and struct.unpack_from("<I", patched, 28)[0] == 8
    assert patched[32:] == b"app\x00rest"


def test_json_columns_come_from_the_result_and_null_stays_apart():
    from wgmagic.sql.jsonvalue import JSON_NULL

    fields = [SimpleNamespace(name="doc", type_code=mysql.BLOB, flags=0, length=0, format="json"),
              SimpleNamespace(name="txt", type_code=mysql.BLOB, flags=0, length=0, format=None),
              SimpleNamespace(name="my", type_code=mysql.JSON, flags=0, length=0)]  # MySQL: no .format
    assert mysql.json_columns(fields) == {0, 2}
    frame = frame_from_rows([("null", "null", "null"), (None, None, None), ("[1]", "[1]", '{"a": null}')], fields,
                            mysql.json_columns(fields))
    assert frame["doc"][0] is JSON_NULL and frame["doc"][1] is None and frame["txt"][0] == "null"
    assert frame["doc"].isna().tolist() == [False, True, False] and frame["my"][2] == {"a": None}
    assert mysql.driver_params({"j": JSON_NULL}) == {"j": "null"}


def test_json_null_is_one_value_through_copy_and_pickle():
    import copy
    import pickle

    from wgmagic.sql.jsonvalue import JSON_NULL, JsonNull, dumps_json, loads_json

    assert JsonNull() is JSON_NULL and copy.deepcopy(JSON_NULL) is JSON_NULL
    assert pickle.loads(pickle.dumps(JSON_NULL)) is JSON_NULL and not JSON_NULL and repr(JSON_NULL) == "JSON_NULL"
    assert not pd.isna(JSON_NULL) and loads_json("null") is JSON_NULL and loads_json("[null]") == [None]
    assert dumps_json(JSON_NULL) == "null" and dumps_json({"a": None}) == '{"a": null}'


def test_a_malformed_extended_block_is_a_metadata_error():
    import pytest

    from wgmagic.sql.mysql_wire import ExtendedFieldPacket, MetadataError

    for block in (b"\x01\x05js", b"\x01\xfb", b"\x01"):
        with pytest.raises(MetadataError):
            ExtendedFieldPacket(_column_definition(b"doc", mysql.BLOB, block), "utf-8")
