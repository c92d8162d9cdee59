"""Where a database password comes from when the connection string has none, as each database's own
client looks for it: libpq's ~/.pgpass (PGPASSFILE), the system keyring, and MySQL's option files.

Every function returns the password or None and never raises: a file that cannot be read, or that others
may read or write, is ignored as the database's client ignores it. A password is never logged or shown.
"""

from __future__ import annotations

import os
from pathlib import Path

from wgmagic.connstr import Dsn
from wgmagic.files import text_lines


def pgpass_lookup(dsn: Dsn) -> str | None:
    """The password ~/.pgpass (or PGPASSFILE) holds for the DSN's real host, as libpq would match it."""
    path = Path(os.environ.get("PGPASSFILE") or Path.home() / ".pgpass")
    try:
        if path.stat().st_mode & 0o077:
            return None  # libpq ignores a file others can read
        lines = text_lines(path.read_text())
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


def my_cnf_password(path: Path | None = None) -> str | None:
    """The `password` of the [client] group in ~/.my.cnf (or MYSQL_HOME/my.cnf), as libmysqlclient reads
    option files: `key = value`, values optionally quoted, # and ; comments; a world-writable file is ignored.
    Source: MySQL reference manual, "Using Option Files"."""
    candidates = [path] if path is not None else [Path.home() / ".my.cnf"]
    if path is None and os.environ.get("MYSQL_HOME"):
        candidates.insert(0, Path(os.environ["MYSQL_HOME"]) / "my.cnf")
    found = None
    for candidate in candidates:
        try:
            if candidate.stat().st_mode & 0o002:
                continue  # libmysqlclient: "World-writable config file ... is ignored"
            lines = text_lines(candidate.read_text())
        except (OSError, UnicodeDecodeError):
            continue
        group = None
        for line in lines:
            line = line.strip()
            if not line or line[0] in "#;" or line.startswith("!"):  # comments, !include / !includedir
                continue
            if line.startswith("[") and line.endswith("]"):
                group = line[1:-1].strip().lower()
                continue
            key, sep, value = line.partition("=")
            if group == "client" and sep and key.strip().replace("_", "-").lower() == "password":
                found = _option_value(value.strip())
    return found


_ESCAPES = {"b": "\b", "t": "\t", "n": "\n", "r": "\r", "s": " ", "\\": "\\", '"': '"', "'": "'"}


def _option_value(value: str) -> str:
    """An option file value as libmysqlclient reads it (mysys/my_default.cc): a # outside quotes ends the line,
    surrounding spaces go, one pair of enclosing quotes goes, then \\b \\t \\n \\r \\s \\\\ \\" \\' are escapes
    and any other backslash stays as written."""
    quote, escape = "", False
    for i, char in enumerate(value):
        if char in "'\"" and not escape:
            quote = char if not quote else ("" if char == quote else quote)
        if not quote and char == "#":
            value = value[:i]
            break
        escape = bool(quote) and char == "\\" and not escape
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1]
    out, i = [], 0
    while i < len(value):
        if value[i] == "\\" and i + 1 < len(value):
            out.append(_ESCAPES.get(value[i + 1], "\\" + value[i + 1]))
            i += 2
        else:
            out.append(value[i])
            i += 1
    return "".join(out)
