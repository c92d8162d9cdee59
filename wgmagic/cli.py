"""The `wgmagic` console script."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence

from wgmagic import __version__
from wgmagic.errors import WgMagicError
from wgmagic.notebook.status import gateway_status_line, tunnel_status_line, tunnel_status_report


def timers_from_environment() -> object | None:
    """WGMAGIC_TIMERS="rekey_after_time=3,rekey_timeout=1": a test-only way to shrink the protocol's constants."""
    text = os.environ.get("WGMAGIC_TIMERS", "").strip()
    if not text:
        return None
    from wgmagic.wireguard.timers import Timers

    names = {f.name for f in dataclasses.fields(Timers)}
    values: dict[str, float] = {}
    for item in text.split(","):
        key, _, value = item.partition("=")
        key = key.strip()
        if key not in names:
            raise WgMagicError(f"WGMAGIC_TIMERS: unknown timer {key!r}; known: {', '.join(sorted(names))}")
        try:
            values[key] = float(value)
        except ValueError:
            raise WgMagicError(f"WGMAGIC_TIMERS: {key} must be a number of seconds")
    return Timers(**values)


def _cmd_ping(args: argparse.Namespace) -> int:
    from wgmagic.runtime.tunnel import connect

    started = time.monotonic()
    tunnel = connect(_client_config(args.config), timeout=args.handshake_timeout, timers=timers_from_environment(),
                     via=args.via, via_ca=args.via_ca)
    try:
        print(ping_header(tunnel, args.host, args.size), flush=True)
        rtts: list[float] = []
        sent = 0
        for reply in tunnel.ping_iter(args.host, args.count, interval=args.interval, timeout=args.wait,
                                      size=args.size):
            sent += 1
            if reply.rtt is None:
                print(f"no answer for icmp_seq={reply.seq} within {args.wait:g} s", flush=True)
            else:
                rtts.append(reply.rtt * 1000)
                print(f"{reply.size + 8} bytes from {reply.host}: icmp_seq={reply.seq} time={reply.rtt * 1000:.3f} ms",
                      flush=True)
        elapsed = (time.monotonic() - started) * 1000
        loss = 100.0 * (sent - len(rtts)) / sent if sent else 100.0
        print(f"--- {args.host} wgmagic ping statistics ---")
        print(f"{sent} packets transmitted, {len(rtts)} received, {loss:g}% packet loss, time {elapsed:.0f}ms")
        if rtts:
            mean = sum(rtts) / len(rtts)
            mdev = math.sqrt(sum((r - mean) ** 2 for r in rtts) / len(rtts))
            print(f"rtt min/avg/max/mdev = {min(rtts):.3f}/{mean:.3f}/{max(rtts):.3f}/{mdev:.3f} ms")
        return 0 if rtts else 1
    finally:
        tunnel.close()


def ping_header(tunnel: object, host: str, size: int) -> str:
    """ping's first line: the peer's endpoint, and the WebSocket relay when the datagrams ride one."""
    from wgmagic.addresses import format_address
    from wgmagic.via import mask_url

    peer = tunnel.config.peers[0]  # type: ignore[attr-defined]
    where = f"peer at {format_address(peer.endpoint) if peer.endpoint else '?'}"
    via = getattr(tunnel, "via", None)
    if via is not None and via.url:
        where = f"{where}, over the WebSocket {mask_url(via.url)}"
    return f"PING {host} through wgmagic ({where}): {size} data bytes"


def _client_config(path: str) -> object:
    """The parsed wg-quick file of a client command; ConfigError (one line, exit 2) when it cannot work."""
    from wgmagic.config import load_config
    from wgmagic.errors import ConfigError

    config = load_config(path)
    if not config.peers:
        raise ConfigError("has no [Peer] section: there is nothing to connect to", source=config.source)
    return config


def _parse_local_spec(spec: str) -> tuple[str, int, str]:
    """ssh -L syntax: [bind:]port:host:hostport (IPv6 in brackets) -> (bind, port, "host:hostport")."""
    from wgmagic.addresses import AddressError, format_host, split_forward_spec

    try:
        bind, port, host, host_port = split_forward_spec(spec)
    except AddressError as exc:
        raise WgMagicError(f"-L {spec}: {exc.reason}") from None
    return bind or "127.0.0.1", port, f"{format_host(host)}:{host_port}"


