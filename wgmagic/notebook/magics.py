"""The IPython magics: `%wg` (tunnels, forwards, diagnostics) and `%%wgsql` (SQL into DataFrames).

Both are thin: tunnels come from wgmagic.runtime.tunnel, SQL from wgmagic.sql. Argument text is never
variable-expanded by IPython (a `$` in a password or a `{` in a config would be mangled, and expanded text
would land in the history); `{var}` and `$var` are looked up here instead, where a secret stays a value.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import logging
import os
import re
import shlex
import sys
import threading
import time
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class, no_var_expand
from traitlets import Bool, Enum, Float, Int, TraitError, Unicode, default, validate

from wgmagic.addresses import format_address
from wgmagic.connstr import mask_all_secrets as scrub
from wgmagic.errors import ConfigError, WgMagicError

DEFAULT_DISPLAY_LIMIT = 50
_VARIABLE = re.compile(r"^(?:\{\s*([A-Za-z_][\w.]*)\s*\}|\$([A-Za-z_]\w*))$")
_CAPTURE = re.compile(r"^\s*([A-Za-z_]\w*)\s*<<\s*(.*)$")
_CAPTURE_BEFORE = re.compile(r"^\s*([A-Za-z_]\w*)\s*<<\s*%%wgsql\b(.*)$")


class _Prefetch:
    """The SQL driver and pandas, imported on a thread from `%wg connect` on: the first `%%wgsql` no longer
    waits for a handshake, then for psycopg, then for pandas, one after the other (issue 15, time to first
    result). `import wgmagic` and `%load_ext wgmagic` stay cheap: nothing starts before a tunnel is asked for.

    The thread imports in two stages, each marked by an event; the magics wait for a stage before they use
    its modules, so no module is ever imported by two threads at once (that could meet the import system's
    deadlock detection and a half-initialised module)."""

    # The first %%wgsql resolves its host through the tunnel before its driver connects: the DNS messages'
    # library (dnspython, tens of ms to import) comes first, while the handshake is in flight.
    DRIVER = ("wgmagic.netstack.dns", "wgmagic.runtime.resolver", "psycopg", "wgmagic.sql.parameters",
              "wgmagic.sql.dialects.postgres")
    FRAMES = ("numpy", "pandas")

    def __init__(self) -> None:
        self.driver = threading.Event()
        self.frames = threading.Event()
        self._lock = threading.Lock()
        self._started = False

    def start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
        threading.Thread(target=self._run, name="wgmagic-prefetch", daemon=True).start()

    def _run(self) -> None:
        import importlib

        for names, done in ((self.DRIVER, self.driver), (self.FRAMES, self.frames)):
            for name in names:
                with contextlib.suppress(Exception):  # a missing module fails later, where it is used
                    importlib.import_module(name)
            done.set()

    def wait(self, stage: threading.Event) -> None:
        if self._started:
            stage.wait(60.0)


_PREFETCH = _Prefetch()


def capture_transformer(lines: list[str]) -> list[str]:
    """`VAR << %%wgsql ...` on a cell's first line becomes `%%wgsql VAR << ...` (IPython needs %% first)."""
    if lines:
        match = _CAPTURE_BEFORE.match(lines[0])
        if match:
            return [f"%%wgsql {match.group(1)} <<{match.group(2)}\n", *lines[1:]]
    return lines


