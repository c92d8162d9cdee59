"""Where the magics' settings and named connections come from, the way JupySQL finds its own.

Settings (`%config WgMagic.<name>`), lowest precedence first:

1. the defaults of the `WgMagic` traits;
2. one settings file, read when the extension loads: the `[tool.wgmagic]` table of the nearest
   `pyproject.toml` (the current directory, then its parents; the first file found is the project's); if that
   file has no `[tool.wgmagic]` table (or there is no project), the user file `config.toml` in the platform's
   configuration directory (`user_config_dir()`: `~/.config/wgmagic` on Linux, honouring XDG_CONFIG_HOME;
   `~/Library/Application Support/wgmagic` on macOS; `%LOCALAPPDATA%\\wgmagic` on Windows), which holds the same
   `[tool.wgmagic]` table or the same keys at its top level (a `[tool.wgmagic.WgMagic]` sub-table, JupySQL's
   layout, is read too). The two files are not merged: as with JupySQL's pyproject.toml and ~/.jupysql/config,
   a project's settings replace the user's. A relative `dsn_filename` there is relative to the file;
3. IPython's own configuration (`c.WgMagic.displaylimit = 10` in ipython_config.py);
4. `%config WgMagic.<name> = value` in the notebook.

Named connections live in an INI file (`WgMagic.dsn_filename`, default `connections.ini` in the same directory),
one section per connection, like JupySQL's `connections.ini`:

    [warehouse]
    dsn = postgresql://analyst@db.internal:5432/warehouse?sslmode=verify-full
    tunnel = corp                     ; the tunnel to go through (a %wg connect --name); "none": direct

or JupySQL's keys (`drivername`, `username`, `host`, `port`, `database`); any other key becomes a connection
option (a query parameter, e.g. `sslmode`) in both forms. The file reads as configparser reads INI: `;`/`#`
comments on their own line or after whitespace, `[DEFAULT]` beneath every section, no interpolation; a value
that cannot be used is named by file, section and key. A password is never read from this file (a `password`
key, or one inside the DSN, is refused): it comes from PGPASSWORD, ~/.pgpass, a keyring or a hidden prompt.
"""

from __future__ import annotations

import configparser
import os
import re
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


CLASS_TABLE = "WgMagic"  # [tool.wgmagic.WgMagic], as JupySQL users write [tool.jupysql.SqlMagic]


@dataclass(frozen=True)
class SettingsFile:
    """The one settings file read when the extension loads: its values, its path, and for each key the TOML
    table it sits in (`[tool.wgmagic]`, `[tool.wgmagic.WgMagic]`, or "" for a top-level key of config.toml)."""

    values: dict[str, Any]
    path: Path
    tables: dict[str, str]

    def where(self, key: str) -> str:
        """How a message names a key: `path: [tool.wgmagic] key`."""
        table = self.tables.get(key, "")
        return f"{self.path}: {table + ' ' if table else ''}{key}"


def _settings_file(table: dict[str, Any], path: Path) -> SettingsFile:
    """[tool.wgmagic] with an optional [tool.wgmagic.WgMagic] sub-table (whose keys win)."""
    label = "[" + ".".join(TABLE) + "]"
    values = {key: value for key, value in table.items() if key != CLASS_TABLE}
    tables = dict.fromkeys(values, label)
    inner = table.get(CLASS_TABLE)
    if isinstance(inner, Mapping):
        values.update(inner)
        tables.update(dict.fromkeys(inner, f"[{'.'.join(TABLE)}.{CLASS_TABLE}]"))
    return SettingsFile(values, path, tables)


def read_settings(start: str | os.PathLike[str] | None = None) -> SettingsFile | None:
    """The settings file (see the module docstring for which one), or None when there is none.

    Raises ConfigError (naming the file) for a file that is not valid TOML.
    """
    project = find_pyproject(start)
    if project is not None:
        table = _table(_load_toml(project))
        if table is not None:
            return _settings_file(table, project)
    user = user_config_dir() / USER_CONFIG
    if user.is_file():
        data = _load_toml(user)
        table = _table(data)
        if table is None:
            values = {key: value for key, value in data.items() if key != "tool"}
            return SettingsFile(values, user, dict.fromkeys(values, ""))
        return _settings_file(table, user)
    return None