def _parse_remote_spec(spec: str) -> str:
    """ssh -R syntax, [tunnel_address:]port:host:hostport, or [ADDR:]PORT=HOST:PORT -> the latter."""
    from wgmagic.addresses import AddressError, format_host, split_forward_spec

    if "=" in spec:
        return spec
    try:
        bind, port, host, host_port = split_forward_spec(spec)
    except AddressError as exc:
        raise WgMagicError(f"-R {spec}: {exc.reason}") from None
    listen = f"{format_host(bind)}:{port}" if bind else str(port)
    return f"{listen}={format_host(host)}:{host_port}"


def _parse_listen(text: str, option: str) -> tuple[str, int]:
    """[ADDR:]PORT (IPv6 in brackets; ADDR defaults to 127.0.0.1; port 0: the kernel chooses) -> (addr, port)."""
    from wgmagic.addresses import AddressError, split_host_port

    try:
        return split_host_port(text, default_host="127.0.0.1", low=0)
    except AddressError as exc:
        raise WgMagicError(f"{option} {text}: expected [ADDR:]PORT ({exc.reason})") from None


def _parse_dynamic_spec(spec: str) -> tuple[str, int]:
    if spec.startswith("unix"):
        raise WgMagicError(f"-D {spec}: a Unix socket is -D unix or -D unix:DIR")
    return _parse_listen(spec, "-D")


@contextlib.contextmanager
def _listener_named(option: str, spec: str) -> Iterator[None]:
    """An OSError while starting the listener of `option spec` (-L, -D, -R, --listen, --websocket, --expose)
    becomes one sentence that names that option and the listener's address (the error's own text)."""
    try:
        yield
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise WgMagicError(f"{option} {spec}: {reason}") from None


def _stop_on_signals() -> threading.Event:
    """An event set by Ctrl-C or SIGTERM: long-running commands end cleanly instead of dying mid-write."""
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    return stopping


def _show_status_until(stopping: threading.Event, status_line: Callable[[], str], quiet: bool) -> None:
    """A live one-line status on a terminal (once a second) until `stopping` is set."""
    live = not quiet and sys.stdout.isatty()
    while not stopping.wait(1.0):
        if live:
            print("\r" + status_line(), end="", flush=True)
    if live:
        print()


def _cmd_up(args: argparse.Namespace) -> int:
    from wgmagic.addresses import format_address, format_host
    from wgmagic.runtime.tunnel import connect

    tunnel = connect(_client_config(args.config), timeout=args.handshake_timeout, timers=timers_from_environment(),
                     via=getattr(args, "via", None), via_ca=getattr(args, "via_ca", None))
    stopping = _stop_on_signals()
    try:
        for spec in args.local:
            with _listener_named("-L", spec):
                if spec.strip().lower().startswith("udp:"):
                    _start_udp_forward(tunnel, spec)
                    continue
                bind, port, target = _parse_local_spec(spec)
                forward = tunnel.forward(target, local=f"{format_host(bind)}:{port}")
            print(f"forwarding {format_address(forward.local_address)} -> {target} through the tunnel", flush=True)
        for spec in args.remote:
            with _listener_named("-R", spec):
                exposed = tunnel.expose(_parse_remote_spec(spec))
            where = ", ".join(format_address((a, exposed.port)) for a in exposed.addresses)
            print(f"exposing {exposed.expose.target_host}:{exposed.expose.target_port} on the tunnel at {where}",
                  flush=True)
        for spec in args.dynamic:
            with _listener_named("-D", spec):
                _start_socks(tunnel, spec, args.no_auth)
        print("tunnel up; Ctrl-C to stop", flush=True)
        _show_status_until(stopping, lambda: tunnel_status_line(tunnel), args.quiet)
    finally:
        tunnel.close()
    print("tunnel closed", flush=True)
    return 0


def _start_socks(tunnel: object, spec: str, no_auth: bool) -> None:
    """-D unix[:DIR]: a Unix socket in a 0700 directory; -D [bind:]port: TCP with generated credentials, printed
    here once (or none with --no-auth, which warns)."""
    if spec == "unix" or spec.startswith("unix:"):
        if no_auth:
            raise WgMagicError("--no-auth is for a TCP -D [bind:]port; a Unix socket is private by its directory")
        server = tunnel.socks(unix=spec[5:] or None)  # type: ignore[attr-defined]
        print(f"SOCKS5 proxy on the Unix socket {server.address} (curl --proxy {server.proxy_url()})", flush=True)
        return
    bind, port = _parse_dynamic_spec(spec)
    from wgmagic.addresses import format_address

    server = tunnel.socks(port=port, host=bind, no_auth=no_auth)  # type: ignore[attr-defined]
    where = format_address(server.address)
    if server.credentials is None:
        print(f"SOCKS5 proxy on {where} without credentials: any local user can use it", flush=True)
    else:
        user, password = server.credentials
        print(f"SOCKS5 proxy on {where}, username {user} password {password} (shown only now; "
              f"curl --proxy {server.proxy_url(reveal=True)})", flush=True)


