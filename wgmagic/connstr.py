"""Connection strings: parse, mask the password, and point a DSN at a forward while keeping its real host.

`postgresql://user:pass@db.internal:5432/app?sslmode=verify-full`, SQLAlchemy URLs such as
`postgresql+psycopg://...` or `mysql+pymysql://...`, and libpq keyword strings (`host=db.internal user=app`)
all become a `Dsn`. A Dsn never shows its password: repr, str and masked() print `***`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from wgmagic.errors import WgMagicError

DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mariadb": 3306, "mssql": 1433, "oracle": 1521,
                 "cockroachdb": 26257, "clickhouse": 9000, "redshift": 5439}
_SCHEME_ALIASES = {"postgres": "postgresql", "pgsql": "postgresql", "psql": "postgresql"}
_KEYWORD = re.compile(r"\s*([A-Za-z_]+)\s*=\s*('(?:[^'\\]|\\.)*'|\S*)")
# user:password@ in a URL: the password runs to the last @ of the word (as urlsplit reads userinfo), so a
# raw @ or / inside it is masked too.
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)(\S*)(@)", re.IGNORECASE)
# password=..., sslpassword=..., PGPASSWORD=..., PWD=... (ODBC), also URL-encoded (%3D) and in a query string.
_KEYWORD_PASSWORD = re.compile(r"(\b(?:ssl|pg)?(?:password|passwd|pwd)\s*(?:=|%3D)\s*)('(?:[^'\\]|\\.)*'|[^\s&;]+)",
                               re.IGNORECASE)
SECRET_OPTIONS = frozenset({"password", "sslpassword", "passwd", "pwd"})  # never shown, wherever they appear

# The driver table: what a URL's dialect+driver means for how it is reached. Its one home: the runtime's
# routing (Tunnel.url, Tunnel.engine: layer 3) and the sql layer's dialects (layer 4) both import it, so it
# sits here, at layer 1, with the parser whose fields it reads.
LIBPQ_DRIVERS = frozenset({"psycopg", "psycopg2", "psycopg2cffi", "psycopg_async"})  # postgresql+X built on libpq
TLS_MODES = frozenset({"require", "verify-ca", "verify-full"})  # libpq sslmode values that ask for TLS
MYSQL_DIALECTS = frozenset({"mysql", "mariadb"})
PYMYSQL_DRIVERS = frozenset({None, "pymysql"})  # mysql:// and mysql+pymysql://: PyMySQL, which %%wgsql drives


class DsnError(WgMagicError, ValueError):
    """A connection string that cannot be understood (the message never repeats the password)."""


@dataclass(frozen=True)
class Dsn:
    """A parsed connection string (a URL of any dialect and driver, or libpq keywords): its fields, and the
    query/keyword options in order. The password is never shown: repr and str give `masked()`; `url()` holds it,
    for a driver only."""

    dialect: str  # "postgresql", "mysql", ...
    driver: str | None
    user: str | None
    password: str | None = field(repr=False)
    host: str | None
    port: int | None
    database: str | None
    query: tuple[tuple[str, str], ...] = ()

    def __repr__(self) -> str:
        return f"Dsn({self.masked()!r})"

    def __str__(self) -> str:
        return self.masked()

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    @property
    def uses_libpq(self) -> bool:
        """A PostgreSQL URL without a driver or with one built on libpq (LIBPQ_DRIVERS): libpq's keywords apply."""
        return self.is_postgres and (self.driver is None or self.driver in LIBPQ_DRIVERS)

    @property
    def options(self) -> dict[str, str]:
        return dict(self.query)

    def _url(self, password: str | None, *, masked: bool = True) -> str:
        scheme = self.dialect + (f"+{self.driver}" if self.driver else "")
        auth = ""
        if self.user is not None:
            auth = quote(self.user, safe="")
            if password is not None:
                auth += ":" + password
            auth += "@"
        host = self.host or ""
        if ":" in host:
            host = f"[{host}]"
        port = f":{self.port}" if self.port else ""
        database = "/" + quote(self.database, safe="") if self.database else ""
        query = "?" + "&".join(
            f"{quote(k, safe='')}={'***' if masked and k.lower() in SECRET_OPTIONS else quote(v, safe='/')}"
            for k, v in self.query) if self.query else ""
        return f"{scheme}://{auth}{host}{port}{database}{query}"

    def masked(self) -> str:
        """The URL with the password shown as *** (for display and messages)."""
        return self._url("***" if self.password is not None else None)

    def sqlalchemy_url(self, *, host: str | None = None, port: int | None = None) -> str:
        """For create_engine: the password included (it is for the driver, never for display)."""
        target = replace(self, host=host or self.host, port=port or self.port)
        return target._url(quote(self.password, safe="") if self.password is not None else None, masked=False)

    def url(self) -> str:
        """The URL with its password, for a driver (never for display: see masked())."""
        return self._url(quote(self.password, safe="") if self.password is not None else None, masked=False)

    def with_password(self, password: str | None) -> Dsn:
        return replace(self, password=password)

    def libpq_kwargs(self, forward_params: dict[str, str] | None = None) -> dict[str, str]:
        """Keyword arguments for psycopg.connect(); with a forward's libpq_params() the connection goes to
        the forward while `host` (over TCP) stays the real name, so sslmode=verify-full still verifies it."""
        kwargs: dict[str, str] = {}
        if self.host:
            kwargs["host"] = self.host
        if self.port:
            kwargs["port"] = str(self.port)
        if self.user:
            kwargs["user"] = self.user
        if self.password is not None:
            kwargs["password"] = self.password
        if self.database:
            kwargs["dbname"] = self.database
        kwargs.update(self.query)
        if forward_params:
            kwargs.update(forward_params)
        return kwargs


