"""PostgreSQL in %%wgsql: psycopg (3) through a forward of the tunnel, typed DataFrames, a server-side cancel.

`postgresql://app@db.internal/app` (also `postgres://`, and `postgresql+X://` for a driver built on libpq:
wgmagic.connstr.LIBPQ_DRIVERS) opens a psycopg connection to a forward of the tunnel: a Unix socket, or
loopback TCP when `sslmode` asks for TLS (libpq's `host` stays the real name, `hostaddr` is the forward, so
`sslmode=verify-full` checks the real name).

- The lexer's rules follow the session: `standard_conforming_strings` as the server last reported it.
- Types: wgmagic.sql.results (a binary COPY bulk path and the row path, one dtype per PostgreSQL type).
- The password: the DSN, PGPASSWORD, ~/.pgpass, the keyring, or a hidden prompt (wgmagic.sql.passwords).
- Ctrl-C sends a server-side cancel through the same forward and reads the connection back to idle.
- `--chunks N` returns an iterator read from the server as it is consumed, and `--to FILE` writes the rows as
  they arrive, on both paths (wgmagic.sql.pgstream): the COPY path for a row query, `Cursor.stream` for the
  rest. A `--chunks` iterator keeps the session busy until it is exhausted or closed; the next statement on the
  session closes it first (the rest of its query cancelled on the server).
- A statement that fails because the session broke is re-run once on a fresh session only when it is the
  cell's first statement, read-only, and no transaction was open; otherwise the message says it was not.
- Errors read as psql prints them (format_server_error).
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Any

from wgmagic import explain
from wgmagic.connstr import TLS_MODES, Dsn, mask_secrets
from wgmagic.proto.forwarding import ForwardProtocol
from wgmagic.proto.postgres import POSTGRES
from wgmagic.sql.dialect import (
    CONNECT_TIMEOUT,
    Dialect,
    LexerRules,
    PasswordPrompt,
    SqlConnection,
    TunnelProvider,
    first_line,
)
from wgmagic.sql.messages import (
    QueryCancelledError,
    SqlError,
)
from wgmagic.sql.outputs import current as current_output
from wgmagic.sql.parameters import Statement
from wgmagic.sql.passwords import keyring_lookup, pgpass_lookup
from wgmagic.sql.pgstream import drain_after_interrupt
from wgmagic.sql.results import Progress, Result, is_row_query, run_statement

if TYPE_CHECKING:
    import psycopg

    from wgmagic.runtime.tunnel import Tunnel
    from wgmagic.sql.outputs import OutputSpec


class PostgresDialect(Dialect):
    """PostgreSQL through psycopg: every postgresql:// URL without a driver or with a libpq-based one, and
    libpq keyword strings."""

    name = "PostgreSQL"

    def accepts(self, dsn: Dsn) -> bool:
        return dsn.uses_libpq

    def connection(self, dsn: Dsn, alias: str, tunnel: TunnelProvider | None, *,
                   prompt: PasswordPrompt | None = None, autocommit: bool = True) -> SqlConnection:
        return PostgresConnection(self, dsn, alias, tunnel, prompt, autocommit=autocommit)


DIALECT = PostgresDialect()


class PostgresConnection(SqlConnection):
    """A %%wgsql session to PostgreSQL: `raw` is the psycopg.Connection."""

    def is_usable(self) -> bool:
        raw = self.raw
        return raw is not None and not raw.closed and not raw.broken

    def forward_protocol(self) -> ForwardProtocol:
        """PostgreSQL's: libpq finds the Unix socket as .s.PGSQL.PORT and shows the forward's ErrorResponse."""
        return POSTGRES

    def _open(self, tunnel: Tunnel | None) -> None:
        host, port = self.dsn.host, self.dsn.port or 5432
        forward_params: dict[str, str] | None = None
        if tunnel is not None and host and not host.startswith("/"):
            tls = self.dsn.options.get("sslmode") in TLS_MODES  # libpq never speaks TLS over a Unix socket
            forward_params = self._forward_through(tunnel, host, port, tcp=tls)
        self._connect_naming_the_stage(lambda: self._connect(forward_params), tunnel, host, port)

    def _connect(self, forward_params: dict[str, str] | None) -> psycopg.Connection[Any]:
        import psycopg

        kwargs: dict[str, Any] = self.dsn.libpq_kwargs(forward_params)
        kwargs.setdefault("connect_timeout", str(CONNECT_TIMEOUT))
        kwargs.setdefault("application_name", "wgmagic")
        if "password" not in kwargs:
            password = os.environ.get("PGPASSWORD") or pgpass_lookup(self.dsn) or keyring_lookup(self.dsn)
            if password is not None:
                kwargs["password"] = password
        try:
            return psycopg.connect(autocommit=self.autocommit, **kwargs)
        except psycopg.OperationalError as exc:
            if "password" in kwargs or self._prompt is None or "no password supplied" not in str(exc):
                raise
        kwargs["password"] = self._prompt(f"Password for {self.dsn.user or 'the database user'}@{self.dsn.host}: ")
        connection = psycopg.connect(autocommit=self.autocommit, **kwargs)
        self.dsn = self.dsn.with_password(kwargs["password"])  # asked once per connection, like psql's -W
        return connection

    def _drop(self) -> None:
        self._close_pending("its connection was closed")
        raw, self.raw = self.raw, None
        if raw is not None:
            with contextlib.suppress(Exception):
                raw.close()
        self._close_forward()

    def set_autocommit(self, on: bool) -> None:
        """Autocommit for the next statements. An open transaction is left as it is: the change applies once
        it has ended, as psql's AUTOCOMMIT does."""
        self.autocommit = on
        raw = self.raw
        if raw is None or raw.closed or raw.autocommit == on:
            return
        self._close_pending(f"autocommit changed on connection {self.alias!r}")
        import psycopg

        if raw.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            raw.autocommit = on

    def tls_in_use(self) -> bool:
        return bool(getattr(getattr(self.raw, "pgconn", None), "ssl_in_use", False))

    def lexer_rules(self) -> LexerRules:
        """standard_conforming_strings as the server last reported it (on unless it said off): off,
        backslashes escape inside '...' and the statements are cut accordingly, as psql does."""
        try:
            value = self.raw.info.parameter_status("standard_conforming_strings")
        except Exception:
            return LexerRules()
        return LexerRules(standard_conforming_strings=value not in ("off", b"off"))

    # ---- running a cell ------------------------------------------------------------------------------
    def run(self, statements: list[Statement], *, progress: Progress | None = None) -> list[Result]:
        self._close_pending(f"another statement ran on connection {self.alias!r}")
        self.ensure()
        return [self._run_one(statement, progress, retry=index == 0) for index, statement in enumerate(statements)]

    def _run_streamed(self, statement: Statement, spec: OutputSpec, progress: Progress | None) -> Result:
        """`--chunks N` (an iterator read as it is consumed) or `--to FILE` (rows written as they arrive)."""
        from wgmagic.sql import outputs, pgstream
        from wgmagic.sql.results import _copy_out

        raw, sql, params = self.raw, statement.sql, statement.params
        described = pgstream.bulk_columns(raw, sql, params)
        if described is not None and spec.chunks is None:
            return _copy_out(raw, sql, described, progress)  # the COPY path's Parquet sink
        if described is not None:
            names, oids = described
            of_pieces, _ = pgstream.frame_builders(raw, names, oids, spec.string_dtype)
            stream = outputs.piece_chunks(pgstream.copy_parts(raw, sql, described, progress), spec.chunks or 1,
                                          names, oids, spec.form, of_pieces, on_close=self._released)
            self._pending = stream
            stream.fill()  # the first result read in the cell: the query's errors show here
            return Result(stream, -1, "COPY", bulk=True)
        columns: dict[str, Any] = {}
        ended: list[tuple[str, int]] = []
        source = pgstream.row_batches(raw, sql, params, lambda n, o: columns.update(names=n, oids=o),
                                      lambda status, count: ended.append((status, count)))
        if spec.chunks is not None:
            def frame_of_rows(rows: list[Any]) -> Any:
                if "of_rows" not in columns:
                    columns["of_rows"] = pgstream.frame_builders(raw, columns["names"], columns["oids"],
                                                                 spec.string_dtype)[1]
                return columns["of_rows"](rows)

            stream = outputs.row_chunks(source, spec.chunks, frame_of_rows, spec.form, on_close=self._released)
            self._pending = stream
            stream.fill()
            if not columns:  # a statement without rows: it has ended
                status, count = ended[-1] if ended else ("", -1)
                return Result(None, count, status)
            return Result(stream, -1, ended[-1][0] if ended else "")
        sink: outputs.ParquetSink | None = None
        rows = 0
        try:
            for batch, count in source:
                if sink is None:
                    sink = outputs.ParquetSink(spec.to or "", columns["names"], columns["oids"])
                sink.add_arrays(pgstream.rows_to_arrays(batch, columns["oids"]), count)
                rows += count
            if sink is None and columns:  # rows described, none came: an empty file of those columns
                sink = outputs.ParquetSink(spec.to or "", columns["names"], columns["oids"])
            status, count = ended[-1] if ended else ("", -1)
            if sink is None:
                return Result(None, count, status)
            return Result(sink.finish(rows), rows, status)
        except BaseException:
            if sink is not None:
                sink.abort()
            raise

    def _run_one(self, statement: Statement, progress: Progress | None, *, retry: bool) -> Result:
        import psycopg

        idle_before = self.raw.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        try:
            clock = self.clock(statement.text)  # the timeline shows what the user wrote
            spec = current_output()
            if spec.streams:
                result = self._run_streamed(statement, spec, progress)
            else:
                result = run_statement(self.raw, statement.sql, statement.params, progress=progress)
            clock.stop(None if result.rowcount < 0 else result.rowcount)
            return result
        except KeyboardInterrupt:
            if self._after_interrupt():
                raise QueryCancelledError("Query cancelled: a cancel request went to the server through the "
                                          "tunnel and the query has stopped. The connection is still usable.",
                                          sqlstate="57014") from None
            raise QueryCancelledError(explain.cancel_unconfirmed(self._peer_not_answering())) from None
        except psycopg.errors.QueryCanceled as exc:
            raise QueryCancelledError(format_server_error(exc, statement.sql if not statement.params else None),
                                      sqlstate="57014") from None
        except psycopg.Error as exc:
            if self.raw.broken or self.raw.closed:
                reason = self._peer_not_answering()
                if reason is not None:  # reconnecting now would only wait out a connect timeout
                    self._drop()
                    raise SqlError(explain.connection_lost(reason)) from None
                # The server or the path went away. A read-only first statement of a cell is retried once on
                # a fresh connection; anything else is not re-run (it may have taken effect), as psql does.
                stale = retry and idle_before and is_row_query(statement.sql)
                self.ensure()
                if stale:
                    return self._run_one(statement, progress, retry=False)
                raise SqlError(f"The connection to the server was lost ({first_line(exc)}); wgmagic reconnected. "
                               "The statement was not run again: check whether it took effect, then re-run the "
                               "cell.") from None
            raise SqlError(format_server_error(exc, statement.sql if not statement.params else None),
                           sqlstate=getattr(exc, "sqlstate", None)) from None

    def _after_interrupt(self) -> bool:
        """Make sure the query is stopped on the server and the connection is idle again; else close it (the
        next cell opens a fresh one). True only when the connection is idle again: the query stopped."""
        raw = self.raw
        if raw is None or raw.closed or raw.broken:
            self._drop()
            return False
        if not drain_after_interrupt(raw):
            self._drop()
            return False
        return True


