"""SQLite in %%wgsql: the standard library's sqlite3 on a local file, no tunnel. The smallest dialect: copy it.

`sqlite:///relative/path.db`, `sqlite:////absolute/path.db`, `sqlite://` (in memory), as SQLAlchemy writes them.
- Lexer rules: standard SQL (the defaults). Parameters go to sqlite3 as `?` placeholders, never into the text.
- Types: per column from the values SQLite returns (its types belong to values, not columns): integers as
  int64 (Int64 with NULLs), reals as float64, text as str, blobs as bytes, a mix as objects.
- Cancel: the statement runs on a worker thread; Ctrl-C calls sqlite3_interrupt and the session stays usable.
- Reconnect: a closed connection is opened again by the next cell (base class `ensure`).
- Messages: sqlite3's own words, as the sqlite3 shell prints them (`Error: no such table: nope`).
"""

from __future__ import annotations

import contextlib
import re
import threading
from typing import TYPE_CHECKING, Any

from wgmagic.connstr import Dsn
from wgmagic.sql.dialect import Dialect, PasswordPrompt, SqlConnection, TunnelProvider
from wgmagic.sql.messages import QueryCancelledError, SqlError
from wgmagic.sql.parameters import Statement
from wgmagic.sql.results import Progress, Result

if TYPE_CHECKING:
    from wgmagic.runtime.tunnel import Tunnel

_PLACEHOLDER = re.compile(r"%%|%\((\w+)\)s")  # wgmagic.sql.parameters' pyformat output


class SqliteDialect(Dialect):
    """SQLite through the standard library's sqlite3: sqlite:// and sqlite+pysqlite:// URLs."""

    name = "SQLite"
    local = True

    def accepts(self, dsn: Dsn) -> bool:
        return dsn.dialect == "sqlite" and dsn.driver in (None, "pysqlite")

    def connection(self, dsn: Dsn, alias: str, tunnel: TunnelProvider | None, *,
                   prompt: PasswordPrompt | None = None, autocommit: bool = True) -> SqlConnection:
        return SqliteConnection(self, dsn, alias, None, prompt, autocommit=autocommit)


DIALECT = SqliteDialect()


class SqliteConnection(SqlConnection):
    """A %%wgsql session to an SQLite database: `raw` is the sqlite3.Connection."""

    def is_usable(self) -> bool:
        import sqlite3

        try:
            return self.raw is not None and self.raw.total_changes >= 0
        except sqlite3.ProgrammingError:  # closed
            return False

    def _open(self, tunnel: Tunnel | None) -> None:
        import sqlite3

        self.raw = sqlite3.connect(self.dsn.database or ":memory:", check_same_thread=False,
                                   isolation_level=None if self.autocommit else "DEFERRED")

    def _drop(self) -> None:
        raw, self.raw = self.raw, None
        if raw is not None:
            with contextlib.suppress(Exception):
                raw.close()

    def set_autocommit(self, on: bool) -> None:
        self.autocommit = on
        if self.is_usable() and not self.raw.in_transaction:
            self.raw.isolation_level = None if on else "DEFERRED"

    def run(self, statements: list[Statement], *, progress: Progress | None = None) -> list[Result]:
        self.ensure()
        return [self._run_one(statement) for statement in statements]

    def _run_one(self, statement: Statement) -> Result:
        import sqlite3

        sql, values = qmark(statement)
        outcome: dict[str, Any] = {}
        done = threading.Event()

        def work() -> None:
            try:
                cursor = self.raw.execute(sql, values)
                outcome["rows"] = cursor.fetchall() if cursor.description else None
                outcome["names"] = [column[0] for column in cursor.description or ()]
                outcome["count"] = cursor.rowcount
            except BaseException as exc:  # handed to the cell's thread
                outcome["error"] = exc
            finally:
                done.set()

        threading.Thread(target=work, name=f"wgmagic-sqlite-{self.alias}", daemon=True).start()
        try:
            while not done.wait(0.25):
                pass
        except KeyboardInterrupt:
            self.raw.interrupt()  # sqlite3_interrupt: the statement stops at its next step
            done.wait()
            raise QueryCancelledError("Query cancelled (sqlite3_interrupt); the connection is still usable.") \
                from None
        if isinstance(outcome.get("error"), sqlite3.Error):
            raise SqlError(f"Error: {outcome['error']}") from None
        if "error" in outcome:
            raise outcome["error"]
        if outcome["rows"] is None:
            return Result(None, outcome["count"], "")
        return Result(frame_from_values(outcome["rows"], outcome["names"]), len(outcome["rows"]), "")


def qmark(statement: Statement) -> tuple[str, list[object]]:
    """The statement with sqlite3's `?` placeholders and its values in their order."""
    if not statement.params:
        return statement.sql, []
    params, values = statement.params, []

    def one(match: re.Match[str]) -> str:
        if match.group(1) is None:
            return "%"  # a doubled % of the text
        values.append(params[match.group(1)])
        return "?"

    return _PLACEHOLDER.sub(one, statement.sql), values


def frame_from_values(rows: list[tuple[Any, ...]], names: list[str]) -> Any:
    """A DataFrame typed from the values: int -> int64/Int64, float -> float64, anything else as objects."""
    import pandas as pd

    columns = list(zip(*rows, strict=True)) if rows else [() for _ in names]
    data = {}
    for i, values in enumerate(columns):
        kinds = {type(v) for v in values if v is not None}
        nulls = None in values
        if kinds == {int} and all(-(2**63) <= v < 2**63 for v in values if v is not None):
            data[i] = pd.Series(pd.array(list(values), dtype="Int64" if nulls else "int64"))
        elif kinds <= {float, int} and float in kinds:
            data[i] = pd.Series([float("nan") if v is None else float(v) for v in values], dtype="float64")
        else:
            data[i] = pd.Series(list(values), dtype=object)
    frame = pd.DataFrame(data, index=range(len(rows)))
    frame.columns = names
    return frame
