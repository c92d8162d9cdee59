"""The server commands of the command line: `wgmagic relay` (WebSocket to UDP) and `wgmagic gateway` (a
WireGuard peer in user space exposing local services)."""

from __future__ import annotations

import argparse
import contextlib
import signal

from wgmagic.cli.common import (
    listener_named,
    parse_listen,
    show_status_until,
    stop_on_signals,
    timers_from_environment,
)
from wgmagic.errors import WgMagicError
from wgmagic.notebook.status import gateway_status_line


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


def cmd_relay(args: argparse.Namespace) -> int:
    import asyncio
    import json

    from wgmagic.addresses import format_address, split_host_port
    from wgmagic.runtime.services.wsrelay import WebSocketRelay

    host, port = parse_listen(args.listen, "--listen")
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
        with listener_named("--listen", args.listen):
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


def cmd_gateway(args: argparse.Namespace) -> int:
    from wgmagic.addresses import parse_expose, parse_name
    from wgmagic.runtime.services.gateway import Gateway

    if not args.expose:
        raise ValueError("nothing to expose: give at least one --expose [ADDR:]PORT=HOST:PORT")
    exposes = [parse_expose(spec) for spec in args.expose]
    names = dict(parse_name(spec) for spec in args.name)
    stopping = stop_on_signals()
    websocket = parse_listen(args.websocket, "--websocket") if args.websocket else None
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
        show_status_until(stopping, lambda: gateway_status_line(gateway), args.quiet)
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


def _websocket_path(args: argparse.Namespace) -> str:
    """--path, or the framing's usual one: / for fly (flyctl dials wss://HOST:443/), /wg otherwise."""
    return str(args.path or ("/" if args.framing == "fly" else "/wg"))


def _websocket_scheme(args: argparse.Namespace) -> str:
    """The URL scheme clients use: ws or wss, with fly+ for Fly's framing (as --via takes it)."""
    scheme = "wss" if args.tls_cert else "ws"
    return f"fly+{scheme}" if args.framing == "fly" else scheme