def _start_udp_forward(tunnel: object, spec: str) -> None:
    from wgmagic.addresses import parse_udp_listen_spec

    listen = parse_udp_listen_spec(spec)
    from wgmagic.addresses import format_address

    forward = tunnel.forward(listen.target, local=listen.local)  # type: ignore[attr-defined]
    print(f"forwarding udp {format_address(forward.local_address)} -> {listen.target} through the tunnel (flows "
          f"idle out after {forward.spec.idle_timeout:g} s)", flush=True)


def _cmd_resolve(args: argparse.Namespace) -> int:
    from wgmagic.runtime.tunnel import connect

    with connect(_client_config(args.config), timeout=args.handshake_timeout, via=args.via,
                 via_ca=args.via_ca) as tunnel:
        for address in tunnel.resolve(args.name):
            print(address)
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from wgmagic.runtime.tunnel import connect

    started = time.monotonic()
    with connect(_client_config(args.config), timeout=args.handshake_timeout, via=args.via,
                 via_ca=args.via_ca) as tunnel:
        elapsed = time.monotonic() - started
        print(tunnel_status_report(tunnel, handshake_seconds=elapsed))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from wgmagic.demo.run import main as demo_main

    return demo_main(args.headless, args.output_dir)


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
    ping.set_defaults(func=_cmd_ping)

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
    up.set_defaults(func=_cmd_up)

    resolve = sub.add_parser("resolve", help="resolve a name through the tunnel's DNS")
    resolve.add_argument("config")
    resolve.add_argument("name")
    resolve.add_argument("--handshake-timeout", type=float, default=10.0)
    _add_via_arguments(resolve)
    resolve.set_defaults(func=_cmd_resolve)

    status = sub.add_parser("status", help="one handshake, then a report of the tunnel")
    status.add_argument("config")
    status.add_argument("--handshake-timeout", type=float, default=10.0)
    _add_via_arguments(status)
    status.set_defaults(func=_cmd_status)

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
    gateway.set_defaults(func=_cmd_gateway)

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
    relay.set_defaults(func=_cmd_relay)

    demo = sub.add_parser("demo", help="a local PostgreSQL behind a local rootless gateway, and the quickstart "
                          "notebook connected to it")
    demo.add_argument("--headless", action="store_true",
                      help="execute the notebook and write it (and an HTML copy) instead of opening JupyterLab")
    demo.add_argument("--output-dir", help="where the demo's files go (default ./wgmagic-demo)")
    demo.set_defaults(func=lambda args: _demo(args))

    doctor = sub.add_parser("doctor", help="check a config and the path through it, step by step, in plain words")
    doctor.add_argument("config")
    doctor.add_argument("target", nargs="?", help="HOST:PORT (or HOST) on the private network to check too")
    doctor.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the handshake (default 5)")
    doctor.set_defaults(func=_cmd_doctor)
    return parser


def _add_framing_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--framing", choices=("binary", "fly"), default="binary",
                        help="how datagrams lie in the WebSocket: binary (one per message, wgmagic's --via "
                        "ws(s)://) or fly (Fly.io's gateway framing: flyctl, --via fly+wss://)")


def _websocket_path(args: argparse.Namespace) -> str:
    """--path, or the framing's usual one: / for fly (flyctl dials wss://HOST:443/), /wg otherwise."""
    return str(args.path or ("/" if args.framing == "fly" else "/wg"))


def _websocket_scheme(args: argparse.Namespace) -> str:
    """The URL scheme clients use: ws or wss, with fly+ for Fly's framing (as --via takes it)."""
    scheme = "wss" if args.tls_cert else "ws"
    return f"fly+{scheme}" if args.framing == "fly" else scheme


def _add_via_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--via", metavar="udp|auto|fly|URL", help="how to reach the peer: udp, a ws:// or wss:// "
                        "URL of a `wgmagic relay` (for networks that block UDP), fly (Fly.io's gateway over "
                        "WebSocket; or fly+wss://HOST/), or auto (UDP first, then the config's #@wgmagic Via URL, "
                        "or Fly's WebSocket for a Fly gateway); default $WGMAGIC_VIA, else the config, else udp")
    parser.add_argument("--via-ca", metavar="FILE", help="CA file to verify a wss:// relay with (default "
                        "$WGMAGIC_VIA_CA, else the system trust store)")