class _HelpShown(Exception):
    """argparse printed --help: nothing more to do."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports mistakes as IPython UsageErrors instead of exiting the kernel."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(scrub(f"{self.prog}: {message}\n{self.format_usage().strip()}"))

    def exit(self, status: int = 0, message: str | None = None) -> None:  # type: ignore[override]
        if message:
            print(message, file=sys.stderr)
        raise _HelpShown


def _parse(parser: _Parser, line: str, *, may_hold_secrets: tuple[str, ...] = ()) -> argparse.Namespace | None:
    """The magic's arguments, or None once --help has been printed.

    An argument shaped like a secret (a URL or keyword password, a WireGuard key) is refused unless it is one
    of `may_hold_secrets` (the DSN): names, targets and paths are echoed in messages, status tables and
    widgets, so a password pasted into one of them would be shown.
    """
    try:
        args = parser.parse_args(shlex.split(line))
    except _HelpShown:
        return None
    except ValueError as exc:  # shlex: an unclosed quote
        raise UsageError(f"{parser.prog}: {exc}") from None
    for name, value in vars(args).items():
        if isinstance(value, str) and name not in may_hold_secrets and scrub(value) != value:
            command = f" {args.command}" if getattr(args, "command", None) else ""
            raise UsageError(f"{parser.prog}{command}: the {name} argument looks like it holds a password or a "
                             "key: it is neither used nor shown (pass secrets in a {variable} or the DSN)")
    return args


def _wg_parser() -> _Parser:
    parser = _Parser(prog="%wg", description="User-mode WireGuard tunnels in this kernel.")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser, metavar="COMMAND")
    p = sub.add_parser("connect", help="bring up a tunnel (returns after the first handshake)")
    p.add_argument("config", help="a wg-quick file, or {var} / $var holding wg-quick text")
    p.add_argument("--name", help="a name for the tunnel (default: from the file name, or wg0, wg1, ...)")
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds to wait for the handshake (default: %%config WgMagic.timeout, 10)")
    p.add_argument("--via", help="udp, a ws:// or wss:// URL of a `wgmagic relay` (networks that block UDP), or "
                   "auto (UDP first, then the WebSocket); default $WGMAGIC_VIA, else the config's #@wgmagic Via")
    p.add_argument("--via-ca", help="CA file for a wss:// relay (default: the system trust store)")
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
    p = sub.add_parser("diag", help="a live dashboard: latency, throughput, status, connections")
    p.add_argument("--window", default="5m", help="history shown: 90s, 5m, 10m (default 5m)")
    p.add_argument("--tunnel")
    p.add_argument("--ping", help="host to ping for the ICMP RTT line (default: the first DNS = server)")
    p.add_argument("--bench", help="HOST:PORT of a bench service for the throughput-test button")
    p = sub.add_parser("plot", help="the tunnel's history as a static figure (for nbconvert/PDF)")
    p.add_argument("--window", default="5m")
    p.add_argument("--tunnel")
    p.add_argument("--save", help="also write the PNG to this path")
    p = sub.add_parser("bench", help="throughput down and up, and latency percentiles, through the tunnel")
    p.add_argument("target", help="HOST:PORT of a bench service (PORT source, PORT+1 echo, PORT+2 sink)")
    p.add_argument("--seconds", type=float, default=5.0, help="seconds per direction (default 5)")
    p.add_argument("--tunnel")
    p = sub.add_parser("doctor", help="check a config and the path, step by step, with causes and fixes")
    p.add_argument("config", nargs="?", help="a wg-quick file or {var}; default: the current tunnel")
    p.add_argument("--target", help="HOST:PORT (or HOST) on the private network to check too")
    p.add_argument("--timeout", type=float, default=5.0)
    sub.add_parser("help", help="this list of commands (as %%wg? shows it)")
    return parser


def _wg_usage() -> str:
    """%wg's docstring and `%wg help`: the parser's own list of subcommands, so the two cannot drift."""
    return _wg_parser().format_help()


def _wgsql_parser() -> _Parser:
    parser = _Parser(prog="%%wgsql", description="Run SQL through the tunnel; rows come back as a DataFrame.")
    parser.add_argument("target", nargs="?", help="a DSN (postgresql://user@db.internal/app) or an alias")
    parser.add_argument("--section", "-S", help="a connection named in the connections file "
                        "(%%config WgMagic.dsn_filename); its alias is the section name")
    parser.add_argument("--alias", "-A", help="name this connection for later cells")
    parser.add_argument("-o", "--out", help="also store the DataFrame in this variable")
    parser.add_argument("--tunnel", help="the tunnel to go through (default: the current one)")
    parser.add_argument("--limit", type=int, default=None, help="rows to display (the DataFrame holds all)")
    parser.add_argument("--close", action="store_true", help="close this connection (no SQL is run)")
    parser.add_argument("--no-tunnel", action="store_true", help="connect directly, not through a tunnel")
    parser.add_argument("--to", metavar="PATH", help="stream the rows into this Parquet file (returns its path and "
                        "row count; memory bounded whatever the row count)")
    parser.add_argument("--chunks", type=int, metavar="N", help="return an iterator of DataFrames of N rows")
    parser.add_argument("--arrow", action="store_true", help="return a pyarrow.Table instead of a DataFrame")
    return parser


@magics_class
class WgMagic(Magics):
    """%wg and %%wgsql. Settings are traitlets: `%config WgMagic` lists them, `%config WgMagic.displaylimit = 5`
    sets one; they are also read from `[tool.wgmagic]` in the project's pyproject.toml or the user's config
    file (wgmagic.notebook.settings says which, and in what order)."""

    displaylimit = Int(DEFAULT_DISPLAY_LIMIT, config=True,
                       help="Rows of a result shown (the DataFrame holds them all); 0 shows every row.")
    timeout = Float(10.0, config=True, help="Seconds %wg connect waits for the first handshake.")
    tcp_user_timeout = Float(30.0, allow_none=True, config=True,
                             help="Seconds data may go unacknowledged before a tunnel connection fails (RFC 5482; "
                                  "None: off). Applies from the next %wg connect.")
    progress_bar = Bool(True, config=True, help="Show a progress bar while a large result arrives.")
    progress_bar_threshold = Float(1.0, config=True,
                                   help="Seconds a result must take before its progress bar appears.")
    autocommit = Bool(True, config=True, help="Commit each statement (as psql does); False: COMMIT yourself.")
    default_tunnel = Unicode(None, allow_none=True, config=True,
                             help="The tunnel %wg and %%wgsql use without --tunnel, and the name %wg connect "
                                  "gives a tunnel without --name; None: the most recent one.")
    dsn_filename = Unicode(config=True, help="The connections file %%wgsql --section reads (INI, no passwords).")
    autopolars = Bool(False, config=True, help="Return a polars.DataFrame instead of a pandas one (JupySQL's name).")
    string_dtype = Enum(["str", "object"], "str", config=True,
                        help="pandas dtype of text columns: str (pandas' Arrow-backed strings) or object.")

    @default("dsn_filename")
    def _default_dsn_filename(self) -> str:
        from wgmagic.notebook.settings import default_dsn_filename

        return default_dsn_filename()

    @validate("displaylimit")
    def _valid_displaylimit(self, proposal: Any) -> int:
        if proposal["value"] < 0:
            raise TraitError("displaylimit must be 0 (every row) or more")
        return int(proposal["value"])

    @validate("timeout", "progress_bar_threshold")
    def _valid_seconds(self, proposal: Any) -> float:
        if not proposal["value"] >= 0:
            raise TraitError(f"{proposal['trait'].name} must be 0 or more seconds")
        return float(proposal["value"])

    def __init__(self, shell: Any, *, settings_from: str | os.PathLike[str] | None = None) -> None:
        super().__init__(shell)
        self.tunnels: dict[str, Any] = {}
        self.current_tunnel: str | None = None
        self.connections: dict[str, Any] = {}
        self.current_connection: str | None = None
        self.dashboards: list[Any] = []
        self.settings_file: str | None = None
        self._load_settings_file(settings_from)

    @property
    def display_limit(self) -> int:
        return self.displaylimit

    def _load_settings_file(self, start: str | os.PathLike[str] | None) -> None:
        """Apply the settings file's values, below IPython's own configuration (as JupySQL does)."""
        from wgmagic.notebook.settings import load_settings

        try:
            values, path = load_settings(start)
        except ConfigError as exc:
            print(f"wgmagic: settings file ignored: {scrub(str(exc))}", file=sys.stderr)
            return
        if path is None:
            return
        self.settings_file = str(path)
        from_ipython = set(self.config.get(type(self).__name__, {}))
        known = set(self.class_trait_names(config=True))
        applied = []
        for key, value in values.items():
            if key not in known:
                print(f"wgmagic: {path}: unknown setting {key!r} ignored (known: {', '.join(sorted(known))})",
                      file=sys.stderr)
                continue
            if key in from_ipython:
                continue
            try:
                setattr(self, key, value)
            except TraitError as exc:
                print(f"wgmagic: {path}: {key}: {scrub(str(exc).splitlines()[0])}", file=sys.stderr)
                continue
            applied.append(key)
        if applied:
            print(f"wgmagic: settings from {path}: " + ", ".join(f"{k} = {getattr(self, k)!r}" for k in applied))

    # ---- %wg ---------------------------------------------------------------------------------------------
    @no_var_expand
    @line_magic
    def wg(self, line: str) -> Any:
        """(replaced below the class by _wg_usage(): the commands as the parser knows them)"""
        args = _parse(_wg_parser(), line)
        if args is None:
            return None
        if args.command in (None, "help"):
            print(_wg_usage())
            return None
        handler = getattr(self, f"_wg_{args.command}")
        return _guarded(f"%wg {args.command}", handler, args)

    def _wg_connect(self, args: argparse.Namespace) -> Any:
        from wgmagic.config import parse_config
        from wgmagic.netstack.tcp.config import tunnel_config
        from wgmagic.runtime.tunnel import connect

        text, source = self._config_text(args.config)
        config = parse_config(text, source=source, ask_private_key=lambda prompt: getpass.getpass(prompt))
        if not config.peers:
            raise ConfigError("has no [Peer] section: there is nothing to connect to", source=source)
        name = args.name
        if name is None and self.default_tunnel and (
                self.default_tunnel not in self.tunnels or self.tunnels[self.default_tunnel].closed):
            name = self.default_tunnel
        name = name or _default_name(source, self.tunnels)
        if name in self.tunnels and not self.tunnels[name].closed:
            self.tunnels[name].close()
        _PREFETCH.start()  # while the handshake is in flight
        tunnel = connect(config, name=name, timeout=self.timeout if args.timeout is None else args.timeout,
                         tcp=tunnel_config(user_timeout=self.tcp_user_timeout),
                         via=getattr(args, "via", None), via_ca=getattr(args, "via_ca", None),
                         note=lambda message: print(f"wgmagic: {message}"))
        self.tunnels[name] = tunnel
        self.current_tunnel = name
        rtt = tunnel.stats().get("handshake_rtt")
        shown = f" (handshake {rtt * 1000:.1f} ms)" if isinstance(rtt, float) else ""
        if tunnel.via is not None:
            shown += f" over {tunnel.transport_description}"
        print(f"wgmagic: tunnel {name!r} is up{shown}")
        return None

    def _config_text(self, argument: str) -> tuple[str, str]:
        match = _VARIABLE.match(argument.strip())
        if match:
            name = match.group(1) or match.group(2)
            value = self._lookup(name)
            if isinstance(value, os.PathLike):
                value = os.fspath(value)
            if isinstance(value, (bytes, bytearray)):
                from wgmagic.config import decode_config_bytes

                return decode_config_bytes(bytes(value), source=f"${name}"), f"${name}"
            if not isinstance(value, str):
                raise UsageError(f"%wg connect: {name} holds a {type(value).__name__}, not wg-quick text or a path")
            argument = value
            if "\n" in value or "[" in value:
                return value, f"${name}"
        from wgmagic.config import read_config_file

        path = os.path.expanduser(argument)
        return read_config_file(path), path

    def _lookup(self, dotted: str) -> Any:
        head, *rest = dotted.split(".")
        if head not in self.shell.user_ns:
            raise UsageError(f"no variable named {head!r} in the notebook")
        value = self.shell.user_ns[head]
        for part in rest:
            try:
                value = getattr(value, part)
            except AttributeError:
                raise UsageError(f"{head}: no attribute {part!r} (in {{{dotted}}})") from None
        return value

    def _value(self, text: str | None) -> str | None:
        """An argument, or the value of the `{var}` / `$var` it names."""
        if text is None:
            return None
        match = _VARIABLE.match(text.strip())
        return str(self._lookup(match.group(1) or match.group(2))) if match else text

    def tunnel(self, name: str | None = None) -> Any:
        """The named tunnel, or the current one; a UsageError that says what to do when there is none."""
        if name is None and self.default_tunnel and self.default_tunnel in self.tunnels:
            name = self.default_tunnel
        name = name or self.current_tunnel
        if name is None or name not in self.tunnels:
            if not self.tunnels:
                again = f" --name {name}" if name else ""
                raise UsageError(f"no tunnel is up: run %wg connect CONFIG{again} first")
            raise UsageError(f"no tunnel named {name!r} (up: {', '.join(self.tunnels)}): "
                             f"%wg connect CONFIG --name {name} brings it back")
        tunnel = self.tunnels[name]
        if tunnel.closed:
            raise UsageError(f"tunnel {name!r} was disconnected: %wg connect it again")
        return tunnel

    def _wg_status(self, args: argparse.Namespace) -> Any:
        from wgmagic.notebook.status import TunnelStatus

        names = [args.name] if args.name else list(self.tunnels)
        if not names:
            print("wgmagic: no tunnel is up (%wg connect CONFIG)")
            return None
        rows = [TunnelStatus.of(self.tunnel(name), self.connections.values()) for name in names]
        return rows[0] if len(rows) == 1 else TunnelStatus.many(rows)

    def _wg_disconnect(self, args: argparse.Namespace) -> None:
        names = list(self.tunnels) if args.all else [args.name or self.current_tunnel]
        if names == [None]:
            raise UsageError("no tunnel is up")
        for name in names:
            if name not in self.tunnels:
                raise UsageError(f"no tunnel named {name!r}")
            # SQL connections through it are closed but kept: once `%wg connect --name` brings the tunnel
            # back, their next cell reconnects by itself (as after any flap).
            for conn in self.connections.values():
                if conn.tunnel_name == name:
                    conn.close()
            self.tunnels.pop(name).close()
            print(f"wgmagic: tunnel {name!r} closed")
        if self.current_tunnel not in self.tunnels:
            self.current_tunnel = next(iter(self.tunnels), None)

    def _wg_forward(self, args: argparse.Namespace) -> Any:
        local: str | int | None = args.local
        if isinstance(local, str) and local.isdigit():
            local = int(local)
        target = self._value(args.target) or ""
        if target.strip().lower().startswith("udp:"):
            return self._wg_forward_udp(args, target, local)
        if args.idle_timeout is not None:
            raise UsageError("%wg forward: --idle-timeout is for UDP forwards (udp:HOST:PORT)")
        forward = self.tunnel(args.tunnel).forward(target, local=local)
        params = forward.libpq_params()
        print(f"wgmagic: {format_address(forward.local_address)} -> {args.target}; libpq: "
              + " ".join(f"{k}={v}" for k, v in params.items()))
        return forward

    def _wg_forward_udp(self, args: argparse.Namespace, target: str, local: str | int | None) -> Any:
        try:
            forward = self.tunnel(args.tunnel).forward(target, local=local, idle_timeout=args.idle_timeout)
        except ValueError as exc:
            raise UsageError(f"%wg forward: {exc}") from None
        where = forward.local_address
        shown = where if isinstance(where, str) else f"udp {format_address(where)}"
        print(f"wgmagic: {shown} -> {forward.target} (a flow per client address; idle flows end after "
              f"{forward.spec.idle_timeout:g} s)")
        return forward

    def _wg_socks(self, args: argparse.Namespace) -> Any:
        if args.port is None and args.no_auth:
            raise UsageError("%wg socks: --no-auth is for a TCP port (%wg socks PORT --no-auth)")
        if args.port is not None and args.unix:
            raise UsageError("%wg socks: give a PORT or --unix DIR, not both")
        try:
            server = self.tunnel(args.tunnel).socks(args.port, unix=args.unix, no_auth=args.no_auth)
        except ValueError as exc:
            raise UsageError(f"%wg socks: {exc}") from None
        if server.is_unix:
            print(f"wgmagic: SOCKS5 on the Unix socket {server.address} (only you can use it); names resolve "
                  f"through the tunnel.\n  curl --proxy {server.proxy_url()} URL\n  Python: "
                  "wgmagic.runtime.services.socks.socks5_connect(PATH, host, port)")
        elif server.credentials is not None:
            user, password = server.credentials
            print(f"wgmagic: SOCKS5 on {format_address(server.address)}, username {user} password "
                  f"{password} (shown only now)\n  curl --proxy {server.proxy_url(reveal=True)} URL")
        else:
            print(f"wgmagic: SOCKS5 on {format_address(server.address)} WITHOUT credentials: any local "
                  "user can use it (curl --socks5-hostname)")
        return server

    def _wg_expose(self, args: argparse.Namespace) -> Any:
        tunnel = self.tunnel(args.tunnel)
        if args.close is not None:
            for exposed in tunnel.exposes:
                if exposed.port == args.close:
                    exposed.close()
                    print(f"wgmagic: tunnel port {args.close} no longer exposed")
                    return None
            raise UsageError(f"tunnel port {args.close} is not exposed")
        if not args.spec:
            raise UsageError("%wg expose: expected [ADDR:]PORT=HOST:PORT (or --close PORT)")
        try:
            exposed = tunnel.expose(self._value(args.spec) or "", allow=args.allow)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        where = ", ".join(f"[{a}]:{exposed.port}" if a.version == 6 else f"{a}:{exposed.port}"
                          for a in exposed.addresses)
        print(f"wgmagic: peers reach {exposed.expose.target_host}:{exposed.expose.target_port} at {where}")
        return exposed

    def _wg_capture(self, args: argparse.Namespace) -> Any:
        tunnel = self.tunnel(args.tunnel)
        if args.stop:
            if not tunnel.captures:
                raise UsageError("no capture was started on this tunnel")
            capture = tunnel.captures[-1]  # running, or stopped by itself (its time or a bound)
            path = capture.stop()
            print(f"wgmagic: {capture.written} packets written to {path} (stopped by {capture.stopped_by})")
            return capture
        try:
            capture = tunnel.capture(self._value(args.file), seconds=args.seconds, max_packets=args.max_packets,
                                     max_bytes=args.max_bytes, payload=args.payload, outer=args.outer)
        except (ValueError, RuntimeError) as exc:
            raise UsageError(str(exc)) from None
        until = f"for {args.seconds:g} s" if args.seconds else "until %wg capture --stop"
        print(f"wgmagic: capturing to {capture.path} {until} (at most {args.max_packets} packets, "
              f"{args.max_bytes} bytes; {'with' if args.payload else 'no'} payload)")
        return capture

    def _wg_ping(self, args: argparse.Namespace) -> None:
        if args.count < 1:
            raise UsageError("%wg ping: -c/--count must be 1 or more")
        tunnel = self.tunnel(args.tunnel)
        address = str(tunnel.resolve_address(self._value(args.host) or ""))
        answered = []
        for reply in tunnel.ping_iter(address, args.count):
            if reply.rtt is None:
                print(f"no answer from {address}: icmp_seq={reply.seq}")
            else:
                answered.append(reply.rtt * 1000)
                print(f"{reply.size + 8} bytes from {address}: icmp_seq={reply.seq} time={reply.rtt * 1000:.2f} ms")
        loss = 100 * (args.count - len(answered)) / max(1, args.count)
        summary = f"{args.count} sent, {len(answered)} received, {loss:.0f}% loss"
        if answered:
            average = sum(answered) / len(answered)
            summary += f", rtt min/avg/max {min(answered):.2f}/{average:.2f}/{max(answered):.2f} ms"
        print(summary)

    def _wg_resolve(self, args: argparse.Namespace) -> list[str]:
        addresses = [str(a) for a in self.tunnel(args.tunnel).resolve(self._value(args.name) or "")]
        print(f"{args.name}: {', '.join(addresses)}")
        return addresses

    def _wg_connections(self, args: argparse.Namespace) -> Any:
        from wgmagic.notebook.status import ConnectionsTable

        return ConnectionsTable([c.describe() for c in self.connections.values()], self.current_connection)

    def _wg_diag(self, args: argparse.Namespace) -> Any:
        from wgmagic.notebook.dashboard import Dashboard

        window = _window(args.window)
        tunnel = self.tunnel(args.tunnel)
        dashboard = Dashboard(tunnel, window=window, ping_target=self._value(args.ping),
                              bench_target=self._value(args.bench))
        self.dashboards.append(dashboard)
        return dashboard.start()

    def _wg_plot(self, args: argparse.Namespace) -> Any:
        from wgmagic.notebook.plots import PngFigure, history_figure, png

        window = _window(args.window)
        tunnel = self.tunnel(args.tunnel)
        figure = PngFigure(png(history_figure(tunnel.history(window), window)), f"tunnel {tunnel.name}")
        if args.save:
            figure.save(args.save)
        return figure

    def _wg_bench(self, args: argparse.Namespace) -> Any:
        from IPython.display import display

        from wgmagic.addresses import split_host_port
        from wgmagic.notebook.plots import PngFigure, bench_figure, png
        from wgmagic.notebook.status import _Table
        from wgmagic.tools.bench import run_bench

        try:
            host, port = split_host_port(self._value(args.target) or "")
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        tunnel = self.tunnel(args.tunnel)
        address = str(tunnel.resolve_address(host))
        bar = _PhaseBar()
        try:
            result = run_bench(tunnel, address, port, seconds=args.seconds, progress=bar.update)
        finally:
            bar.close()
        table = _Table()
        table.rows, table.title = result.rows(), f"wgmagic bench through {tunnel.name} to {args.target}"
        display(table)
        display(PngFigure(png(bench_figure(result)), "bench"))
        return result

    def _wg_doctor(self, args: argparse.Namespace) -> Any:
        from wgmagic.tools.doctor import run_doctor

        if args.config:
            text, _ = self._config_text(args.config)
            return run_doctor(text, target=self._value(args.target), timeout=args.timeout)
        return run_doctor(None, target=self._value(args.target), tunnel=self.tunnel(None), timeout=args.timeout)

    # ---- %%wgsql -----------------------------------------------------------------------------------------
    @no_var_expand
    @line_cell_magic
    def wgsql(self, line: str, cell: str | None = None) -> Any:
        """Run SQL through the tunnel: %%wgsql [VAR <<] [DSN|ALIAS] [--alias A] [-o VAR] [--tunnel N]
        [--limit N] [--close]. `{name}` and `:name` bind notebook variables as parameters."""
        capture = _CAPTURE.match(line)
        target_var = None
        if capture:
            target_var, line = capture.group(1), capture.group(2)
        if cell is None and self._line_is_sql(line):
            line, cell = "", line  # `%wgsql SELECT ...` (and `x = %wgsql SELECT ...`) on the current connection
        args = _parse(_wgsql_parser(), _keyword_dsn_as_one_argument(line), may_hold_secrets=("target",))
        if args is None:
            return None
        return _guarded("%%wgsql", self._wgsql, args, cell or "", target_var)

    def _line_is_sql(self, line: str) -> bool:
        first = line.strip().split(None, 1)[0] if line.strip() else ""
        if not first or first.startswith("-") or first in self.connections or _VARIABLE.match(first):
            return False
        return "://" not in first and "=" not in first

    def _wgsql(self, args: argparse.Namespace, cell: str, target_var: str | None) -> Any:
        _PREFETCH.wait(_PREFETCH.driver)  # before any import of the SQL layer (see _Prefetch)
        if args.limit is not None and args.limit < 0:
            raise UsageError("--limit must be 0 or more")
        if args.out is not None and not args.out.isidentifier():
            raise UsageError(f"-o/--out takes a Python variable name, not {args.out!r}")
        conn = self._sql_connection(args)
        if args.close:
            conn.close()
            self.connections.pop(conn.alias, None)
            if self.current_connection == conn.alias:
                self.current_connection = next(iter(self.connections), None)
            print(f"wgmagic: closed connection {conn.alias!r}")
            return None
        self.current_connection = conn.alias
        conn.set_autocommit(self.autocommit)  # %config WgMagic.autocommit applies to open connections too
        statements = conn.statements(cell, self.shell.user_ns)  # cut by the dialect's rules for this session
        if not statements:
            conn.ensure()
            print(f"wgmagic: connected: {conn.dsn.masked()}")
            return None
        _PREFETCH.wait(_PREFETCH.frames)  # pandas went on importing while the connection opened
        from wgmagic.sql.outputs import OutputSpec, run_cell

        try:
            spec = OutputSpec("arrow" if args.arrow else "polars" if self.autopolars else "pandas",
                              self.string_dtype, self._value(args.to) if args.to else None, args.chunks)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        with _progress_bar(self.progress_bar_threshold if self.progress_bar else None) as progress:
            results = run_cell(conn, statements, spec, progress=progress)
        frame = None
        for result in results:
            if result.frame is not None:
                frame = result.frame
            else:
                print(_affected(result))
        if frame is None:
            return None
        frame = self._show(frame, (self.displaylimit or None) if args.limit is None else args.limit)
        for name in (args.out, target_var):  # the same object as the result (and `_`): every row
            if name:
                self.shell.user_ns[name] = frame
        return frame

    def _show(self, frame: Any, limit: int | None) -> Any:
        """The whole DataFrame, whatever its length (`x = %wgsql ...` holds every row, as JupySQL's ResultSet
        does); beyond `limit` rows it displays its first `limit` and a line saying how many there are."""
        if limit is None or not hasattr(frame, "iloc") or len(frame) <= limit:  # polars, Arrow, a file, chunks
            return frame
        from wgmagic.notebook.frames import limited_frame

        return limited_frame(frame, limit)

    def _sql_connection(self, args: argparse.Namespace) -> Any:
        from wgmagic.connstr import parse_dsn
        from wgmagic.sql.dialects import dialect_for

        target = args.target
        section = None
        if args.section is not None:
            if target is not None:
                raise UsageError("%%wgsql: give a DSN, an alias or --section NAME, not two of them")
            section = self._section(args.section)
            target = section.dsn
            args.alias = args.alias or section.section
        if target and _VARIABLE.match(target):
            value = self._lookup(_VARIABLE.match(target).group(1) or _VARIABLE.match(target).group(2))
            target = str(value)
        if target is None or ("://" not in target and "=" not in target):
            alias = target or self.current_connection
            if alias is None:
                raise UsageError("no SQL connection yet: start with %%wgsql postgresql://user@host/db")
            if alias not in self.connections:
                raise UsageError(f"no connection named {alias!r}; known: {', '.join(self.connections) or 'none'}")
            conn = self.connections[alias]
            if args.alias and args.alias != alias:
                self.connections[args.alias] = self.connections.pop(alias)
                conn.alias = args.alias
            return conn
        dsn = parse_dsn(target)
        dialect = dialect_for(dsn)  # MissingDependencyError now when its driver is not installed
        alias = args.alias or dsn.masked()
        existing = self.connections.get(alias)
        if existing is not None and existing.dsn.masked() == dsn.masked() and (
                dsn.password is None or existing.dsn.password == dsn.password):
            return existing
        if existing is not None:
            existing.close()
        direct = args.no_tunnel or (section is not None and section.direct and not args.tunnel)
        tunnel_name = None if direct else (args.tunnel or (section.tunnel if section else None)
                                           or self._default_tunnel_name())
        if tunnel_name is not None:
            self.tunnel(tunnel_name)  # fails now, with advice, if that tunnel is not up
        provider = None if tunnel_name is None else (lambda: self.tunnel(tunnel_name))
        conn = dialect.connection(dsn, alias, provider, prompt=getpass.getpass, autocommit=self.autocommit)
        conn.tunnel_name = tunnel_name
        conn.ensure()  # a connection that cannot open is not kept, and the current one stays current
        self.connections[alias] = conn
        return conn

    def _default_tunnel_name(self) -> str | None:
        if self.default_tunnel and self.default_tunnel in self.tunnels:
            return self.default_tunnel
        return self.current_tunnel or self.default_tunnel

    def _section(self, name: str) -> Any:
        from wgmagic.notebook.settings import read_connection

        return read_connection(self.dsn_filename, name)

    def close_all(self) -> None:
        for dashboard in self.dashboards:
            dashboard.close()
        self.dashboards.clear()
        for conn in self.connections.values():
            conn.close()
        self.connections.clear()
        for tunnel in self.tunnels.values():
            tunnel.close()
        self.tunnels.clear()
        self.current_tunnel = self.current_connection = None


WgMagic.wg.__doc__ = _wg_usage() + "\n`%wg COMMAND --help` for each command's arguments."


def _window(text: str) -> float:
    from wgmagic.addresses import parse_window

    try:
        return parse_window(text)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _guarded(what: str, handler: Any, *args: Any) -> Any:
    """Run a magic's handler so that every failure reaches the notebook as one short message with no secret
    in it: our own errors as they are (masked), usage mistakes as UsageError, and anything unexpected (an
    OSError from a bind, a ValueError from a library) as a WgMagicError naming the command."""
    try:
        return handler(*args)
    except UsageError as exc:
        raise UsageError(scrub(str(exc))) from None
    except WgMagicError as exc:
        raise _short(exc) from None
    except Exception as exc:
        detail = str(exc).strip().splitlines()
        error = WgMagicError(f"{what}: {type(exc).__name__}" + (f": {detail[0]}" if detail else ""))
        raise _short(error) from None


def _short(exc: BaseException) -> BaseException:
    """Our errors as one short message in the notebook (IPython honours _render_traceback_), secrets masked."""
    message = str(exc)
    masked = scrub(message)
    if masked != message:
        with contextlib.suppress(Exception):
            exc.args = (masked,)
    if not hasattr(exc, "_render_traceback_"):
        text = f"{type(exc).__name__}: {masked}"
        with contextlib.suppress(Exception):
            exc._render_traceback_ = lambda: text.splitlines()  # type: ignore[attr-defined]
    return exc


_KEYWORD_ARGUMENT = re.compile(r"^[A-Za-z_]\w*=")
_OPTIONS_WITH_VALUES = {"--alias", "-A", "-o", "--out", "--tunnel", "--limit", "--section", "-S", "--to", "--chunks"}


def _keyword_dsn_as_one_argument(line: str) -> str:
    """`%%wgsql host=db user=app password=x --alias a`: the libpq keyword=value words become one DSN argument
    (as libpq reads a conninfo string), so they are not taken for stray arguments and echoed back."""
    try:
        words = shlex.split(line)
    except ValueError:
        return line  # an unclosed quote: _parse reports it
    keywords = [index for index, word in enumerate(words) if _KEYWORD_ARGUMENT.match(word)
                and not (index > 0 and words[index - 1] in _OPTIONS_WITH_VALUES)]
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


def _affected(result: Any) -> str:
    if result.rowcount is not None and result.rowcount >= 0 and result.status.split(" ")[0] in (
            "INSERT", "UPDATE", "DELETE", "MERGE", "COPY", "SELECT", ""):
        return f"{result.rowcount} row{'s' if result.rowcount != 1 else ''} affected"
    return result.status or "done"


def _default_name(source: str, taken: dict[str, Any]) -> str:
    """The tunnel's name by the one rule of wgmagic.connect and `wgmagic up` (runtime.tunnel.default_name)."""
    from wgmagic.runtime.tunnel import default_name

    return default_name(source, {name for name, tunnel in taken.items() if not tunnel.closed})


