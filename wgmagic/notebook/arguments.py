"""The magics' argument text: argparse that reports as IPython does, the `%wg` and `%%wgsql` parsers, `{var}`
and `$var` references, libpq keywords as one DSN, and the one-line `%wgsql [DSN|ALIAS] [options] SQL` split.

Pure functions of the text (and of the parsers' own option tables); the magics call them, tests drive them with
Hypothesis (tests/unit/test_wgsql_line.py). Argument text is never variable-expanded by IPython (a `$` in a
password or a `{` in a config would be mangled, and expanded text would land in the history); `{var}` and `$var`
are looked up by the commands instead (wgmagic.notebook.variables), where a secret stays a value.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass

from IPython.core.error import UsageError

from wgmagic.connstr import mask_all_secrets as scrub

VARIABLE = re.compile(r"^(?:\{\s*([A-Za-z_][\w.]*)\s*\}|\$([A-Za-z_]\w*))$")
CAPTURE = re.compile(r"^\s*([A-Za-z_]\w*)\s*<<\s*(.*)$")  # `VAR << ...` on %%wgsql's line
KEYWORD_ARGUMENT = re.compile(r"^[A-Za-z_]\w*=")
# One shell-like word of a magic's line: runs of plain characters, backslash escapes, '...' (libpq quoting:
# backslash escapes inside) and "..." (an unclosed quote ends the line's words: argparse's shlex reports it).
_WORD = re.compile(r"""(?:[^\s'"\\]|\\.|'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")+""", re.DOTALL)


def words_with_offsets(line: str) -> list[tuple[int, str]]:
    """The line's words, each with the offset it starts at (quotes kept as written)."""
    return [(match.start(), match.group()) for match in _WORD.finditer(line)]


def without_comment(line: str) -> str:
    """The line before its comment, as a shell reads one: a word that starts with `#` (after white space,
    outside quotes) and the rest of the line; a `#` inside a word (`a#b`, a URL's fragment) or in quotes stays.
    For `%wg`, whose lines hold no SQL (PostgreSQL's `#` operator), so `%wg status   # a note` works as in
    the README."""
    for offset, word in words_with_offsets(line):
        if word.startswith("#"):
            return line[:offset].rstrip()
    return line


@dataclass(frozen=True)
class SqlLine:
    """`%wgsql` on one line, cut where the SQL begins: `arguments` for the magic's parser, `sql` as typed."""

    arguments: str
    sql: str


def is_dsn_word(word: str) -> bool:
    """A word that starts a connection: a URL (`postgresql://...`, `sqlite://`), a libpq keyword
    (`host=db`), or a `{var}`/`$var` that holds one."""
    return "://" in word or bool(KEYWORD_ARGUMENT.match(word)) or bool(VARIABLE.match(word))


def split_sql_line(line: str, parser: argparse.ArgumentParser, is_alias: Callable[[str], bool]) -> SqlLine:
    """`x = %wgsql DSN SELECT ...`, as JupySQL users write it: the leading words that are the magic's own (its
    options with their values, one DSN, URL or libpq keywords, or an alias) and the SQL that follows.

    The SQL starts at the first word that is none of these; it is returned exactly as typed (not re-quoted).
    An unknown `-x`/`--word` stays with the arguments, so the parser names it. `arguments + sql == line`.
    """
    table = parser._option_string_actions  # argparse's own table: option string -> action
    words = words_with_offsets(line)
    target = keywords = False
    index = 0
    while index < len(words):
        offset, word = words[index]
        name = word.split("=", 1)[0] if word.startswith("--") else word
        action = table.get(name)
        if action is not None:
            takes_value = action.nargs != 0
            index += 2 if takes_value and name == word else 1
            continue
        if re.match(r"^--?[A-Za-z]", word):
            index += 1  # not one of ours: the parser reports it
            continue
        if KEYWORD_ARGUMENT.match(word) and (not target or keywords):
            target = keywords = True
            index += 1
            continue
        if not target and (is_dsn_word(word) or is_alias(word)):
            target = True
            index += 1
            continue
        return SqlLine(line[:offset], line[offset:])
    return SqlLine(line, "")


class HelpShown(Exception):
    """argparse printed --help: nothing more to do."""


class CommandParser(argparse.ArgumentParser):
    """argparse that reports mistakes as IPython UsageErrors instead of exiting the kernel, and --help as
    HelpShown once printed (prog is `%wg` or `%%wgsql`)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(scrub(f"{self.prog}: {message}\n{self.format_usage().strip()}"))

    def exit(self, status: int = 0, message: str | None = None) -> None:  # type: ignore[override]
        if message:
            print(message, file=sys.stderr)
        raise HelpShown


def parse_arguments(parser: CommandParser, line: str, *,
                    may_hold_secrets: tuple[str, ...] = ()) -> argparse.Namespace | None:
    """The magic's arguments, or None once --help has been printed.

    An argument shaped like a secret (a URL or keyword password, a WireGuard key) is refused unless it is one
    of `may_hold_secrets` (the DSN): names, targets and paths are echoed in messages, status tables and
    widgets, so a password pasted into one of them would be shown.
    """
    try:
        args = parser.parse_args(shlex.split(line))
    except HelpShown:
        return None
    except ValueError as exc:  # shlex: an unclosed quote
        raise UsageError(f"{parser.prog}: {exc}") from None
    for name, value in vars(args).items():
        if isinstance(value, str) and name not in may_hold_secrets and scrub(value) != value:
            command = f" {args.command}" if getattr(args, "command", None) else ""
            raise UsageError(f"{parser.prog}{command}: the {name} argument looks like it holds a password or a "
                             "key: it is neither used nor shown (pass secrets in a {variable} or the DSN)")
    return args


def wg_parser() -> CommandParser:
    parser = CommandParser(prog="%wg", description="User-mode WireGuard tunnels in this kernel.")
    sub = parser.add_subparsers(dest="command", parser_class=CommandParser, metavar="COMMAND")
    p = sub.add_parser("connect", help="bring up a tunnel (returns after the first handshake)")
    p.add_argument("config", help="a wg-quick file, or {var} / $var holding wg-quick text")
    p.add_argument("--name", help="a name for the tunnel (default: the file's or variable's name, else wg0, ...)")
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds to wait for the handshake (default: %%config WgMagic.timeout, 10)")
    p.add_argument("--via", help="udp, a ws:// or wss:// URL of a `wgmagic relay` (networks that block UDP), or "
                   "auto (UDP first, then the WebSocket); default $WGMAGIC_VIA, else the config's #@wgmagic Via")
    p.add_argument("--via-ca", help="CA file for a wss:// relay (default: the system trust store)")
    p.add_argument("--share", action="store_true", default=None,
                   help="run the tunnel in its key's host process, shared by every notebook on this key "
                   "(default: %%config WgMagic.share, else $WGMAGIC_SHARE)")
    p = sub.add_parser("status", help="endpoint, handshake age, bytes, forwards and connections")
    p.add_argument("name", nargs="?")
    p = sub.add_parser("disconnect", help="close a tunnel, its forwards and its SQL connections")
    p.add_argument("name", nargs="?")
    p.add_argument("--all", action="store_true", help="close every tunnel")
    p = sub.add_parser("forward", help="relay a local listener to HOST:PORT through the tunnel")
    p.add_argument("target", help="HOST:PORT on the private network, or udp:HOST:PORT for a UDP forward")
    p.add_argument("--local", help="PORT or HOST:PORT on loopback, or unix:DIR (default: a private Unix socket)")
    p.add_argument("--idle-timeout", type=float, default=None,
                   help="UDP: seconds a flow may stay idle before it ends (default 120)")
    p.add_argument("--tunnel")
    p = sub.add_parser("socks", help="a SOCKS5 proxy into the tunnel: a private Unix socket, or TCP with "
                       "credentials")
    p.add_argument("port", nargs="?", type=int, default=None,
                   help="a TCP port on loopback (0: any free one), with a username and password shown once; "
                   "default: a Unix socket in a private (0700) directory")
    p.add_argument("--unix", metavar="DIR", help="put the Unix socket in DIR (default: a fresh 0700 directory)")
    p.add_argument("--no-auth", action="store_true",
                   help="TCP without credentials: every local user can then use the tunnel (warns)")
    p.add_argument("--tunnel")
    p = sub.add_parser("expose", help="listen on the tunnel address and relay to a local port (like ssh -R)")
    p.add_argument("spec", nargs="?", help="[ADDR:]PORT=HOST:PORT: tunnel port = this machine's HOST:PORT")
    p.add_argument("--allow", action="append", help="only peers in this network (CIDR; repeatable), besides "
                   "the peers' AllowedIPs")
    p.add_argument("--close", metavar="PORT", type=int, help="stop exposing this tunnel port")
    p.add_argument("--tunnel")
    p = sub.add_parser("capture", help="capture the tunnel's packets into a pcapng file (Wireshark, tshark)")
    p.add_argument("--seconds", type=float, help="stop after this many seconds (default: at --stop or a bound)")
    p.add_argument("--file", help="the pcapng file (default wgmagic-TUNNEL-TIME.pcapng here)")
    p.add_argument("--payload", action="store_true", help="keep packet payloads (they hold query data); "
                   "default: cut after the TCP/UDP header")
    p.add_argument("--outer", action="store_true", help="also the WireGuard UDP datagrams, as interface 1")
    p.add_argument("--max-packets", type=int, default=100_000, help="stop after this many packets")
    p.add_argument("--max-bytes", type=int, default=64 * 1024 * 1024, help="stop after this many bytes")
    p.add_argument("--stop", action="store_true", help="stop the running capture and write its file")
    p.add_argument("--tunnel")
    p = sub.add_parser("ping", help="ICMP echo through the tunnel")
    p.add_argument("host")
    p.add_argument("-c", "--count", type=int, default=4)
    p.add_argument("--tunnel")
    p = sub.add_parser("resolve", help="look a name up in the tunnel's DNS")
    p.add_argument("name")
    p.add_argument("--tunnel")
    sub.add_parser("connections", help="the %%wgsql connections (passwords masked)")
    p = sub.add_parser("queries", help="where the recent %%wgsql statements' time went: a table and a waterfall")
    p.add_argument("--last", type=int, default=None, help="how many statements (default 20)")
    p.add_argument("--no-chart", action="store_true", help="the table only")
    p.add_argument("--clear", action="store_true", help="forget the recorded statements")
    p = sub.add_parser("diag", help="a live dashboard: latency, throughput, status, connections")
    p.add_argument("--window", default="5m", help="history shown: 90s, 5m, 10m (default 5m)")
    p.add_argument("--tunnel")
    p.add_argument("--ping", help="host to ping for the ICMP RTT line (default: the first DNS = server)")
    p.add_argument("--bench", help="HOST:PORT of a bench service for the throughput-test button")
    p = sub.add_parser("plot", help="the tunnel's history as a static figure (for nbconvert/PDF)")
    p.add_argument("--window", help="how much history, e.g. 90s or 5m (default: all of it kept, up to 10 "
                   "minutes, on an axis that fits it)")
    p.add_argument("--tunnel")
    p.add_argument("--save", help="also write the PNG to this path")
    p = sub.add_parser("bench", help="throughput down and up, and latency percentiles, through the tunnel")
    p.add_argument("target", help="HOST:PORT of a bench service (PORT source, PORT+1 echo, PORT+2 sink)")
    p.add_argument("--seconds", type=float, default=5.0, help="seconds per direction (default 5)")
    p.add_argument("--tunnel")
    p = sub.add_parser("doctor", help="check a config and the path, step by step, with causes and fixes")
    p.add_argument("config", nargs="?", help="a wg-quick file or {var}; default: the current tunnel (a lone HOST:PORT "
                   "that names no file is the target)")
    p.add_argument("target_arg", nargs="?", metavar="TARGET", help="the same as --target (as `wgmagic doctor` has it)")
    p.add_argument("--target", help="HOST:PORT (or HOST) on the private network to check too")
    p.add_argument("--timeout", type=float, default=5.0)
    sub.add_parser("help", help="this list of commands (as %%wg? shows it)")
    return parser


def wg_usage() -> str:
    """%wg's docstring and `%wg help`: the parser's own list of subcommands, so the two cannot drift."""
    return wg_parser().format_help()


def wgsql_parser() -> CommandParser:
    parser = CommandParser(prog="%%wgsql", description="Run SQL through the tunnel; rows come back as a DataFrame.")
    parser.add_argument("target", nargs="?", help="a DSN (postgresql://user@db.internal/app) or an alias")
    parser.add_argument("--section", "-S", help="a connection named in the connections file "
                        "(%%config WgMagic.dsn_filename); its alias is the section name")
    parser.add_argument("--alias", "-A", help="name this connection for later cells")
    parser.add_argument("-o", "--out", help="also store the DataFrame in this variable")
    parser.add_argument("--tunnel", help="the tunnel to go through (default: the current one)")
    parser.add_argument("--limit", type=int, default=None, help="rows to display (the DataFrame holds all)")
    parser.add_argument("--close", action="store_true", help="close this connection (no SQL is run)")
    parser.add_argument("--no-tunnel", action="store_true", help="connect directly, not through a tunnel")
    parser.add_argument("--timing", action="store_true", help="print where the time went under the result "
                        "(the last statement's verdict; %%wg queries shows them all)")
    parser.add_argument("--to", metavar="PATH", help="stream the rows into this Parquet file (returns its path and "
                        "row count; memory bounded whatever the row count)")
    parser.add_argument("--chunks", type=int, metavar="N", help="return an iterator of DataFrames of N rows")
    parser.add_argument("--arrow", action="store_true", help="return a pyarrow.Table instead of a DataFrame")
    return parser


OPTIONS_WITH_VALUES = {"--alias", "-A", "-o", "--out", "--tunnel", "--limit", "--section", "-S", "--to", "--chunks"}


def keyword_dsn_as_one_argument(line: str) -> str:
    """`%%wgsql host=db user=app password=x --alias a`: the libpq keyword=value words become one DSN argument
    (as libpq reads a conninfo string), so they are not taken for stray arguments and echoed back."""
    try:
        words = shlex.split(line)
    except ValueError:
        return line  # an unclosed quote: _parse reports it
    keywords = [index for index, word in enumerate(words) if KEYWORD_ARGUMENT.match(word)
                and not (index > 0 and words[index - 1] in OPTIONS_WITH_VALUES)]
    if len(keywords) < 1:
        return line
    conninfo = " ".join(_conninfo_word(words[index]) for index in keywords)
    rest = [shlex.quote(word) for index, word in enumerate(words) if index not in keywords]
    return " ".join([shlex.quote(conninfo), *rest])


def _conninfo_word(word: str) -> str:
    key, _, value = word.partition("=")
    if value and not re.search(r"[\s'\\]", value):
        return f"{key}={value}"
    return f"{key}='" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
