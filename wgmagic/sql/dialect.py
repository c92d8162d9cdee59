"""The two interfaces of %%wgsql's SQL layer: a `Dialect` (what one kind of database is) and an `SqlConnection`
(one open session to one database).

Each dialect is one module in `wgmagic/sql/dialects/` that defines `DIALECT`, an instance of its `Dialect`
subclass; `wgmagic.sql.dialects.dialect_for(dsn)` finds the one that accepts a connection string. Everything a
dialect knows sits behind these two classes: which URLs are its own and which driver it needs (`Dialect`);
how to open the session through a tunnel, where the password comes from, how a cell is cut into statements
(the lexer's rules, from the live session), how rows become typed DataFrames, how a query is cancelled, when
a broken session is replaced, and how its errors read (`SqlConnection`). The notebook asks these, never a
driver. `wgmagic/sql/dialects/sqlite.py` is the smallest example to copy.
"""

from __future__ import annotations

import contextlib
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from wgmagic.connstr import Dsn, mask_secrets
from wgmagic.errors import NoRouteError, TunnelError
from wgmagic.proto.forwarding import NEUTRAL, ForwardProtocol
from wgmagic.sql.messages import ConnectionStageError, classify_connection_failure
from wgmagic.sql.parameters import Statement, split_statements
from wgmagic.sql.timeline import LeadIn, OpeningStages, StatementClock, opening_stages, relay_rtt

if TYPE_CHECKING:
    from wgmagic.runtime.routes import IPAddress
    from wgmagic.runtime.services.forward import Forward
    from wgmagic.runtime.services.udp_forward import UdpForward
    from wgmagic.runtime.tunnel import Tunnel
    from wgmagic.sql.outputs import ChunkStream
    from wgmagic.sql.results import Progress, Result

CONNECT_TIMEOUT = 15  # seconds a driver may take to connect, unless the DSN says otherwise
PasswordPrompt = Callable[[str], str]
TunnelProvider = Callable[[], "Tunnel"]  # the tunnel may be replaced (%wg disconnect / connect) between cells
logger = logging.getLogger("wgmagic.sql")


@dataclass(frozen=True)
class LexerRules:
    """How a cell is cut into statements and where placeholders may be (wgmagic.sql.parameters).

    standard_conforming_strings: the server setting of that name (off: backslashes escape inside '...');
    mysql: MySQL/MariaDB's additions (`#` comments, `backtick` identifiers, "..." strings)."""

    standard_conforming_strings: bool = True
    mysql: bool = False


class Dialect(ABC):
    """One kind of database as %%wgsql knows it: which connection strings it takes and how to open them.

    A subclass lives in its own module of wgmagic/sql/dialects/ with a module-level `DIALECT = TheDialect()`;
    `fallback = True` marks the one that takes whatever no other accepts (SQLAlchemy's generic dialect);
    `local = True` one whose database is on this machine (a file), reached without a tunnel."""

    name: str = ""  # shown in messages: "PostgreSQL", "MySQL/MariaDB", ...
    fallback: bool = False
    local: bool = False

    @abstractmethod
    def accepts(self, dsn: Dsn) -> bool:
        """Whether this dialect opens `dsn` (its dialect and driver fields; wgmagic.connstr's driver table)."""

    def require_driver(self) -> None:
        """Raise MissingDependencyError (naming the pip extra) when the driver is not installed; else nothing."""
        return None

    @abstractmethod
    def connection(self, dsn: Dsn, alias: str, tunnel: TunnelProvider | None, *,
                   prompt: PasswordPrompt | None = None, autocommit: bool = True) -> SqlConnection:
        """A new, not yet opened, connection for `dsn` under the name `alias` (opened by ensure())."""

    def __repr__(self) -> str:
        return f"<Dialect {self.name}>"