class _PhaseBar:
    """A tqdm bar per bench phase (download, upload, latency), created lazily."""

    def __init__(self) -> None:
        self.bar: Any = None
        self.phase = ""

    def update(self, phase: str, fraction: float) -> None:
        try:
            from tqdm.auto import tqdm
        except ImportError:
            return
        if phase != self.phase:
            self.close()
            self.phase = phase
            self.bar = tqdm(total=100, desc=phase, leave=False, unit="%")
        self.bar.n = int(fraction * 100)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


@contextlib.contextmanager
def _progress_bar(threshold: float | None = 1.0) -> Any:
    """A progress callback (rows, bytes) that shows rows, MB and rows/s once a result has taken `threshold`
    seconds (None: no bar); wgmagic.sql.results reports progress only after its own PROGRESS_AFTER."""
    if threshold is None:
        yield None
        return
    from wgmagic.sql.progress import RowProgress

    progress = RowProgress()
    started = time.monotonic()

    def update(rows: int, size: int) -> None:
        if progress.bar is None and time.monotonic() - started < threshold:
            return
        progress(rows, size)

    try:
        yield update
    finally:
        progress.close()



WireGuardMagics = WgMagic  # the class's earlier name


class NotebookLogHandler(logging.Handler):
    """The `wgmagic` logger's warnings in a notebook: one plain line, "wgmagic: warning: ...", on the cell's
    stderr (looked up per record: the kernel replaces sys.stderr), never a Python warning with a source line."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            kind = "error" if record.levelno >= logging.ERROR else "warning"
            print(f"wgmagic: {kind}: {scrub(record.getMessage())}", file=sys.stderr)
        except Exception:
            self.handleError(record)


def install_log_handler() -> logging.Handler | None:
    """Show the library's warnings as plain lines, unless the user configured the `wgmagic` logger already."""
    logger = logging.getLogger("wgmagic")
    if logger.handlers:
        return None
    handler = NotebookLogHandler()
    logger.addHandler(handler)
    return handler