def load_settings(start: str | os.PathLike[str] | None = None) -> tuple[dict[str, Any], Path | None]:
    """The settings file's values and its path (read_settings); ({}, None) if there is none."""
    found = read_settings(start)
    return ({}, None) if found is None else (found.values, found.path)


def settings_value(found: SettingsFile, key: str, value: Any) -> Any:
    """A file's value as the trait takes it: `dsn_filename` relative to the file's own directory (a project's
    settings travel with the project), `~` expanded; every other value as TOML gave it."""
    if key == "dsn_filename" and isinstance(value, str) and value:
        expanded = Path(os.path.expanduser(value))
        return str(expanded if expanded.is_absolute() else found.path.parent / expanded)
    return value


def apply_settings_file(configurable: Any, start: str | os.PathLike[str] | None = None) -> Path | None:
    """Apply the settings file's values to `configurable` (the WgMagic instance), below IPython's own
    configuration (as JupySQL does): a key IPython's config sets is left alone. Each unknown key and each value
    the setting refuses is reported (file, table and key named) on stderr and skipped; the keys applied are
    reported once on stdout. Returns the file's path, or None."""
    from traitlets import TraitError

    def warn(text: str) -> None:
        print(f"wgmagic: {text}", file=sys.stderr)

    try:
        found = read_settings(start)
    except ConfigError as exc:
        from wgmagic.connstr import mask_all_secrets

        warn(f"settings file ignored: {mask_all_secrets(str(exc))}")
        return None
    if found is None:
        return None
    from_ipython = set(configurable.config.get(type(configurable).__name__, {}))
    known = set(configurable.class_trait_names(config=True))
    applied = []
    for key, value in found.values.items():
        if key not in known:
            warn(f"{found.where(key)}: unknown setting {key!r} ignored (known: {', '.join(sorted(known))})")
            continue
        if key in from_ipython:
            continue
        try:
            setattr(configurable, key, settings_value(found, key, value))
        except TraitError as exc:
            warn(f"{found.where(key)}: {str(exc).splitlines()[0]} (ignored)")
            continue
        applied.append(key)
    if applied:
        print(f"wgmagic: settings from {found.path}: "
               + ", ".join(f"{k} = {getattr(configurable, k)!r}" for k in applied))
    return found.path


@dataclass(frozen=True)
class NamedConnection:
    """One section of the connections file: a DSN without a password, and the tunnel it goes through.

    `dsn` is a URL or libpq keyword text as written, or the URL made from JupySQL's keys; `tunnel` is a
    `%wg connect --name` (None: the default/current tunnel); `direct` is `tunnel = none` (no tunnel);
    `source` is the file's path."""

    section: str
    dsn: str
    tunnel: str | None
    direct: bool
    source: str


_PASSWORD_KEYS = {"password", "passwd", "pass", "pwd"}
_STRUCTURED = ("drivername", "username", "user", "host", "port", "database", "dbname")
_DIRECT = ("none", "no", "false", "off")
DEFAULT_SECTION = "DEFAULT"  # configparser's name: its keys are every section's defaults


def _ini_parser() -> configparser.ConfigParser:
    """The connections file's reader, with the conventions of configparser and JupySQL's connections.ini:
    `#` and `;` comments on their own line and after whitespace at the end of a line, no interpolation (a `%`
    in a value stays as written), keys case-insensitive, a duplicate section or key an error. [DEFAULT] is
    read as an ordinary section here and merged by read_connection (its keys under each section's own)."""
    return configparser.ConfigParser(interpolation=None, comment_prefixes=("#", ";"),
                                     inline_comment_prefixes=("#", ";"), strict=True,
                                     default_section="\x00wgmagic-no-default")