class SqlConnection(ABC):
    """One named connection (an alias) to one database, through one tunnel (or none), as the magic uses it.

    The base class holds what every dialect shares: the description (never the password), ensure() (open, or
    open again when the session is closed or broken, or the tunnel was replaced) and close(). A dialect
    supplies `_open`, `_drop`, `is_usable` and `run`, and overrides `lexer_rules` and `set_autocommit` when
    its server has a say in them."""

    _pending: ChunkStream | None = None  # a --chunks result still reading from this session

    def _close_pending(self, reason: str) -> None:
        """Close the `--chunks` iterator still reading from this session (its query cancelled on the server):
        the session is then idle for what comes next."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.close(reason)

    def _released(self, stream: ChunkStream) -> None:
        """`stream` ended or was closed by its reader: nothing reads from this session any more."""
        if self._pending is stream:
            self._pending = None

    def __init__(self, dialect: Dialect, dsn: Dsn, alias: str, tunnel: TunnelProvider | None,
                 prompt: PasswordPrompt | None = None, *, autocommit: bool = True) -> None:
        self.dialect = dialect
        self.dsn = dsn
        self.alias = alias
        self.autocommit = autocommit  # False: statements run in a transaction the user ends (COMMIT/ROLLBACK)
        self._tunnel = tunnel
        self._prompt = prompt
        self._forward: Forward | UdpForward | None = None  # when the driver connects to a local listener
        self._forward_tunnel: Tunnel | None = None  # the tunnel the open session goes through
        self.raw: Any = None  # the driver's connection object (each dialect says which)
        self.reconnects = 0
        self.opened = False  # opened at least once: a later open is a reconnect
        self._tunnel_name: str | None = None
        self.opening: OpeningStages | None = None  # the last opening's stages, until a statement is charged
        self._resolved: float | None = None  # when the opening's name lookup ended (time.monotonic())
        self._looked_up: float | None = None  # ... began
        self._forwarded: float | None = None  # when the opening's local forward was made
        self._connect_cpu = 0.0  # the connecting thread's CPU seconds in the driver's connect call
        self.lead: LeadIn | None = None  # the cell's time before its first statement, until one is charged

    # ---- description (never the password) ------------------------------------------------------------
    @property
    def tunnel_name(self) -> str | None:
        """The name of the tunnel this connection goes through; always None for a local dialect's."""
        return self._tunnel_name

    @tunnel_name.setter
    def tunnel_name(self, name: str | None) -> None:
        self._tunnel_name = None if self.dialect.local else name

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.alias}: {self.dsn.masked()}>"

    @property
    def forward_address(self) -> str | None:
        return str(self._forward.local_address) if self._forward is not None else None

    def describe(self) -> dict[str, object]:
        """The row `%wg connections` shows: alias, masked DSN, tunnel, via, open, reconnects."""
        return {"alias": self.alias, "dsn": self.dsn.masked(), "tunnel": self.tunnel_name or "(none)",
                "via": self.forward_address or "direct", "open": self.is_usable(), "reconnects": self.reconnects}

    # ---- lifecycle -----------------------------------------------------------------------------------
    @abstractmethod
    def is_usable(self) -> bool:
        """Whether the session is open and may run a statement now."""

    @abstractmethod
    def _open(self, tunnel: Tunnel | None) -> None:
        """Open the session (self.raw) through `tunnel`; raise ConnectionStageError naming the failed stage."""

    @abstractmethod
    def _drop(self) -> None:
        """Close the session and whatever it holds (forward, engine) without raising; self.raw becomes None."""

    def ensure(self) -> None:
        """Open the connection, or open it again if the previous one is closed or broken or its tunnel was
        replaced. Raises ConnectionStageError (or MissingDependencyError) when it cannot."""
        tunnel = self._tunnel() if self._tunnel is not None and not self.dialect.local else None
        if self.is_usable() and (tunnel is None or tunnel is self._forward_tunnel):
            return
        if self.opened:
            self.reconnects += 1
            logger.info("connection %r: %s, opening a new one", self.alias,
                        "the tunnel was replaced" if self.is_usable() else "closed or broken")
        self._drop()
        started, self._resolved = time.monotonic(), None
        self._looked_up = self._forwarded = None
        self._connect_cpu = 0.0
        self._open(tunnel)
        relay = self._relay()
        self.opening = opening_stages(started, self._resolved, relay.exchanges if relay else None,
                                      time.monotonic(), tls=self.tls_in_use(), looked_up=self._looked_up,
                                      forwarded=self._forwarded, cpu=self._connect_cpu,
                                      rtt=relay_rtt(relay) if relay else None)
        self.opened = True
        logger.debug("connection %r open: %s via %s", self.alias, self.dsn.masked(),
                     self.forward_address or "a direct connection")

    def close(self) -> None:
        self._drop()

    def set_autocommit(self, on: bool) -> None:
        """Autocommit for the next statements; by default from the next connection on."""
        self.autocommit = on

    def tls_in_use(self) -> bool:
        """Whether the open session speaks TLS (its opening then has a TLS stage)."""
        return False

    def _relay(self) -> Any:
        """The forward's relay carrying this session (its bytes and exchanges), or None without a forward."""
        try:
            relays = [r for r in list(getattr(self._forward, "relays", ())) if not r.done]
        except RuntimeError:  # the loop thread changed the set while it was copied
            return None
        return min(relays, key=lambda relay: relay.exchanges.opened) if relays else None

    def clock(self, sql: str) -> StatementClock:
        """A started clock for one statement (wgmagic.sql.timeline): stop(rows) records its timeline. The
        session's opening, if no statement has been charged with it yet, goes to this one."""
        opening, self.opening = self.opening, None
        lead, self.lead = self.lead, None
        return StatementClock(sql, self.alias, self._relay(), opening, lead).start()

    # ---- running a cell ------------------------------------------------------------------------------
    def lexer_rules(self) -> LexerRules:
        """The rules the cell is cut by, as the session last reported them (standard SQL by default)."""
        return LexerRules()

    def statements(self, cell: str, namespace: Mapping[str, object] | None) -> list[Statement]:
        """The cell's statements, cut by this session's lexer rules, with `:name`/`{name}` bound from
        `namespace` (None: no binding). Raises UnknownParameterError for a name the namespace lacks."""
        rules = self.lexer_rules()
        return split_statements(cell, namespace, standard_conforming_strings=rules.standard_conforming_strings,
                                mysql=rules.mysql)

    @abstractmethod
    def run(self, statements: list[Statement], *, progress: Progress | None = None) -> list[Result]:
        """Run the statements in order (ensure() first); stop at the first error, raised as SqlError (with
        the server's words, laid out as its own client prints them) or QueryCancelledError after Ctrl-C."""

    # ---- shared by the dialects that reach their server through a forward --------------------------------
    def forward_protocol(self) -> ForwardProtocol:
        """What a forward for this session's driver must know of its protocol (wgmagic.proto.forwarding): the
        neutral one by default; PostgreSQL's dialects answer wgmagic.proto.postgres.POSTGRES (libpq's socket
        name, an ErrorResponse the driver shows)."""
        return NEUTRAL

    def _connect_naming_the_stage(self, connect: Callable[[], Any], tunnel: Tunnel | None, host: str | None,
                                  port: int) -> None:
        """`self.raw = connect()` for a driver that dials a forward to host:port; any failure becomes the
        ConnectionStageError of the stage it happened in (a direct connect through the tunnel tells a forward
        that merely hung up from the server refusing), after the session is dropped."""
        cpu = time.thread_time()  # the driver runs its whole protocol in this thread (the timeline's auth_cpu_ms)
        try:
            self.raw = connect()
            self._connect_cpu = time.thread_time() - cpu
        except ConnectionStageError:
            self._drop()
            raise
        except Exception as exc:
            self._drop()
            failure = classify_connection_failure(exc, host=host or "localhost", port=port)
            if failure.stage == "server" and tunnel is not None and host:
                failure = probe_tcp(tunnel, host, port) or failure
            raise failure from None

    def _forward_through(self, tunnel: Tunnel, host: str, port: int, *, tcp: bool) -> dict[str, str]:
        """A forward of `tunnel` to host:port for the driver (loopback TCP when `tcp`, else a Unix socket),
        usable by this process only, speaking `forward_protocol()`; its libpq parameters.
        ConnectionStageError names the failed stage.

        The name is resolved once, by Tunnel.forward (the tunnel's DNS, then which addresses it can route): its
        errors name the stage, DNS for NameNotFoundError/DNSTimeoutError, and "TCP connect" for NoRouteError
        (no address the tunnel can route is not the server's fault)."""
        self.tunnel_name = tunnel.name
        try:
            addresses = self.look_up(tunnel, host)
            self._forward = tunnel.forward(f"{bracket(host)}:{port}", local=0 if tcp else None, clients="process",
                                           protocol=self.forward_protocol(), addresses=addresses)
            self._forwarded = time.monotonic()  # the local listener made (the timeline's client_ms)
        except NoRouteError as exc:
            raise ConnectionStageError("TCP connect", str(exc), "the peer's AllowedIPs and the [Interface] "
                                       "Address families of the WireGuard config") from None
        except (TunnelError, ValueError) as exc:
            raise classify_connection_failure(exc, host=host, port=port) from None
        except OSError as exc:
            raise ConnectionStageError("local forward", mask_secrets(str(exc)), "the local listener wgmagic "
                                       "opens for the driver (TMPDIR, $XDG_RUNTIME_DIR, /tmp, free "
                                       "loopback ports)") from None
        self._forward_tunnel = tunnel
        params: dict[str, str] = self._forward.libpq_params()
        return params

    def look_up(self, tunnel: Tunnel, host: str) -> list[IPAddress]:
        """`host`'s routable addresses through the tunnel, for the forward or socket that uses it (given to it,
        so the name is resolved once), timed alone: the query timeline's dns_ms. Raises what resolve_addresses
        does."""
        self._looked_up = time.monotonic()
        addresses = tunnel.resolve_addresses(host)
        self._resolved = time.monotonic()
        return addresses

    def _close_forward(self) -> None:
        forward, self._forward = self._forward, None
        if forward is not None and self._forward_tunnel is not None and not self._forward_tunnel.closed:
            with contextlib.suppress(Exception):
                self._forward_tunnel.close_forward(forward)
        self._forward_tunnel = None

    def _peer_not_answering(self) -> str | None:
        """Why the tunnel under this session is dead (its WireGuard peer is not answering), or None while it
        answers or when there is no tunnel. Never raises."""
        tunnel = self._forward_tunnel
        if tunnel is None or getattr(tunnel, "closed", True):
            return None
        try:
            reasons = [row.get("not_answering") for row in tunnel.peer_report()]
        except Exception:
            return None
        return next((str(r) for r in reasons if r), None)


def probe_tcp(tunnel: Tunnel, host: str, port: int) -> ConnectionStageError | None:
    """The driver only saw the forward hang up: a direct connect through the tunnel tells why."""
    try:
        tunnel.open_connection(host, port, timeout=5).close()
    except Exception as exc:
        return classify_connection_failure(exc, host=host, port=port)
    return None


def bracket(host: str) -> str:
    """An IPv6 literal in brackets, as host:port needs it; any other host as it is."""
    return f"[{host}]" if ":" in host else host


def first_line(exc: BaseException) -> str:
    """The first line of an exception's text, secrets masked (a driver's error for a one-line message)."""
    text = str(exc).strip().splitlines()
    return mask_secrets(text[0]) if text else type(exc).__name__
