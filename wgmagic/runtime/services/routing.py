"""Connection strings and SQLAlchemy engines routed through a tunnel (Tunnel.url, Tunnel.engine).

`route_url(tunnel, text)` returns an equivalent connection string whose host is a private forward of the
tunnel, so any driver or tool that takes a connection string reaches the private server unchanged:

| input                                              | forward         | what the driver is given              |
| -------------------------------------------------- | --------------- | ------------------------------------- |
| libpq keywords `host=db.internal dbname=app`       | Unix socket     | `host=/DIR port=5432 ...`             |
| `postgresql+psycopg://` (psycopg2, psycopg_async)  | Unix socket     | `...@/app?host=/DIR&port=5432`        |
| `postgresql://` (libpq, ADBC, ConnectorX/polars)   | loopback TCP    | `...@127.0.0.1:PORT/app`              |
| `postgresql+pg8000://`, `+asyncpg`, any other      | loopback TCP    | `...@127.0.0.1:PORT/...`              |
| `mysql+pymysql://`, `mysql+mysqldb://`, any scheme with a host | loopback TCP | `...@127.0.0.1:PORT/...` |

A plain `postgresql://` URL gets TCP because its readers differ: libpq and ADBC (libpq inside) would take a
Unix socket, ConnectorX (polars' default engine, Rust's postgres crate) would not. `local="unix"|"tcp"`
overrides the choice.

TLS keeps the server's real name where the driver has a separate place for it (libpq's rule: `host` is the
name the certificate is checked against, `hostaddr` the address connected to, section 34.1.2 of the
PostgreSQL manual): a libpq form (keywords, `+psycopg`, or a plain URL) whose `sslmode` asks for TLS gets a TCP
forward with `host=<real name>` and `hostaddr=127.0.0.1`, so `sslmode=verify-full` still verifies the real name
(libpq never speaks TLS over a Unix socket). Other drivers check the certificate against the host they connect
to, 127.0.0.1 in a rewritten URL: for those, `Tunnel.engine()` hands the driver a socket through the tunnel and
the real name where it takes one (pg8000: `sock=` with `host=`, used as the TLS server name), or verification
has to name the server explicitly (see README, "Every tool through the tunnel").

The forward speaks the URL's protocol where it must (wgmagic.proto.forwarding): PostgreSQL's for libpq keywords
and postgres URLs (a Unix socket named .s.PGSQL.PORT, an ErrorResponse the driver shows when the target cannot
be reached), the neutral one for MySQL/MariaDB and any other scheme, whatever the port.

Names are resolved through the tunnel's DNS when the forward is made (Tunnel.forward). A forward is made once
per (host, port, kind) and tunnel, reused by later calls, and closed with the tunnel. The returned string holds
the password the user gave (the driver needs it); wgmagic never shows it (Dsn.masked()).
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from wgmagic.connstr import LIBPQ_DRIVERS, TLS_MODES, Dsn, DsnError, conninfo, parse_dsn
from wgmagic.proto.forwarding import NEUTRAL, ForwardProtocol
from wgmagic.proto.postgres import POSTGRES

if TYPE_CHECKING:
    from wgmagic.runtime.tunnel import Tunnel

LOOPBACK = "127.0.0.1"

_lock = threading.Lock()
_routes: weakref.WeakKeyDictionary[Any, dict[tuple[str, int, str, str], Any]] = weakref.WeakKeyDictionary()


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def protocol_for(dsn: Dsn, keywords: bool) -> ForwardProtocol:
    """The forward protocol of a connection string: PostgreSQL's for libpq keywords and postgres URLs of any
    driver, the neutral one for every other scheme."""
    return POSTGRES if keywords or dsn.is_postgres else NEUTRAL


def forward_for(tunnel: Tunnel, host: str, port: int, kind: str, protocol: ForwardProtocol = NEUTRAL) -> Any:
    """The tunnel's forward to host:port of `kind` ("unix" or "tcp") speaking `protocol`, made on first use and
    reused while the tunnel keeps it (Tunnel.close closes it; close_forward drops it and the next call makes a
    new one)."""
    key = (host.lower(), port, kind, protocol.name)
    with _lock:
        forwards = _routes.setdefault(tunnel, {})
        forward = forwards.get(key)
        if forward is not None and forward in tunnel.forwards and not forward.closed:
            return forward
        forward = tunnel.forward(f"{_bracket(host)}:{port}", local=0 if kind == "tcp" else None, protocol=protocol)
        forwards[key] = forward
        return forward


def _kind_for(dsn: Dsn, keywords: bool, local: str) -> str:
    if local not in ("auto", "unix", "tcp"):
        raise ValueError(f"local must be 'auto', 'unix' or 'tcp', not {local!r}")
    libpq = keywords or (dsn.is_postgres and dsn.driver in LIBPQ_DRIVERS)
    if local == "unix":
        if not (libpq or (dsn.is_postgres and dsn.driver is None)):
            raise ValueError(f"{dsn.dialect}+{dsn.driver}: this form cannot name a Unix socket; use local='tcp'")
        return "unix"
    if local == "tcp":
        return "tcp"
    if libpq and dsn.options.get("sslmode") not in TLS_MODES:
        return "unix"
    return "tcp"


def route_url(tunnel: Tunnel, text: str, *, local: str = "auto") -> str:
    """`text` (a URL or libpq keywords) rewritten to reach its host through a forward of `tunnel`.

    Raises DsnError (a ValueError) for text that is not a connection string or names no host, ValueError for a
    bad `local`, and what Tunnel.forward raises (NameNotFoundError, NoRouteError, OSError binding the listener).
    The password stays in the result (the driver needs it); messages never quote it.
    """
    keywords = "://" not in text
    dsn = parse_dsn(text)
    if not dsn.host or dsn.host.startswith("/"):
        raise DsnError(f"{dsn.masked()}: no network host to reach through the tunnel (a Unix-socket path or "
                       "no host at all)")
    port = dsn.port
    if port is None:
        raise DsnError(f"{dsn.masked()}: no port, and none is known for {dsn.dialect!r}: add :PORT")
    kind = _kind_for(dsn, keywords, local)
    # libpq's hostaddr, when given, is the address to reach (host is then only the name): route to it, and drop
    # it from what the driver is given, or libpq would connect to the private address around the forward.
    target = dsn.options.get("hostaddr") or dsn.host
    query = [(k, v) for k, v in dsn.query if k not in ("host", "hostaddr", "port")]
    forward = forward_for(tunnel, target, port, kind, protocol_for(dsn, keywords))
    if keywords:
        return conninfo(replace(dsn, query=tuple(query)).libpq_kwargs(forward.libpq_params()))
    if kind == "unix":  # SQLAlchemy's libpq dialects and libpq URIs both read ?host=/dir
        routed = replace(dsn, host=None, port=None,
                         query=(*query, ("host", str(forward.spec.socket_dir)), ("port", str(port))))
        return routed.url()
    local_host, local_port = forward.local_address[:2]
    if dsn.uses_libpq and dsn.options.get("sslmode") in ("verify-ca", "verify-full"):
        # The certificate is checked against `host`; the connection goes to `hostaddr` (libpq 34.1.2).
        return replace(dsn, port=local_port, query=(*query, ("hostaddr", local_host))).url()
    return replace(dsn, host=local_host, port=local_port, query=tuple(query)).url()


def create_engine(tunnel: Tunnel, url: str, **kwargs: Any) -> Any:
    """A sqlalchemy.Engine whose every pooled connection goes through `tunnel`.

    `url`: a SQLAlchemy URL (any dialect and driver) or libpq keywords; a `postgresql://` URL without a driver
    uses psycopg (3), which wgmagic depends on. kwargs go to sqlalchemy.create_engine; pool_pre_ping defaults
    to True, so a connection that died with a tunnel flap or a server restart is replaced before use.
    pg8000 gets a socket through the tunnel per connection (`sock=`, with `host=` the real name: its TLS
    server name); every other driver connects to a forward (route_url).
    Raises MissingDependencyError (pip install 'wgmagic[tools]') without SQLAlchemy.
    """
    from wgmagic.errors import import_optional

    sqlalchemy = import_optional("sqlalchemy", "tools", "tunnel.engine()")

    if "://" not in url:  # libpq keywords: the same connection as a psycopg URL
        url = replace(parse_dsn(url), dialect="postgresql", driver="psycopg").url()
    dsn = parse_dsn(url)
    if dsn.is_postgres and dsn.driver is None:
        dsn = replace(dsn, driver="psycopg")
        url = dsn.url()
    kwargs.setdefault("pool_pre_ping", True)
    if dsn.is_postgres and dsn.driver == "pg8000" and dsn.host and not dsn.host.startswith("/"):
        host, port = dsn.host, dsn.port or 5432
        tunnel.resolve_addresses(host)  # fail now, by name, rather than at the first query
        engine = sqlalchemy.create_engine(url, **kwargs)

        @sqlalchemy.event.listens_for(engine, "do_connect")
        def _through_tunnel(dialect: Any, record: Any, cargs: Any, cparams: dict[str, Any]) -> Any:
            # pg8000's Connection takes a connected `sock` (pg8000.connect does not pass it on); `host` stays
            # the real name, which pg8000 gives its ssl_context as the server name.
            params = {k: v for k, v in cparams.items() if k != "unix_sock"}
            sock = tunnel.open_connection(host, port, timeout=params.get("timeout") or 15.0)
            try:
                return dialect.dbapi.Connection(*cargs, **params, sock=sock)
            except BaseException:
                sock.close()
                raise

        return engine
    return sqlalchemy.create_engine(route_url(tunnel, url), **kwargs)