def _ini_error(exc: configparser.Error) -> str:
    """A configparser error in words that name the place (section, key, line), never a value."""
    if isinstance(exc, configparser.DuplicateOptionError):
        return f"section [{exc.section}] has the key {exc.option} twice (line {exc.lineno})"
    if isinstance(exc, configparser.DuplicateSectionError):
        return f"has the section [{exc.section}] twice (line {exc.lineno})"
    if isinstance(exc, configparser.MissingSectionHeaderError):
        return f"line {exc.lineno} comes before any [section] header"
    if isinstance(exc, configparser.ParsingError):
        lines = ", ".join(str(lineno) for lineno, _ in getattr(exc, "errors", ())) or "?"
        return f"is not an INI file: line {lines} is neither [section], key = value nor a comment"
    return f"is not an INI file ({type(exc).__name__})"


def read_connections_file(filename: str | os.PathLike[str]) -> tuple[configparser.ConfigParser, str]:
    """The connections file parsed (see _ini_parser) and its expanded path; ConfigError naming the file."""
    path = os.path.expanduser(os.fspath(filename))
    parser = _ini_parser()
    try:
        with open(path, encoding="utf-8-sig") as file:
            parser.read_file(file, source=path)
    except FileNotFoundError:
        raise ConfigError("does not exist: write the connection there, or point %config WgMagic.dsn_filename "
                          "at your connections file", source=path) from None
    except IsADirectoryError:
        raise ConfigError("is a directory, not a connections file", source=path) from None
    except UnicodeDecodeError:
        raise ConfigError("is not a text file (UTF-8)", source=path) from None
    except OSError as exc:
        raise ConfigError(f"cannot be read ({exc.strerror})", source=path) from None
    except configparser.Error as exc:
        raise ConfigError(_ini_error(exc), source=path) from None
    return parser, path


def section_values(parser: configparser.ConfigParser, section: str) -> dict[str, str]:
    """A section's keys (lower case) and values, with [DEFAULT]'s keys beneath them, as configparser merges."""
    values: dict[str, str] = {}
    if parser.has_section(DEFAULT_SECTION):
        values.update(parser.items(DEFAULT_SECTION))
    values.update(parser.items(section))
    return {key.lower(): value.strip() for key, value in values.items()}


def read_connection(filename: str | os.PathLike[str], section: str) -> NamedConnection:
    """Section `section` of the connections file `filename` (INI, as configparser and JupySQL read it).

    Keys: `dsn` (a URL or libpq keywords) or JupySQL's `drivername`, `username`, `host`, `port`, `database`;
    `tunnel` (a `%wg connect --name`; `none` connects directly); every other key is a connection option (a
    query parameter such as `sslmode`), for both forms. [DEFAULT]'s keys apply to every section.

    Raises ConfigError when the file or the section is missing, when it holds a password, or when a key's value
    cannot be used; the message names the file, the section and the key, never a value.
    """
    parser, path = read_connections_file(filename)
    if section == DEFAULT_SECTION:
        raise ConfigError(f"[{DEFAULT_SECTION}] holds the defaults of the other sections, not a connection",
                          source=path)
    if not parser.has_section(section):
        known = ", ".join(name for name in parser.sections() if name != DEFAULT_SECTION) or "none"
        raise ConfigError(f"has no section [{section}] (sections: {known})", source=path)
    values = section_values(parser, section)
    refuse = _PASSWORD_KEYS & set(values)
    if refuse:
        raise ConfigError(f"section [{section}] has a {sorted(refuse)[0]} key: wgmagic never reads passwords "
                          "from the connections file; use ~/.pgpass, PGPASSWORD, a keyring or the prompt",
                          source=path)
    tunnel, direct = _tunnel(values.pop("tunnel", None), section, path)
    own = dict(parser.items(section))
    if "dsn" in values and "drivername" in values:
        if "dsn" in own and "drivername" in own:
            raise ConfigError(f"section [{section}] has both dsn and drivername: keep one", source=path)
        del values["drivername" if "dsn" in own else "dsn"]  # the section's own key beats [DEFAULT]'s
    if "dsn" in values:
        dsn = _dsn_with_options(values, set(own), section, path)
    elif "drivername" in values:
        dsn = _url_from_keys(values, section, path)
    else:
        raise ConfigError(f"section [{section}] needs a dsn (postgresql://user@host/db) or a drivername",
                          source=path)
    return NamedConnection(section, dsn, tunnel, direct, path)


