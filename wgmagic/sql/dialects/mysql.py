"""MySQL and MariaDB in %%wgsql: PyMySQL over a socket through the tunnel, typed DataFrames, KILL QUERY on Ctrl-C.

`mysql+pymysql://app@mariadb.internal/app` (also `mysql://`, `mariadb://`, `mariadb+pymysql://`) opens a
PyMySQL connection whose socket is `Tunnel.open_connection(host, port)`: names resolve through the tunnel's
DNS and PyMySQL keeps the real host name, so `ssl_verify_identity=true` checks the certificate against it.

- Parameters (`:name`, `{name}`) are bound by the driver (PyMySQL's escaping for the connection's character
  set and sql_mode); values never enter the SQL text as wgmagic's own.
- The lexer's rules: MySQL's (`#` comments, `backtick` identifiers, "..." strings), with backslash escapes
  unless the session's sql_mode has NO_BACKSLASH_ESCAPES (the server status flag it reports).
- Each statement runs on a worker thread while the cell's thread waits; Ctrl-C / "interrupt kernel" sends
  `KILL QUERY <connection id>` on a second connection through the tunnel, then waits for the server's answer so
  the connection stays usable (as the mysql client does on Ctrl-C).
- Column types come from the result's column definitions (wgmagic.sql.mysql_types; MariaDB's extended type
  info through wgmagic.sql.mysql_wire), the same for every shape of query.
- The password comes from the URL, MYSQL_PWD, the `[client]` group of ~/.my.cnf (as libmysqlclient reads
  its option files), or a hidden prompt; it never appears in a message.
- Errors read as the mysql client prints them: `ERROR 1146 (42S02): Table 'app.nope' doesn't exist`.
- `--to FILE` and `--chunks N` read the rows with an unbuffered cursor (PyMySQL's SSCursor: the server streams
  them), a batch at a time: the file is written a row group per batch (Arrow types from the column definitions:
  wgmagic.sql.mysqlstream), the chunks are read as the iterator is consumed. A `--chunks` iterator keeps the
  session busy until it is exhausted or closed; the next statement on the session closes it first (KILL QUERY,
  and the rest read and dropped).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from wgmagic.connstr import MYSQL_DIALECTS, PYMYSQL_DRIVERS, Dsn, mask_secrets
from wgmagic.sql.dialect import CONNECT_TIMEOUT, Dialect, LexerRules, PasswordPrompt, SqlConnection, TunnelProvider
from wgmagic.sql.messages import ConnectionStageError, QueryCancelledError, SqlError, classify_connection_failure
from wgmagic.sql.mysql_types import driver_params, frame_from_rows, json_columns
from wgmagic.sql.parameters import Statement
from wgmagic.sql.passwords import my_cnf_password
from wgmagic.sql.results import Progress, Result, is_row_query

if TYPE_CHECKING:
    import socket

    from pymysql.connections import Connection as PyMySqlConnection

    from wgmagic.runtime.tunnel import Tunnel
    from wgmagic.sql.outputs import OutputSpec

T = TypeVar("T")

KILL_TIMEOUT = 10.0  # seconds for the KILL QUERY connection, and again for the server's answer after it
# Errors after which the connection is gone (client: lost / gone away; server: killed, idle timeout).
_STALE_CODES = {2006, 2013, 2055, 1927, 4031}
_AUTH_CODES = {1044, 1045, 1698, 1251, 2059, 1275}
SERVER_STATUS_NO_BACKSLASH_ESCAPES = 512


class MySqlDialect(Dialect):
    """MySQL and MariaDB through PyMySQL: mysql:// and mariadb:// URLs without a driver or with +pymysql
    (other drivers, such as +mysqldb, go through SQLAlchemy's generic dialect)."""

    name = "MySQL/MariaDB"

    def accepts(self, dsn: Dsn) -> bool:
        return dsn.dialect in MYSQL_DIALECTS and dsn.driver in PYMYSQL_DRIVERS

    def require_driver(self) -> None:
        from wgmagic.errors import import_optional

        import_optional("pymysql", "mysql", "%%wgsql with a MySQL or MariaDB URL")

    def connection(self, dsn: Dsn, alias: str, tunnel: TunnelProvider | None, *,
                   prompt: PasswordPrompt | None = None, autocommit: bool = True) -> SqlConnection:
        self.require_driver()
        return MySqlConnection(self, dsn, alias, tunnel, prompt, autocommit=autocommit)


DIALECT = MySqlDialect()


class MySqlConnection(SqlConnection):
    """A %%wgsql session to MySQL or MariaDB: `raw` is a PyMySQL connection (mysql_wire.TypedConnection)."""

    def __init__(self, dialect: Dialect, dsn: Dsn, alias: str, tunnel: TunnelProvider | None,
                 prompt: PasswordPrompt | None = None, *, autocommit: bool = True) -> None:
        super().__init__(dialect, dsn, alias, tunnel, prompt, autocommit=autocommit)
        self.connection_id: int | None = None  # the server's id for this session (KILL QUERY's argument)
        self._worker: threading.Thread | None = None
        self.server_version = ""
        self._tunnel_socket: socket.socket | None = None  # the session's socket through the tunnel (before TLS)

    # ---- lifecycle ----------------------------------------------------------------------------------------
    @property
    def backslash_escapes(self) -> bool:
        """Whether '...' literals take backslash escapes (unless sql_mode has NO_BACKSLASH_ESCAPES)."""
        raw = self.raw
        return raw is None or not (getattr(raw, "server_status", 0) & SERVER_STATUS_NO_BACKSLASH_ESCAPES)

    def lexer_rules(self) -> LexerRules:
        return LexerRules(standard_conforming_strings=not self.backslash_escapes, mysql=True)

    def is_usable(self) -> bool:
        busy = self._worker is not None and self._worker.is_alive()  # never two threads on one session
        return self.raw is not None and bool(self.raw.open) and not busy

    def describe(self) -> dict[str, object]:
        described = super().describe()
        described["via"] = f"tunnel {self.tunnel_name!r} (a socket per connection)" if self._tunnel else "direct"
        return described

    def _open(self, tunnel: Tunnel | None) -> None:
        host, port = self.dsn.host or "localhost", self.dsn.port or 3306
        if tunnel is not None:
            self.tunnel_name = tunnel.name
            self._forward_tunnel = tunnel
        cpu = time.thread_time()  # PyMySQL runs its whole protocol in this thread (the timeline's auth_cpu_ms)
        try:
            self.raw = self._connect(tunnel, host, port)
            self._connect_cpu = time.thread_time() - cpu
        except ConnectionStageError:
            self._drop()
            raise
        except Exception as exc:
            self._drop()
            raise _classify(exc, host, port) from None
        self.connection_id = self.raw.thread_id()
        self.server_version = self.raw.get_server_info() or ""

    def _socket(self, tunnel: Tunnel | None, host: str, port: int) -> socket.socket | None:
        if tunnel is None:
            return None  # PyMySQL connects by itself (host, port or unix_socket from the URL)
        from wgmagic.errors import NoRouteError

        try:
            # the session's own socket: its lookup timed alone (the timeline's dns_ms), resolved once
            addresses = self.look_up(tunnel, host) if self.raw is None else None
            sock = tunnel.open_connection(host, port, timeout=CONNECT_TIMEOUT, addresses=addresses)
        except NoRouteError as exc:
            raise ConnectionStageError("TCP connect", str(exc), "the peer's AllowedIPs and the [Interface] "
                                       "Address families of the WireGuard config") from None
        except Exception as exc:
            raise classify_connection_failure(exc, host=host, port=port) from None
        if self.raw is None:  # the session's own socket (KILL QUERY's connection comes while the session is open)
            self._tunnel_socket = sock
        return sock

    def _connect(self, tunnel: Tunnel | None, host: str, port: int, *, timeout: float = CONNECT_TIMEOUT,
                 may_prompt: bool = True) -> PyMySqlConnection:
        import pymysql

        kwargs = self._driver_kwargs(host, port)
        kwargs["connect_timeout"] = timeout
        try:
            return _open_pymysql(kwargs, self._socket(tunnel, host, port))
        except pymysql.err.OperationalError as exc:
            asked = "password" in kwargs or self._prompt is None or not may_prompt
            if asked or _code(exc) != 1045 or "using password: NO" not in str(exc.args[-1]):
                raise
        kwargs["password"] = self._prompt(f"Password for {self.dsn.user or 'the database user'}@{host}: ")
        connection = _open_pymysql(kwargs, self._socket(tunnel, host, port))
        self.dsn = self.dsn.with_password(kwargs["password"])  # asked once per connection, as mysql -p does
        return connection

    def _driver_kwargs(self, host: str, port: int) -> dict[str, Any]:
        options = self.dsn.options
        kwargs: dict[str, Any] = {
            "host": host, "port": port, "user": self.dsn.user, "database": self.dsn.database,
            "charset": options.get("charset", "utf8mb4"), "autocommit": True, "program_name": "wgmagic",
            "defer_connect": True,
        }
        password = self.dsn.password
        if password is None:
            password = os.environ.get("MYSQL_PWD") or my_cnf_password()
        if password is not None:
            kwargs["password"] = password
        if "unix_socket" in options:
            kwargs["unix_socket"] = options["unix_socket"]
        for key in ("ssl_ca", "ssl_cert", "ssl_key"):
            if key in options:
                kwargs[key] = options[key]
        for key in ("ssl_verify_cert", "ssl_verify_identity", "ssl_disabled"):
            if key in options:
                kwargs[key] = options[key].lower() in ("1", "true", "yes", "on")
        return kwargs

    def _relay(self) -> Any:
        """The relay under the session's socket through the tunnel (its bytes and exchanges), or None."""
        from wgmagic.runtime.connections import relay_of

        return relay_of(self._tunnel_socket) if self._tunnel_socket is not None and self.raw is not None else None

    def _drop(self) -> None:
        self._close_pending("its connection was closed")
        raw, self.raw = self.raw, None
        if raw is not None:
            with contextlib.suppress(Exception):
                raw._force_close()  # no COM_QUIT round trip: the link may be the reason we drop it
        self._forward_tunnel = None
        self.connection_id = None

    # ---- running a cell -----------------------------------------------------------------------------------
    def run(self, statements: list[Statement], *, progress: Progress | None = None) -> list[Result]:
        self._close_pending(f"another statement ran on connection {self.alias!r}")
        self.ensure()
        return [self._run_one(statement, progress, retry=index == 0) for index, statement in enumerate(statements)]

    def _run_one(self, statement: Statement, progress: Progress | None, *, retry: bool) -> Result:
        import pymysql

        from wgmagic.sql.outputs import current

        raw = self.raw
        clock = self.clock(statement.text)  # the query timeline shows what the user wrote
        try:
            spec = current()
            if spec.streams:
                result = self._run_streamed(raw, statement, spec)
                clock.stop(None if result.rowcount < 0 else result.rowcount)
                return result
            rows, fields, rowcount, json_columns = self._in_worker(raw, statement)
        except pymysql.err.Error as exc:
            if not raw.open or _code(exc) in _STALE_CODES:
                # The server or the path went away. A read-only first statement of a cell is retried once on a
                # fresh connection; anything else is not re-run (it may have taken effect), as with Postgres.
                self.ensure()
                if retry and is_row_query(statement.sql):
                    return self._run_one(statement, progress, retry=False)
                raise SqlError(f"The connection to the server was lost ({format_mysql_error(exc)}); wgmagic "
                               "reconnected. The statement was not run again: check whether it took effect, "
                               "then re-run the cell.") from None
            raise SqlError(format_mysql_error(exc), sqlstate=getattr(exc, "sqlstate", None)) from None
        if fields is None:
            clock.stop(rowcount)
            return Result(None, rowcount, "")
        frame = frame_from_rows(rows, fields, json_columns)
        clock.stop(len(frame))
        return Result(frame, len(frame), "")

    def _run_streamed(self, raw: PyMySqlConnection, statement: Statement, spec: OutputSpec) -> Result:
        """`--to FILE` (a row group per batch, on the worker) or `--chunks N` (batches read as consumed)."""
        import pymysql

        from wgmagic.sql import mysqlstream, outputs

        cursor = raw.cursor(pymysql.cursors.SSCursor)
        params = driver_params(statement.params)
        self._call(lambda: cursor.execute(statement.sql, params) if params is not None else
                   cursor.execute(statement.sql))
        result = cursor._result
        fields = list(getattr(result, "fields", None) or []) if cursor.description is not None else []
        if not fields:
            rowcount = cursor.rowcount
            cursor.close()
            return Result(None, rowcount, "")
        if spec.chunks is not None:
            chunks = json_columns(fields)
            stream = outputs.row_chunks(self._batches(cursor, mysqlstream.ROW_BATCH), spec.chunks,
                                        lambda rows: frame_from_rows(rows, fields, chunks), spec.form,
                                        on_close=self._released)
            self._pending = stream
            stream.fill()
            return Result(stream, -1, "")
        columns = mysqlstream.arrow_columns(fields)
        sink = outputs.ParquetSink(spec.to or "", [], [], schema=mysqlstream.arrow_schema(fields, columns))

        def write_all() -> int:
            rows = 0
            while batch := mysqlstream.fetch(cursor, mysqlstream.ROW_BATCH):
                sink.add_arrays(mysqlstream.rows_to_arrays(batch, columns), len(batch))
                rows += len(batch)
            return rows

        try:
            rows = self._call(write_all)
        except BaseException:
            sink.abort()
            if mysqlstream.active(cursor):
                self._abandon(cursor)
            raise
        cursor.close()
        return Result(sink.finish(rows), rows, "")

    def _batches(self, cursor: Any, size: int) -> Iterator[tuple[list[Any], int]]:
        """An unbuffered cursor's rows, `size` at a time, each fetch on the worker (Ctrl-C: KILL QUERY). Closed
        early, the query is killed on the server and the rest read, so the session is idle again."""
        from wgmagic.sql import mysqlstream

        settled = False
        try:
            while True:
                rows = self._call(lambda: mysqlstream.fetch(cursor, size))
                if not rows:
                    settled = True
                    break
                yield rows, len(rows)
        except GeneratorExit:  # closed while rows were left: the finally kills the query
            raise
        except BaseException:
            settled = True  # the worker's error or the interrupt's outcome: the result has ended or been dropped
            raise
        finally:
            if not settled:
                self._abandon(cursor)
            with contextlib.suppress(Exception):
                if self.raw is not None and self.raw.open:
                    cursor.close()

    def _abandon(self, cursor: Any) -> None:
        """KILL QUERY for an unbuffered result left unread, then read it to its end; the session is dropped
        (the next cell opens a new one) when either fails."""
        from wgmagic.sql import mysqlstream

        if self.raw is None or not self.raw.open or not mysqlstream.active(cursor):
            return
        try:
            self._kill_query()
            self._call(lambda: mysqlstream.read_to_end(cursor))
        except BaseException:
            self._drop()

    def _call(self, function: Callable[[], T]) -> T:
        """`function()` on a worker thread while this one waits; on KeyboardInterrupt, KILL QUERY on the server
        (QueryCancelledError). What the function raises is raised here."""
        outcome: dict[str, Any] = {}
        done = threading.Event()

        def work() -> None:
            try:
                outcome["value"] = function()
            except BaseException as exc:  # handed to the cell's thread
                outcome["error"] = exc
            finally:
                done.set()

        worker = threading.Thread(target=work, name=f"wgmagic-mysql-{self.alias}", daemon=True)
        self._worker = worker
        worker.start()
        try:
            while not done.wait(0.25):
                pass
        except KeyboardInterrupt:
            try:
                self._interrupt(done)
            except QueryCancelledError:
                raise
            except BaseException:  # a second Ctrl-C while cancelling: give the session up rather than share it
                self._drop()
                raise
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]  # type: ignore[no-any-return]

    def _in_worker(self, raw: PyMySqlConnection, statement: Statement) -> tuple[Any, Any, int, set[int]]:
        """Run the statement on a worker thread; on KeyboardInterrupt, KILL QUERY it on the server."""
        params = driver_params(statement.params)
        return self._call(lambda: _execute(raw, statement.sql, params))

    def _interrupt(self, done: threading.Event) -> None:
        """KILL QUERY on a second connection, then wait for the server's answer on this one; if either fails,
        close this connection (the server ends a query whose client went away) and let the next cell reopen."""
        if done.is_set():  # the statement had finished: nothing to cancel
            raise QueryCancelledError("Interrupted after the statement had finished (its result is dropped). The "
                                      "connection is still usable.", sqlstate="70100") from None
        try:
            self._kill_query()
            killed = True
        except Exception:
            killed = False
        if killed and done.wait(KILL_TIMEOUT) and self.raw is not None and self.raw.open:
            raise QueryCancelledError("Query cancelled: KILL QUERY went to the server through the tunnel and the "
                                      "server stopped the query. The connection is still usable.",
                                      sqlstate="70100") from None
        self._drop()
        raise QueryCancelledError("Query interrupted; the server did not confirm the cancel, so the connection was "
                                  "closed (the server stops a query whose client left) and the next cell opens a "
                                  "new one.", sqlstate="70100") from None

    def _kill_query(self) -> None:
        tunnel = self._forward_tunnel
        host, port = self.dsn.host or "localhost", self.dsn.port or 3306
        killer = self._connect(tunnel, host, port, timeout=KILL_TIMEOUT, may_prompt=False)
        try:
            killer._sock.settimeout(KILL_TIMEOUT)
            with killer.cursor() as cursor:
                cursor.execute(f"KILL QUERY {int(self.connection_id or 0)}")
        finally:
            with contextlib.suppress(Exception):
                killer.close()