def conninfo(params: dict[str, str]) -> str:
    """libpq keyword/value text ("host=/tmp/dir port=5432 user=app") from parameters, each value quoted
    when it is empty or holds a space, a quote or a backslash (libpq "Keyword/Value Connection Strings")."""
    parts = []
    for key, value in params.items():
        if value == "" or re.search(r"[\s'\\]", value):
            value = "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
        parts.append(f"{key}={value}")
    return " ".join(parts)


def parse_dsn(text: str) -> Dsn:
    text = text.strip()
    if not text:
        raise DsnError("empty connection string")
    if "://" in text:
        return _parse_url(text)
    if "=" in text:
        return _parse_keywords(text)
    raise DsnError("not a connection string: expected a URL such as postgresql://user@host/db or key=value "
                   "pairs (the text is not repeated: it may hold a password)")


def _parse_url(text: str) -> Dsn:
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:  # the exception's text may quote a piece of the password (u:pa/ss@h reads "pa")
        why = "the port is not a number from 0 to 65535" if "port" in str(exc).lower() else "cannot be split"
        raise DsnError(f"malformed connection URL {mask_secrets(text)!r}: {why} (a / @ : ? or # inside a "
                       "password must be percent-encoded)") from None
    scheme = parts.scheme.lower()
    if not scheme:
        raise DsnError(f"malformed connection URL {mask_secrets(text)!r}: no scheme")
    dialect, _, driver = scheme.partition("+")
    dialect = _SCHEME_ALIASES.get(dialect, dialect)
    query = tuple(parse_qsl(parts.query, keep_blank_values=True))
    host = parts.hostname
    options = dict(query)
    password = unquote(parts.password) if parts.password is not None else None
    if dialect == "postgresql" and "password" in options:  # libpq: a query parameter overrides the userinfo
        password = options["password"]
        query = tuple((k, v) for k, v in query if k != "password")
    if not host and "host" in options:  # postgresql:///app?host=/tmp/dir
        host = options["host"]
        query = tuple((k, v) for k, v in query if k != "host")
    database = unquote(parts.path[1:]) if parts.path.startswith("/") and len(parts.path) > 1 else None
    return Dsn(dialect=dialect, driver=driver or None,
               user=unquote(parts.username) if parts.username is not None else None,
               password=password, host=host, port=port or DEFAULT_PORTS.get(dialect), database=database, query=query)


def _parse_keywords(text: str) -> Dsn:
    values: dict[str, str] = {}
    position = 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = _KEYWORD.match(text, position)
        if not match:  # the text is not quoted: a key or a password pasted here must not be echoed
            raise DsnError(f"cannot read the connection string at character {position + 1}: expected key=value "
                           "pairs such as host=db.internal user=app")
        value = match.group(2)
        if value.startswith("'"):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        values[match.group(1).lower()] = value
        position = match.end()
    port_text = values.pop("port", None)
    try:
        port = int(port_text) if port_text else 5432
    except ValueError:
        raise DsnError("the port must be a number (the value is not repeated)") from None
    host = values.pop("host", None) or values.pop("hostaddr", None)
    return Dsn(dialect="postgresql", driver=None, user=values.pop("user", None),
               password=values.pop("password", None), host=host, port=port,
               database=values.pop("dbname", None), query=tuple(values.items()))


def mask_secrets(text: str) -> str:
    """Replace passwords in URLs and password=... pairs found anywhere in `text` with ***."""
    text = _URL_PASSWORD.sub(lambda m: m.group(1) + "***" + m.group(3), text)
    return _KEYWORD_PASSWORD.sub(lambda m: m.group(1) + "***", text)


_KEY_SHAPED = re.compile(r"(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=(?![A-Za-z0-9+/=])")
# user:password@host without a scheme; not scheme://user@host (a URL with no password: its "//" is no password)
_USERINFO = re.compile(r"(?<![\w/])([^\s:/@'\"]+:)(?!//)([^\s@'\"]+)(@)")


def mask_all_secrets(text: str) -> str:
    """For messages that may quote what a user typed: mask_secrets, plus user:password@host without a scheme,
    plus anything shaped like a WireGuard key (44 characters of base64 ending in '='), shown as <key>: a
    private key pasted in the wrong place must not be echoed. Public keys look the same and are masked too."""
    text = mask_secrets(text)
    text = _USERINFO.sub(lambda m: m.group(1) + "***" + m.group(3), text)
    return _KEY_SHAPED.sub("<key>", text)