def format_server_error(exc: BaseException, sql: str | None = None) -> str:
    """psql's layout for a psycopg error: severity and message, LINE and caret, DETAIL, HINT."""
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    if not primary:
        return mask_secrets(str(exc).strip() or type(exc).__name__)
    severity = getattr(diag, "severity", None) or "ERROR"
    lines = [f"{severity}:  {primary}"]
    position = getattr(diag, "statement_position", None)
    if sql and position and str(position).isdigit():
        lines.extend(_caret_lines(sql, int(position)))
    for label, attr in (("DETAIL", "message_detail"), ("HINT", "message_hint"), ("CONTEXT", "context")):
        value = getattr(diag, attr, None)
        if value:
            lines.append(f"{label}:  {value}")
    return mask_secrets("\n".join(lines))


def _caret_lines(sql: str, position: int) -> list[str]:
    """'LINE n: text' and a caret under character `position` (1-based, in characters, as the server counts)."""
    index = max(0, min(position - 1, len(sql)))
    line_start = sql.rfind("\n", 0, index) + 1
    line_end = sql.find("\n", index)
    line_end = len(sql) if line_end < 0 else line_end
    number = sql.count("\n", 0, line_start) + 1
    text = sql[line_start:line_end].replace("\t", " ")
    prefix = f"LINE {number}: "
    column = index - line_start
    # Long lines are cut around the position, as psql does, so the caret stays on screen.
    if len(text) > 100 and column > 60:
        cut = column - 50
        text = "..." + text[cut:]
        column = column - cut + 3
    if len(text) > 110:
        text = text[:107] + "..."
    return [prefix + text, " " * (len(prefix) + column) + "^"]
