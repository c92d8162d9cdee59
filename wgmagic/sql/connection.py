"""A database connection that goes through a tunnel: forward, password, reconnect, cancel.

PostgreSQL DSNs use psycopg directly (COPY is the bulk path; Ctrl-C sends a server-side cancel through the
same forward). MySQL and MariaDB have their own subclass (wgmagic.sql.mysql). Any other SQLAlchemy URL gets a
TCP forward on loopback and the URL rewritten to it. A connection found closed or broken before a cell is
replaced without the user asking: a tunnel that flapped or a server that restarted costs one reconnect, not a
failed cell.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from wgmagic import explain
from wgmagic.errors import NoRouteError, TunnelError
from wgmagic.sql.connstr import Dsn, mask_secrets
from wgmagic.sql.messages import (
    ConnectionStageError,
    QueryCancelledError,
    SqlError,
    classify_connection_failure,
    format_server_error,
)
from wgmagic.sql.parameters import Statement
from wgmagic.sql.results import Progress, Result, is_row_query, run_statement

CONNECT_TIMEOUT = 15  # seconds, libpq's connect_timeout unless the DSN sets one
_TLS_MODES = {"require", "verify-ca", "verify-full"}
_PSYCOPG_DRIVERS = {None, "psycopg", "psycopg2", "psycopg2cffi", "psycopg_async"}
PasswordPrompt = Callable[[str], str]
logger = logging.getLogger(__name__)


class SqlConnection:
    """One named connection (an alias) to one database, through one tunnel (or none).

    %%wgsql opens MySQL/MariaDB URLs with wgmagic.sql.mysql.MySqlConnection, a subclass (see connection_class)."""

    def __init__(self, dsn: Dsn, alias: str, tunnel: Callable[[], Any] | None,
                 prompt: PasswordPrompt | None = None, *, autocommit: bool = True) -> None:
        self.dsn = dsn
        self.autocommit = autocommit  # False: statements run in a transaction the user ends (COMMIT/ROLLBACK)
        self.alias = alias
        self._tunnel = tunnel  # a callable: the tunnel may be replaced (%wg disconnect / connect) between cells
        self._prompt = prompt
        self._forward: Any = None
        self._forward_tunnel: Any = None
        self.raw: Any = None  # psycopg.Connection or sqlalchemy Connection
        self._engine: Any = None
        self.reconnects = 0
        self.opened = False  # opened at least once: a later open is a reconnect
        self.tunnel_name: str | None = None

    # ---- description (never the password) ------------------------------------------------------------
    def __repr__(self) -> str:
        return f"<SqlConnection {self.alias}: {self.dsn.masked()}>"

    @property
    def uses_psycopg(self) -> bool:
        return self.dsn.is_postgres and self.dsn.driver in _PSYCOPG_DRIVERS

    @property
    def forward_address(self) -> str | None:
        return str(self._forward.local_address) if self._forward is not None else None

    def describe(self) -> dict[str, object]:
        return {"alias": self.alias, "dsn": self.dsn.masked(), "tunnel": self.tunnel_name or "(none)",
                "via": self.forward_address or "direct", "open": self.is_usable(),
                "reconnects": self.reconnects}

    # ---- lifecycle -----------------------------------------------------------------------------------
    def is_usable(self) -> bool:
        raw = self.raw
        if raw is None:
            return False
        if self.uses_psycopg:
            return not raw.closed and not raw.broken
        return not raw.closed and not getattr(raw, "invalidated", False)

    def ensure(self) -> None:
        """Open the connection, or open it again if the previous one is closed or broken."""
        tunnel = self._tunnel() if self._tunnel is not None else None
        if self.is_usable() and (tunnel is None or tunnel is self._forward_tunnel):
            return
        if self.opened:
            self.reconnects += 1
            logger.info("connection %r: %s, opening a new one", self.alias,
                        "the tunnel was replaced" if self.is_usable() else "closed or broken")
        self._drop()
        self._open(tunnel)
        self.opened = True
        logger.debug("connection %r open: %s via %s", self.alias, self.dsn.masked(),
                     self.forward_address or "a direct connection")

    def _open(self, tunnel: Any) -> None:
        host, port = self.dsn.host, self.dsn.port or 5432
        forward_params: dict[str, str] | None = None
        if tunnel is not None and host and not host.startswith("/"):
            self.tunnel_name = tunnel.name
            try:
                # The DNS stage on its own, so its failure is named as such; then which of the addresses the
                # tunnel can route (none: "no route", at the TCP connect stage, not the server's fault).
                tunnel.resolve_addresses(host)
            except NoRouteError as exc:
                raise ConnectionStageError("TCP connect", str(exc), "the peer's AllowedIPs and the [Interface] "
                                           "Address families of the WireGuard config") from None
            except Exception as exc:
                raise classify_connection_failure(exc, host=host, port=port) from None
            tls = self.dsn.options.get("sslmode") in _TLS_MODES or not self.uses_psycopg
            try:
                self._forward = tunnel.forward(f"{_bracket(host)}:{port}", local=0 if tls else None,
                                               clients="process")  # only this process's driver may use it
            except (TunnelError, ValueError) as exc:
                raise classify_connection_failure(exc, host=host, port=port) from None
            except OSError as exc:
                raise ConnectionStageError("local forward", mask_secrets(str(exc)), "the local listener wgmagic "
                                           "opens for the driver (TMPDIR, $XDG_RUNTIME_DIR, /tmp, free "
                                           "loopback ports)") from None
            self._forward_tunnel = tunnel
            forward_params = self._forward.libpq_params()
        try:
            if self.uses_psycopg:
                self.raw = self._connect_psycopg(forward_params)
            else:
                self.raw = self._connect_sqlalchemy(forward_params)
        except ConnectionStageError:
            self._drop()
            raise
        except Exception as exc:
            self._drop()
            failure = classify_connection_failure(exc, host=host or "localhost", port=port)
            if failure.stage == "server" and tunnel is not None and host:
                failure = _probe_tcp(tunnel, host, port) or failure
            raise failure from None

    def _connect_psycopg(self, forward_params: dict[str, str] | None) -> Any:
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

    def _connect_sqlalchemy(self, forward_params: dict[str, str] | None) -> Any:
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
        forward, self._forward = self._forward, None
        if forward is not None and self._forward_tunnel is not None and not self._forward_tunnel.closed:
            with contextlib.suppress(Exception):
                self._forward_tunnel.close_forward(forward)
        self._forward_tunnel = None

    def close(self) -> None:
        self._drop()

    def set_autocommit(self, on: bool) -> None:
        """Autocommit for the next statements (psycopg; other drivers from their next connection). An open
        transaction is left as it is: the change applies once it has ended, as psql's AUTOCOMMIT does."""
        self.autocommit = on
        raw = self.raw
        if raw is None or not self.uses_psycopg or raw.closed or raw.autocommit == on:
            return
        import psycopg

        if raw.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            raw.autocommit = on

    # ---- running a cell ------------------------------------------------------------------------------
    def run(self, statements: list[Statement], *, progress: Progress | None = None) -> list[Result]:
        """Run the statements in order; stop at the first error (raised as SqlError, with psql's layout)."""
        self.ensure()
        return [self._run_one(statement, progress, retry=index == 0) for index, statement in enumerate(statements)]

    def _run_one(self, statement: Statement, progress: Progress | None, *, retry: bool) -> Result:
        if not self.uses_psycopg:
            return self._run_sqlalchemy(statement)
        import psycopg

        idle_before = self.raw.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        try:
            return run_statement(self.raw, statement.sql, statement.params, progress=progress)
        except KeyboardInterrupt:
            if self._after_interrupt():
                raise QueryCancelledError("Query cancelled: a cancel request went to the server through the "
                                          "tunnel and the query has stopped. The connection is still usable.",
                                          sqlstate="57014") from None
            raise QueryCancelledError(_cancel_unconfirmed_message(self._peer_not_answering())) from None
        except psycopg.errors.QueryCanceled as exc:
            raise QueryCancelledError(format_server_error(exc, statement.sql if not statement.params else None),
                                      sqlstate="57014") from None
        except psycopg.Error as exc:
            if self.raw.broken or self.raw.closed:
                reason = self._peer_not_answering()
                if reason is not None:  # reconnecting now would only wait out a connect timeout
                    self._drop()
                    raise SqlError(_peer_lost_message(reason)) from None
                # The server or the path went away. A read-only first statement of a cell is retried once on
                # a fresh connection; anything else is not re-run (it may have taken effect), as psql does.
                stale = retry and idle_before and is_row_query(statement.sql)
                self.ensure()
                if stale:
                    return self._run_one(statement, progress, retry=False)
                raise SqlError(f"The connection to the server was lost ({_first_line(exc)}); wgmagic reconnected. "
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

    def _peer_not_answering(self) -> str | None:
        """Why the tunnel under this connection's forward is dead (its WireGuard peer is not answering), or
        None while it answers or when there is no tunnel. Never raises."""
        tunnel = self._forward_tunnel
        if tunnel is None or getattr(tunnel, "closed", True):
            return None
        try:
            reasons = [row.get("not_answering") for row in tunnel.peer_report()]
        except Exception:
            return None
        return next((str(r) for r in reasons if r), None)

    def _run_sqlalchemy(self, statement: Statement) -> Result:
        import pandas as pd
        import sqlalchemy

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
            raise SqlError(_first_line(exc.orig or exc)) from None
        if not cursor.returns_rows:
            return Result(None, cursor.rowcount, "")
        frame = pd.DataFrame(cursor.fetchall(), columns=list(cursor.keys()))
        return Result(frame, len(frame), "")


def _peer_lost_message(reason: str) -> str:
    """A statement failed because the tunnel's peer stopped answering (the words: wgmagic.explain)."""
    return explain.connection_lost(reason)


def _cancel_unconfirmed_message(reason: str | None) -> str:
    """After Ctrl-C, when the server-side cancel could not be confirmed (the words: wgmagic.explain)."""
    return explain.cancel_unconfirmed(reason)


def drain_after_interrupt(raw: Any, timeout: float = 5.0) -> bool:
    """After Ctrl-C, a psycopg connection may still be mid-query (a COPY's data not yet read): send the
    server-side cancel and read what is left, until the connection is idle. True when it is usable again."""
    import psycopg
    from psycopg import generators, pq

    active = psycopg.pq.TransactionStatus.ACTIVE
    if raw.info.transaction_status != active:
        return True
    deadline = time.monotonic() + timeout
    try:
        raw.cancel_safe(timeout=timeout)
        while raw.info.transaction_status == active and time.monotonic() < deadline:
            left = max(0.1, deadline - time.monotonic())
            try:
                results = raw.wait(generators.fetch_many(raw.pgconn), timeout=left)
                if results and results[-1].status == pq.ExecStatus.COPY_OUT:
                    while not isinstance(raw.wait(generators.copy_from(raw.pgconn), timeout=left), pq.PGresult):
                        pass  # rows still in flight: read and drop them
                elif not results:
                    break
            except psycopg.errors.QueryCanceled:
                continue  # the cancel's own answer: read on to the end of the query
    except (psycopg.Error, OSError):
        return False
    return raw.info.transaction_status != active and not raw.broken


def _probe_tcp(tunnel: Any, host: str, port: int) -> ConnectionStageError | None:
    """The driver only saw the forward hang up: a direct connect through the tunnel tells why."""
    try:
        tunnel.open_connection(host, port, timeout=5).close()
    except Exception as exc:
        return classify_connection_failure(exc, host=host, port=port)
    return None


def pgpass_lookup(dsn: Dsn) -> str | None:
    """The password ~/.pgpass (or PGPASSFILE) holds for the DSN's real host, as libpq would match it."""
    path = Path(os.environ.get("PGPASSFILE") or Path.home() / ".pgpass")
    try:
        if path.stat().st_mode & 0o077:
            return None  # libpq ignores a file others can read
        lines = path.read_text().splitlines()
    except OSError:
        return None
    wanted = [dsn.host or "localhost", str(dsn.port or 5432), dsn.database or dsn.user or "", dsn.user or ""]
    for line in lines:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = _pgpass_fields(line)
        if len(fields) < 5:
            continue
        if all(field in ("*", value) for field, value in zip(fields[:4], wanted, strict=True)):
            return fields[4]
    return None


KEYRING_SERVICE = "wgmagic"


def keyring_key(dsn: Dsn) -> str:
    """The user name under which the keyring holds this DSN's password: `user@host:port/dbname` (the real
    host, as ~/.pgpass matches it); set it with `keyring set wgmagic app@db.internal:5432/app`."""
    return f"{dsn.user or ''}@{dsn.host or 'localhost'}:{dsn.port or 5432}/{dsn.database or dsn.user or ''}"


def keyring_lookup(dsn: Dsn) -> str | None:
    """The password the system keyring holds for the DSN (service "wgmagic", see keyring_key), if the optional
    `keyring` package is installed and has a usable backend; None otherwise, never an error."""
    try:
        import keyring
    except ImportError:
        return None
    try:
        password = keyring.get_password(KEYRING_SERVICE, keyring_key(dsn))
    except Exception:  # no backend (keyring.errors.NoKeyringError), a locked or absent D-Bus service, ...
        return None
    return password if isinstance(password, str) else None


def _pgpass_fields(line: str) -> list[str]:
    fields, current, escaped = [], [], False
    for char in line:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":" and len(fields) < 4:
            fields.append("".join(current))
            current = []
        else:
            current.append(char)
    fields.append("".join(current))
    return fields


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return mask_secrets(text[0]) if text else type(exc).__name__
