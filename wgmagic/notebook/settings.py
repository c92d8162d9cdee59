"""Where the magics' settings and named connections come from, the way JupySQL finds its own.

Settings (`%config WgMagic.<name>`), lowest precedence first:

1. the defaults of the `WgMagic` traits;
2. one settings file, read when the extension loads: the `[tool.wgmagic]` table of the nearest
   `pyproject.toml` (the current directory, then its parents; the first file found is the project's); if that
   file has no `[tool.wgmagic]` table (or there is no project), the user file `config.toml` in the platform's
   configuration directory (`user_config_dir()`: `~/.config/wgmagic` on Linux, honouring XDG_CONFIG_HOME;
   `~/Library/Application Support/wgmagic` on macOS; `%LOCALAPPDATA%\\wgmagic` on Windows), which holds the same
   `[tool.wgmagic]` table or the same keys at its top level. The two files are not merged: as with JupySQL's
   pyproject.toml and ~/.jupysql/config, a project's settings replace the user's;
3. IPython's own configuration (`c.WgMagic.displaylimit = 10` in ipython_config.py);
4. `%config WgMagic.<name> = value` in the notebook.

Named connections live in an INI file (`WgMagic.dsn_filename`, default `connections.ini` in the same directory),
one section per connection, like JupySQL's `connections.ini`:

    [warehouse]
    dsn = postgresql://analyst@db.internal:5432/warehouse?sslmode=verify-full
    tunnel = corp                     ; the tunnel to go through (a %wg connect --name); "none": direct

or JupySQL's keys (`drivername`, `username`, `host`, `port`, `database`, and any other key becomes a query
parameter, e.g. `sslmode`). A password is never read from this file (a `password` key, or one inside the DSN,
is refused): it comes from PGPASSWORD, ~/.pgpass, a keyring or a hidden prompt.
"""

from __future__ import annotations

import configparser
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from wgmagic.errors import ConfigError

APP = "wgmagic"
TABLE = ("tool", "wgmagic")
USER_CONFIG = "config.toml"
CONNECTIONS = "connections.ini"


def user_config_dir() -> Path:
    """The platform's per-user configuration directory for wgmagic (platformdirs' user_config_dir)."""
    try:
        from platformdirs import user_config_dir as platform_dir
    except ImportError:  # platformdirs is a dependency; this keeps a broken install usable on Linux
        base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
        return Path(base) / APP
    return Path(platform_dir(APP, appauthor=False))


def default_dsn_filename() -> str:
    return str(user_config_dir() / CONNECTIONS)


def find_pyproject(start: str | os.PathLike[str] | None = None) -> Path | None:
    """The nearest pyproject.toml: in `start` (default: the current directory) or the closest parent."""
    here = Path(start if start is not None else os.getcwd()).resolve()
    for directory in (here, *here.parents):
        candidate = directory / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def _load_toml(path: Path) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    try:
        with path.open("rb") as file:
            data: dict[str, Any] = tomllib.load(file)
            return data
    except OSError as exc:
        raise ConfigError(f"cannot be read ({exc.strerror})", source=str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"is not valid TOML ({exc})", source=str(path)) from None


def _table(data: Mapping[str, Any]) -> dict[str, Any] | None:
    node: Any = data
    for key in TABLE:
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    if not isinstance(node, Mapping):
        return None
    return dict(node)


def load_settings(start: str | os.PathLike[str] | None = None) -> tuple[dict[str, Any], Path | None]:
    """The settings file's values and its path (see the module docstring for which file); ({}, None) if none.

    Raises ConfigError (naming the file) for a file that is not valid TOML.
    """
    project = find_pyproject(start)
    if project is not None:
        table = _table(_load_toml(project))
        if table is not None:
            return table, project
    user = user_config_dir() / USER_CONFIG
    if user.is_file():
        data = _load_toml(user)
        table = _table(data)
        if table is None:
            table = {key: value for key, value in data.items() if not isinstance(value, dict)}
        return table, user
    return {}, None


@dataclass(frozen=True)
class NamedConnection:
    """One section of the connections file: a DSN without a password, and the tunnel it goes through."""

    section: str
    dsn: str
    tunnel: str | None  # a tunnel name; None: the default/current tunnel
    direct: bool  # tunnel = none: connect without a tunnel
    source: str


_PASSWORD_KEYS = {"password", "passwd", "pass", "pwd"}
_STRUCTURED = ("drivername", "username", "user", "host", "port", "database", "dbname")


def read_connection(filename: str | os.PathLike[str], section: str) -> NamedConnection:
    """Section `section` of the connections file `filename`.

    Raises ConfigError when the file or the section is missing, when it holds a password, or when it has
    neither `dsn` nor `drivername`. Messages name the file and section, never a value.
    """
    path = os.path.expanduser(os.fspath(filename))
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8-sig") as file:
            parser.read_file(file, source=path)
    except FileNotFoundError:
        raise ConfigError("does not exist: write the connection there, or point %config WgMagic.dsn_filename "
                          "at your connections file", source=path) from None
    except OSError as exc:
        raise ConfigError(f"cannot be read ({exc.strerror})", source=path) from None
    except configparser.Error as exc:
        raise ConfigError(f"is not an INI file ({type(exc).__name__})", source=path) from None
    if not parser.has_section(section):
        known = ", ".join(parser.sections()) or "none"
        raise ConfigError(f"has no section [{section}] (sections: {known})", source=path)
    values = {key.lower(): value.strip() for key, value in parser.items(section)}
    refuse = _PASSWORD_KEYS & set(values)
    if refuse:
        raise ConfigError(f"section [{section}] has a {sorted(refuse)[0]} key: wgmagic never reads passwords "
                          "from the connections file; use ~/.pgpass, PGPASSWORD, a keyring or the prompt",
                          source=path)
    tunnel_value = values.pop("tunnel", None) or None
    direct = tunnel_value is not None and tunnel_value.lower() in ("none", "no", "false", "off")
    tunnel = None if direct else tunnel_value
    if "dsn" in values:
        dsn = values["dsn"]
    elif "drivername" in values:
        dsn = _url_from_keys(values)
    else:
        raise ConfigError(f"section [{section}] needs a dsn (postgresql://user@host/db) or a drivername",
                          source=path)
    from wgmagic.connstr import parse_dsn

    try:
        parsed = parse_dsn(dsn)
    except Exception:
        raise ConfigError(f"section [{section}]: the dsn is not a connection string", source=path) from None
    if parsed.password is not None:
        raise ConfigError(f"section [{section}] has a password in its dsn: wgmagic never reads passwords from the "
                          "connections file; use ~/.pgpass, PGPASSWORD, a keyring or the prompt", source=path)
    return NamedConnection(section, dsn, tunnel, direct, path)


def _url_from_keys(values: dict[str, str]) -> str:
    driver = values["drivername"]
    user = values.get("username") or values.get("user") or ""
    host = values.get("host") or ""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    port = values.get("port") or ""
    database = values.get("database") or values.get("dbname") or ""
    url = f"{driver}://"
    if user:
        url += quote(user, safe="") + "@"
    url += host + (f":{port}" if port else "")
    if database or host or user:
        url += "/" + quote(database, safe="")
    extra = {key: value for key, value in values.items() if key not in _STRUCTURED and key != "dsn"}
    query = values.get("query")
    if query:
        extra.pop("query", None)
        for part in query.strip("{} ").split(","):
            key, sep, value = part.partition("=") if "=" in part else part.partition(":")
            if sep:
                extra[key.strip().strip("'\"")] = value.strip().strip("'\"")
    if extra:
        url += "?" + "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in extra.items())
    return url