def _where(section: str, key: str) -> str:
    return f"section [{section}], key {key}"


def _tunnel(value: str | None, section: str, path: str) -> tuple[str | None, bool]:
    """(tunnel name or None, direct): empty means the default tunnel, none/no/false/off a direct connection."""
    if value is None or value == "":
        return None, False
    if value.lower() in _DIRECT:
        return None, True
    if any(character.isspace() for character in value):
        raise ConfigError(f"{_where(section, 'tunnel')}: a tunnel name is one word (a %wg connect --name, or "
                          "none); a comment after it needs a space before its ; or #", source=path)
    return value, False


def _checked_dsn(text: str, section: str, path: str) -> Any:
    from wgmagic.connstr import parse_dsn

    if not text:
        raise ConfigError(f"{_where(section, 'dsn')} is empty", source=path)
    try:
        parsed = parse_dsn(text)
    except Exception:
        raise ConfigError(f"{_where(section, 'dsn')}: not a connection string (postgresql://user@host/db or "
                          "host=... user=...)", source=path) from None
    if parsed.password is not None:
        raise ConfigError(f"section [{section}] has a password in its dsn: wgmagic never reads passwords from the "
                          "connections file; use ~/.pgpass, PGPASSWORD, a keyring or the prompt", source=path)
    return parsed


def _dsn_with_options(values: dict[str, str], own: set[str], section: str, path: str) -> str:
    """The section's dsn, with its other keys (and [DEFAULT]'s) added as connection options; JupySQL's keys
    beside a dsn are refused when the section has them itself, and skipped when they come from [DEFAULT]."""
    from dataclasses import replace

    dsn = values.pop("dsn")
    parsed = _checked_dsn(dsn, section, path)
    extra = {key: value for key, value in values.items() if key not in _STRUCTURED}
    structured = sorted(set(values) & set(_STRUCTURED) & own)
    if structured:
        raise ConfigError(f"{_where(section, structured[0])}: this section has a dsn; put the {structured[0]} "
                          "in the dsn, or use drivername and JupySQL's keys instead of dsn", source=path)
    options = dict(parsed.query)
    for key, value in extra.items():
        if key in options and options[key] != value:
            raise ConfigError(f"{_where(section, key)}: the dsn already sets {key} to something else", source=path)
    added = {key: value for key, value in extra.items() if key not in options}
    if not added:
        return dsn
    return str(replace(parsed, query=(*parsed.query, *added.items())).url())


def _url_from_keys(values: dict[str, str], section: str, path: str) -> str:
    """A URL from JupySQL's keys (SQLAlchemy's URL.create arguments); every other key is a query parameter."""
    driver = values["drivername"]
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9.-]*(\+[A-Za-z0-9_.-]+)?", driver):
        raise ConfigError(f"{_where(section, 'drivername')}: not a SQLAlchemy driver name (postgresql, "
                          "mysql+pymysql, sqlite, ...)", source=path)
    user = values.get("username") or values.get("user") or ""
    host = values.get("host") or ""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    port = values.get("port") or ""
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise ConfigError(f"{_where(section, 'port')}: a port is a number from 1 to 65535", source=path)
    database = values.get("database") or values.get("dbname") or ""
    url = f"{driver}://"
    if user:
        url += quote(user, safe="") + "@"
    url += host + (f":{int(port)}" if port else "")
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
            elif part.strip():
                raise ConfigError(f"{_where(section, 'query')}: expected key=value pairs (or JupySQL's "
                                  "{'key': 'value'})", source=path)
    if extra:
        url += "?" + "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in extra.items())
    _checked_dsn(url, section, path)
    return url
