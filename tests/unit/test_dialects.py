"""The SQL layer's interfaces (wgmagic/sql/dialect.py) and its dialect registry (wgmagic/sql/dialects/)."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import wgmagic
from wgmagic.connstr import parse_dsn
from wgmagic.sql.dialect import Dialect, LexerRules, SqlConnection
from wgmagic.sql.dialects import all_dialects, dialect_for

SQL = Path(wgmagic.__file__).parent / "sql"
URLS = ["postgresql://app@h/app", "postgres://app@h/app", "host=h dbname=app", "postgresql+psycopg://app@h/app",
        "postgresql+psycopg2://app@h/app", "postgresql+pg8000://app@h/app", "postgresql+asyncpg://app@h/app",
        "mysql://app@h/app", "mysql+pymysql://app@h/app", "mariadb://app@h/app", "mysql+mysqldb://app@h/app",
        "mssql+pymssql://app@h/app", "oracle+oracledb://app@h/app", "sqlite:///x.db", "sqlite://",
        "duckdb:///x.duckdb", "clickhouse://app@h/app"]


@pytest.mark.parametrize("url", URLS)
def test_one_dialect_per_connection_string(url):
    dsn = parse_dsn(url)
    takers = [d for d in all_dialects() if not d.fallback and d.accepts(dsn)]
    assert len(takers) <= 1, (url, takers)
    chosen = dialect_for(dsn, require_driver=False)
    assert chosen is (takers[0] if takers else next(d for d in all_dialects() if d.fallback))


def test_the_registry():
    dialects = all_dialects()
    assert [d.fallback for d in dialects].count(True) == 1 and dialects[-1].fallback
    assert {"PostgreSQL", "MySQL/MariaDB", "SQLAlchemy"} <= {d.name for d in dialects}
    for dialect in dialects:
        assert isinstance(dialect, Dialect) and dialect.name and type(dialect).__doc__


def test_a_connection_is_made_by_its_dialect_and_not_opened():
    for url, rules in (("postgresql://app@h/app", LexerRules()),
                       ("mysql://app@h/app", LexerRules(standard_conforming_strings=False, mysql=True))):
        dsn = parse_dsn(url)
        dialect = dialect_for(dsn)
        conn = dialect.connection(dsn, "a", None)
        assert isinstance(conn, SqlConnection) and conn.dialect is dialect and conn.raw is None
        assert not conn.is_usable() and conn.lexer_rules() == rules
        assert "app@h" in repr(conn) and conn.describe()["open"] is False
        statements = conn.statements("SELECT 1; SELECT ':x' # c;\n", {})
        assert len(statements) == 2 and statements[0].text.strip() == "SELECT 1;"


def test_every_public_class_of_the_sql_layer_has_a_docstring():
    missing = []
    for path in sorted(SQL.rglob("*.py")):
        for node in ast.parse(path.read_text()).body:  # module-level classes (a function's own are private)
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_") and not ast.get_docstring(node):
                missing.append(f"{path.relative_to(SQL)}:{node.name}")
    assert not missing, missing


def test_no_module_of_the_sql_layer_over_500_lines():
    long = {str(p.relative_to(SQL)): n for p in SQL.rglob("*.py") if (n := len(p.read_text().splitlines())) > 500}
    assert not long, long


def test_the_magic_asks_the_dialect_never_the_driver():
    from wgmagic.notebook import magics

    source = inspect.getsource(magics)
    for driver_detail in ("raw.info", "psycopg.", "pymysql", "uses_psycopg", "backslash_escapes",
                          "standard_conforming_strings", "_PSYCOPG_DRIVERS"):
        assert driver_detail not in source, driver_detail
