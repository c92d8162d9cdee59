"""The `wgmagic` console script: the parser and main(). The commands live in `client.py` (up, ping, resolve,
status, doctor, demo) and `servers.py` (relay, gateway); `common.py` holds what they share."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence

from wgmagic._version import __version__
from wgmagic.cli.client import cmd_demo, cmd_doctor, cmd_ping, cmd_resolve, cmd_status, cmd_up
from wgmagic.cli.servers import cmd_gateway, cmd_relay
from wgmagic.errors import WgMagicError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wgmagic", description="User-mode WireGuard and TCP/IP, no root needed.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log what wgmagic does: -v lifecycle (tunnels, forwards), -vv debug detail")
    sub = parser.add_subparsers(dest="command", required=True)

    ping = sub.add_parser("ping", help="ICMP echo through the tunnel, like ping")
    ping.add_argument("config", help="wg-quick configuration file")
    ping.add_argument("host", help="tunnel address to ping (IPv4 or IPv6)")
    ping.add_argument("-c", "--count", type=int, default=4, help="number of echo requests (default 4)")
    ping.add_argument("-i", "--interval", type=float, default=1.0, help="seconds between requests (default 1)")
    ping.add_argument("-W", "--wait", type=float, default=2.0, help="seconds to wait for each reply (default 2)")
    ping.add_argument("-s", "--size", type=int, default=56, help="payload bytes (default 56)")
    ping.add_argument("--handshake-timeout", type=float, default=10.0,
                      help="seconds to wait for the first handshake (default 10)")
    _add_via_arguments(ping)
    ping.set_defaults(func=cmd_ping)

    up = sub.add_parser("up", help="bring a tunnel up with local forwards and/or a SOCKS5 proxy (like ssh -L/-D)")
    up.add_argument("config", help="wg-quick configuration file")
    up.add_argument("-L", dest="local", action="append", default=[], metavar="[udp:][bind:]port:host:hostport",
                    help="forward a local TCP port (udp:...: a UDP port) through the tunnel (repeatable)")
    up.add_argument("-R", dest="remote", action="append", default=[], metavar="[tunnel_address:]port:host:hostport",
                    help="listen on the tunnel address at port and relay peers' connections to host:hostport on "
                         "this machine, like ssh -R (repeatable)")
    up.add_argument("-D", dest="dynamic", action="append", default=[], metavar="[bind:]port|unix[:DIR]",
                    help="run a SOCKS5 proxy: on this local TCP port with a generated username and password "
                    "(printed once), or on a Unix socket in a private directory (repeatable)")
    up.add_argument("--no-auth", action="store_true",
                    help="a TCP -D proxy without credentials: every local user can use the tunnel (warns)")
    up.add_argument("-q", "--quiet", action="store_true", help="no live status line")
    up.add_argument("--handshake-timeout", type=float, default=10.0)
    _add_via_arguments(up)
    up.set_defaults(func=cmd_up)

    resolve = sub.add_parser("resolve", help="resolve a name through the tunnel's DNS")
    resolve.add_argument("config")
    resolve.add_argument("name")
    resolve.add_argument("--handshake-timeout", type=float, default=10.0)
    _add_via_arguments(resolve)
    resolve.set_defaults(func=cmd_resolve)

    status = sub.add_parser("status", help="one handshake, then a report of the tunnel")
    status.add_argument("config")
    status.add_argument("--handshake-timeout", type=float, default=10.0)
    _add_via_arguments(status)
    status.set_defaults(func=cmd_status)

    gateway = sub.add_parser("gateway", help="be the other end: a rootless WireGuard responder relaying to local "
                             "services")
    gateway.add_argument("config", help="wg-quick file: [Interface] with ListenPort and Address, one [Peer] per client")
    gateway.add_argument("--expose", action="append", default=[], metavar="[ADDR:]PORT=HOST:PORT",
                         help="relay tunnel TCP to ADDR:PORT on to HOST:PORT here (repeatable)")
    gateway.add_argument("--name", action="append", default=[], metavar="NAME=ADDR[,ADDR]",
                         help="answer DNS for NAME on the tunnel addresses (repeatable)")
    gateway.add_argument("-q", "--quiet", action="store_true", help="no live status line")
    gateway.add_argument("--websocket", metavar="[ADDR:]PORT",
                         help="also accept WireGuard over WebSocket here (for clients whose UDP is blocked; "
                         "ADDR defaults to 127.0.0.1, PORT 0 picks a free one)")
    gateway.add_argument("--tls-cert", help="with --websocket: serve wss:// with this certificate (PEM)")
    gateway.add_argument("--tls-key", help="with --websocket: the certificate's private key (PEM)")
    gateway.add_argument("--path", help="with --websocket: the URL path (default /wg; / with --framing fly)")
    _add_framing_argument(gateway)
    gateway.set_defaults(func=cmd_gateway)

    relay = sub.add_parser("relay", help="accept WireGuard over WebSocket and relay it to a WireGuard server's "
                           "UDP port (rootless; next to kernel WireGuard, wireguard-go or wgmagic gateway)")
    relay.add_argument("--listen", required=True, metavar="[ADDR:]PORT",
                       help="where to accept WebSocket clients (ADDR defaults to 127.0.0.1; 0.0.0.0 for all)")
    relay.add_argument("--to", required=True, metavar="HOST:PORT", help="the WireGuard server's UDP port (the "
                       "only place this relay ever sends to)")
    relay.add_argument("--tls-cert", help="serve wss:// with this certificate (PEM)")
    relay.add_argument("--tls-key", help="the certificate's private key (PEM)")
    relay.add_argument("--path", help="the URL path clients use (default /wg; / with --framing fly)")
    _add_framing_argument(relay)
    relay.add_argument("--max-clients", type=int, default=1024, help="clients at once (default 1024)")
    relay.add_argument("--idle-timeout", type=float, default=600.0,
                       help="close a client that sent nothing for this many seconds (default 600)")
    relay.set_defaults(func=cmd_relay)

    demo = sub.add_parser("demo", help="a local PostgreSQL behind a local rootless gateway, and the quickstart "
                          "notebook connected to it")
    mode = demo.add_mutually_exclusive_group()
    mode.add_argument("--headless", action="store_true",
                      help="execute the notebook and write it (and an HTML copy) instead of opening JupyterLab")
    mode.add_argument("--serve", action="store_true",
                      help="no notebook: keep the database and the gateway running for your own IPython, script "
                           "or editor (prints what to paste) until Ctrl-C or SIGTERM")
    demo.add_argument("--output-dir", help="where the demo's files go (default ./wgmagic-demo)")
    demo.set_defaults(func=lambda args: cmd_demo(args))

    doctor = sub.add_parser("doctor", help="check a config and the path through it, step by step, in plain words")
    doctor.add_argument("config")
    doctor.add_argument("target", nargs="?", help="HOST:PORT (or HOST) on the private network to check too")
    doctor.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the handshake (default 5)")
    doctor.set_defaults(func=cmd_doctor)
    return parser


def _add_framing_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--framing", choices=("binary", "fly"), default="binary",
                        help="how datagrams lie in the WebSocket: binary (one per message, wgmagic's --via "
                        "ws(s)://) or fly (Fly.io's gateway framing: flyctl, --via fly+wss://)")


def _add_via_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--via", metavar="udp|auto|fly|URL", help="how to reach the peer: udp, a ws:// or wss:// "
                        "URL of a `wgmagic relay` (for networks that block UDP), fly (Fly.io's gateway over "
                        "WebSocket; or fly+wss://HOST/), or auto (UDP first, then the config's #@wgmagic Via URL, "
                        "or Fly's WebSocket for a Fly gateway); default $WGMAGIC_VIA, else the config, else udp")
    parser.add_argument("--via-ca", metavar="FILE", help="CA file to verify a wss:// relay with (default "
                        "$WGMAGIC_VIA_CA, else the system trust store)")


class PlainFormatter(logging.Formatter):
    """A record as one line for a user: "wgmagic: warning: ..." ("error:" above, nothing more below)."""

    def format(self, record: logging.LogRecord) -> str:
        kind = "error: " if record.levelno >= logging.ERROR else "warning: " if record.levelno >= logging.WARNING \
            else ""
        return f"wgmagic: {kind}{record.getMessage()}"


def _configure_logging(verbosity: int) -> None:
    """The library logs through the `wgmagic` logger hierarchy; the CLI shows warnings (degraded modes such as a
    forward on guarded loopback TCP) and, with -v/-vv, lifecycle and debug records on stderr."""
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(PlainFormatter() if verbosity <= 0
                         else logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    handler.set_name("wgmagic-cli")
    logger = logging.getLogger("wgmagic")
    for old in [h for h in logger.handlers if h.get_name() == "wgmagic-cli"]:  # main() called again in-process
        logger.removeHandler(old)
    logger.addHandler(handler)
    logger.setLevel(level)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except (WgMagicError, OSError, ValueError) as exc:
        from wgmagic.connstr import mask_all_secrets

        print(f"wgmagic: {mask_all_secrets(str(exc))}", file=sys.stderr)
        return 2
