"""Any other SQLAlchemy URL in %%wgsql: the driver SQLAlchemy names, connected to a loopback TCP forward.

`mssql+pymssql://...`, `postgresql+pg8000://...`, `mysql+mysqldb://...`, ...: the URL's host and port are
replaced by a forward of the tunnel (SQLAlchemy's dialect and driver do the rest). The fallback dialect: it
takes every URL no other dialect accepts. Statements run verbatim (`exec_driver_sql`), or through
`sqlalchemy.text()` with parameters, which renders each driver's own paramstyle. Types are what the driver
returns, in a DataFrame pandas infers. Ctrl-C closes the connection (SQLAlchemy has no portable server-side
cancel); the next cell opens a new one. Errors are the driver's first line. Needs `pip install 'wgmagic[tools]'`.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from wgmagic.connstr import Dsn, DsnError
from wgmagic.proto.forwarding import NEUTRAL, ForwardProtocol
from wgmagic.proto.postgres import POSTGRES
from wgmagic.sql.dialect import Dialect, PasswordPrompt, SqlConnection, TunnelProvider, first_line
from wgmagic.sql.messages import QueryCancelledError, SqlError
from wgmagic.sql.parameters import Statement
from wgmagic.sql.results import Progress, Result

if TYPE_CHECKING:
    from wgmagic.runtime.tunnel import Tunnel


class SqlAlchemyDialect(Dialect):
    """Every SQLAlchemy URL no other dialect takes, through SQLAlchemy."""

    name = "SQLAlchemy"
    fallback = True

    def accepts(self, dsn: Dsn) -> bool:
        return True

    def require_driver(self) -> None:
        from wgmagic.errors import import_optional

        import_optional("sqlalchemy", "tools", "%%wgsql with this URL (a SQLAlchemy dialect)")

    def connection(self, dsn: Dsn, alias: str, tunnel: TunnelProvider | None, *,
                   prompt: PasswordPrompt | None = None, autocommit: bool = True) -> SqlConnection:
        """DsnError (before any connection) when no installed SQLAlchemy dialect knows the URL's scheme."""
        refuse_unknown_scheme(dsn)
        return SqlAlchemyConnection(self, dsn, alias, tunnel, prompt, autocommit=autocommit)


ACCEPTED_FORMS = ("postgresql://, mysql:// or mariadb://, sqlite://, or a SQLAlchemy URL DIALECT+DRIVER:// whose "
                  "dialect is installed (mssql+pymssql://, oracle+oracledb://, ...)")


def refuse_unknown_scheme(dsn: Dsn) -> None:
    """DsnError naming the scheme and the forms %%wgsql accepts when SQLAlchemy (and the dialects installed as its
    plugins) knows no dialect for `dsn`'s scheme: said before connecting, not as a failed connection."""
    import sqlalchemy.exc
    from sqlalchemy.dialects import registry

    name = dsn.dialect + (f".{dsn.driver}" if dsn.driver else "")
    try:
        registry.load(name)  # the dialect class only: a missing DBAPI module is the driver's error, later
    except sqlalchemy.exc.NoSuchModuleError:
        scheme = dsn.dialect + (f"+{dsn.driver}" if dsn.driver else "")
        raise DsnError(f"{scheme}:// is not a database URL scheme wgmagic or an installed SQLAlchemy dialect "
                       f"knows; use {ACCEPTED_FORMS}") from None


DIALECT = SqlAlchemyDialect()


class SqlAlchemyConnection(SqlConnection):
    """A %%wgsql session through SQLAlchemy: `raw` is a sqlalchemy Connection (AUTOCOMMIT when autocommit)."""

    def __init__(self, dialect: Dialect, dsn: Dsn, alias: str, tunnel: TunnelProvider | None,
                 prompt: PasswordPrompt | None = None, *, autocommit: bool = True) -> None:
        super().__init__(dialect, dsn, alias, tunnel, prompt, autocommit=autocommit)
        self._engine: Any = None

    def is_usable(self) -> bool:
        raw = self.raw
        return raw is not None and not raw.closed and not getattr(raw, "invalidated", False)

    def forward_protocol(self) -> ForwardProtocol:
        """PostgreSQL's for a postgres URL of any driver (pg8000, asyncpg...), else the neutral one."""
        return POSTGRES if self.dsn.is_postgres else NEUTRAL

    def _open(self, tunnel: Tunnel | None) -> None:
        host, port = self.dsn.host, self.dsn.port or 0
        forward_params = None
        if tunnel is not None and host and not host.startswith("/"):
            if not port:
                raise DsnError(f"{self.dsn.masked()}: no port, and none is known for {self.dsn.dialect!r}: add :PORT")
            forward_params = self._forward_through(tunnel, host, port, tcp=True)
        self._connect_naming_the_stage(lambda: self._connect(forward_params), tunnel, host, port)

    def _connect(self, forward_params: dict[str, str] | None) -> Any:
        import sqlalchemy

        if forward_params is not None:
            url = self.dsn.sqlalchemy_url(host=forward_params.get("hostaddr", "127.0.0.1"),
                                          port=int(forward_params["port"]))
        else:
            url = self.dsn.sqlalchemy_url()
        self._engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
        connection = self._engine.connect()
        return connection.execution_options(isolation_level="AUTOCOMMIT") if self.autocommit else connection

    def _drop(self) -> None:
        raw, self.raw = self.raw, None
        if raw is not None:
            with contextlib.suppress(Exception):
                raw.close()
        if self._engine is not None:
            with contextlib.suppress(Exception):
                self._engine.dispose()
            self._engine = None
        self._close_forward()

    def run(self, statements: list[Statement], *, progress: Progress | None = None) -> list[Result]:
        self.ensure()
        return [self._run_one(statement) for statement in statements]

    def _run_one(self, statement: Statement) -> Result:
        import pandas as pd
        import sqlalchemy

        clock = self.clock(statement.text)  # the timeline shows what the user wrote
        try:
            if statement.params:
                cursor = self.raw.execute(sqlalchemy.text(statement.bind_sql), statement.params)
            else:
                cursor = self.raw.exec_driver_sql(statement.sql)  # verbatim: no paramstyle applies
        except KeyboardInterrupt:
            self._drop()
            raise QueryCancelledError("Query interrupted; the connection was closed (this driver cannot cancel "
                                      "on the server) and the next cell opens a new one.") from None
        except sqlalchemy.exc.DBAPIError as exc:
            if exc.connection_invalidated:
                self._drop()
            raise SqlError(first_line(exc.orig or exc)) from None
        if not cursor.returns_rows:
            clock.stop(cursor.rowcount)
            return Result(None, cursor.rowcount, "")
        frame = pd.DataFrame(cursor.fetchall(), columns=list(cursor.keys()))
        clock.stop(len(frame))
        return Result(frame, len(frame), "")