def _open_pymysql(kwargs: dict[str, Any], sock: socket.socket | None) -> PyMySqlConnection:
    from wgmagic.sql.mysql_wire import TypedConnection

    connection = TypedConnection(**kwargs)
    connection.connect(sock=sock) if sock is not None else connection.connect()
    return connection


def _execute(raw: PyMySqlConnection, sql: str, params: dict[str, Any] | None) -> tuple[Any, Any, int, set[int]]:
    """One statement: (rows, column definitions or None, affected rows, indexes of JSON columns)."""
    with raw.cursor() as cursor:
        cursor.execute(sql, params) if params is not None else cursor.execute(sql)
        result = cursor._result
        fields = list(getattr(result, "fields", None) or []) or None if cursor.description is not None else None
        if fields is None:
            return None, None, cursor.rowcount, set()
        rows = cursor.fetchall()
    return rows, fields, len(rows), json_columns(fields)


def format_mysql_error(exc: BaseException) -> str:
    """The mysql client's layout: `ERROR 1146 (42S02): Table 'app.nope' doesn't exist`."""
    args = getattr(exc, "args", ())
    if len(args) >= 2 and isinstance(args[0], int):
        state = getattr(exc, "sqlstate", None) or ("HY000" if args[0] >= 2000 else None)
        return mask_secrets(f"ERROR {args[0]}" + (f" ({state})" if state else "") + f": {args[1]}")
    return mask_secrets(str(exc).strip() or type(exc).__name__)


def _code(exc: BaseException) -> int | None:
    args = getattr(exc, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def _classify(exc: BaseException, host: str, port: int) -> ConnectionStageError:
    code = _code(exc)
    text = format_mysql_error(exc) if code is not None else mask_secrets(str(exc))
    if code in _AUTH_CODES:
        return ConnectionStageError("authentication", text, "the user name and password (the URL, MYSQL_PWD or "
                                    "the [client] password of ~/.my.cnf) and the account's allowed hosts "
                                    "(CREATE USER 'name'@'host')")
    lower = text.lower()
    if "ssl" in lower or "certificate" in lower or "tls" in lower:
        return ConnectionStageError("TLS", text, "ssl_ca (the CA that signed the server's certificate), "
                                    "ssl_verify_identity and that the certificate names the host you connect to")
    if code is not None and code < 2000:
        return ConnectionStageError("server", text, f"the database name and the server's error log on "
                                    f"{host}:{port}")
    return classify_connection_failure(exc, host=host, port=port)