def _raise_file_limit(wanted: int) -> None:
    """Raise this process's open-file limit toward `wanted` (up to the hard limit), where there is one."""
    try:
        import resource
    except ImportError:  # not on Windows
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def _cmd_relay(args: argparse.Namespace) -> int:
    import asyncio
    import json

    from wgmagic.addresses import format_address, split_host_port
    from wgmagic.runtime.services.wsrelay import WebSocketRelay

    host, port = _parse_listen(args.listen, "--listen")
    target = split_host_port(args.to)
    if bool(args.tls_cert) != bool(args.tls_key):
        raise WgMagicError("--tls-cert and --tls-key go together")
    relay = WebSocketRelay(target, path=_websocket_path(args), max_clients=args.max_clients,
                           idle_timeout=args.idle_timeout, framing=args.framing)
    _raise_file_limit(2 * args.max_clients + 64)  # a TCP and a UDP socket per client

    async def serve() -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        with _listener_named("--listen", args.listen):
            bound = await relay.start(host, port, tls_cert=args.tls_cert, tls_key=args.tls_key)
        scheme = _websocket_scheme(args)
        shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
        print(f"relay listening on {scheme}://{shown}:{bound[1]}{relay.path} -> udp {format_address(target)}",
              flush=True)
        await stopping.wait()
        await relay.close()

    try:
        asyncio.run(serve())
    finally:
        print(json.dumps(relay.stats()), flush=True)
    return 0


def _cmd_gateway(args: argparse.Namespace) -> int:
    from wgmagic.addresses import parse_expose, parse_name
    from wgmagic.runtime.services.gateway import Gateway

    if not args.expose:
        raise ValueError("nothing to expose: give at least one --expose [ADDR:]PORT=HOST:PORT")
    exposes = [parse_expose(spec) for spec in args.expose]
    names = dict(parse_name(spec) for spec in args.name)
    stopping = _stop_on_signals()
    websocket = _parse_listen(args.websocket, "--websocket") if args.websocket else None
    try:
        gateway = Gateway(args.config, exposes, names, timers=timers_from_environment(), websocket=websocket,
                          tls_cert=args.tls_cert, tls_key=args.tls_key, websocket_path=_websocket_path(args),
                          websocket_framing=args.framing)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        spec = next((s for s, e in zip(args.expose, exposes, strict=True) if f"expose {e.target_host}:" in reason
                     and f"port {e.port} " in reason), None)
        if spec is not None:
            raise WgMagicError(f"--expose {spec}: {reason}") from None
        if "WebSocket" in reason and args.websocket:
            raise WgMagicError(f"--websocket {args.websocket}: {reason}") from None
        raise
    try:
        print(f"gateway listening on UDP port {gateway.listen_port}", flush=True)
        if gateway.websocket_address:
            host, port = gateway.websocket_address
            print(f"gateway accepting WebSocket clients on {_websocket_scheme(args)}://{host}:{port}"
                  f"{_websocket_path(args)}", flush=True)
        for expose in exposes:
            print(f"exposing {expose}", flush=True)
        for name, addresses in names.items():
            print(f"answering DNS: {name} -> {', '.join(map(str, addresses))}", flush=True)
        print("gateway up; Ctrl-C to stop", flush=True)
        _show_status_until(stopping, lambda: gateway_status_line(gateway), args.quiet)
    finally:
        websocket_stats = None
        if gateway.websocket_relay is not None:
            try:
                websocket_stats = gateway.stats().get("websocket")
            except Exception:  # the tunnel is already gone: nothing to report
                pass
        gateway.close()
    if websocket_stats is not None:
        import json

        print(f"gateway WebSocket counters: {json.dumps(websocket_stats)}", flush=True)
    print("gateway closed", flush=True)
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    from wgmagic.tools.doctor import MARK, run_doctor

    def show(check: object) -> None:
        print(f"{MARK[check.verdict]} {check.name}: {check.detail}", flush=True)  # type: ignore[attr-defined]
        if check.fix:  # type: ignore[attr-defined]
            print(f"    fix: {check.fix}", flush=True)  # type: ignore[attr-defined]

    report = run_doctor(args.config, target=args.target, timeout=args.timeout, progress=show)
    print("doctor: all checks passed" if report.healthy else "doctor: problems found")
    return 0 if report.healthy else 1


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
        from wgmagic.sql.connstr import mask_all_secrets

        print(f"wgmagic: {mask_all_secrets(str(exc))}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
