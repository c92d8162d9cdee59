"""The client commands of the command line: `wgmagic up`, `ping`, `resolve`, `status`, `doctor`, `demo`."""

from __future__ import annotations

import argparse
import math
import time

from wgmagic.cli.common import (
    client_config,
    listener_named,
    parse_dynamic_spec,
    parse_local_spec,
    parse_remote_spec,
    show_status_until,
    stop_on_signals,
    timers_from_environment,
)
from wgmagic.errors import WgMagicError
from wgmagic.notebook.status import tunnel_status_line, tunnel_status_report


def cmd_ping(args: argparse.Namespace) -> int:
    from wgmagic.runtime.tunnel import connect

    started = time.monotonic()
    tunnel = connect(client_config(args.config), timeout=args.handshake_timeout, timers=timers_from_environment(),
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


def cmd_up(args: argparse.Namespace) -> int:
    from wgmagic.addresses import format_address, format_host
    from wgmagic.runtime.tunnel import connect

    tunnel = connect(client_config(args.config), timeout=args.handshake_timeout, timers=timers_from_environment(),
                     via=getattr(args, "via", None), via_ca=getattr(args, "via_ca", None))
    stopping = stop_on_signals()
    try:
        for spec in args.local:
            with listener_named("-L", spec):
                if spec.strip().lower().startswith("udp:"):
                    _start_udp_forward(tunnel, spec)
                    continue
                bind, port, target = parse_local_spec(spec)
                forward = tunnel.forward(target, local=f"{format_host(bind)}:{port}")
            print(f"forwarding {format_address(forward.local_address)} -> {target} through the tunnel", flush=True)
        for spec in args.remote:
            with listener_named("-R", spec):
                exposed = tunnel.expose(parse_remote_spec(spec))
            where = ", ".join(format_address((a, exposed.port)) for a in exposed.addresses)
            print(f"exposing {exposed.expose.target_host}:{exposed.expose.target_port} on the tunnel at {where}",
                  flush=True)
        for spec in args.dynamic:
            with listener_named("-D", spec):
                _start_socks(tunnel, spec, args.no_auth)
        print("tunnel up; Ctrl-C to stop", flush=True)
        show_status_until(stopping, lambda: tunnel_status_line(tunnel), args.quiet)
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
    bind, port = parse_dynamic_spec(spec)
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


def cmd_resolve(args: argparse.Namespace) -> int:
    from wgmagic.runtime.tunnel import connect

    with connect(client_config(args.config), timeout=args.handshake_timeout, via=args.via,
                 via_ca=args.via_ca) as tunnel:
        for address in tunnel.resolve(args.name):
            print(address)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from wgmagic.runtime.tunnel import connect

    started = time.monotonic()
    with connect(client_config(args.config), timeout=args.handshake_timeout, via=args.via,
                 via_ca=args.via_ca) as tunnel:
        elapsed = time.monotonic() - started
        print(tunnel_status_report(tunnel, handshake_seconds=elapsed))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from wgmagic.demo.run import main as demo_main

    return demo_main(args.headless, args.output_dir, serve=args.serve)


def cmd_doctor(args: argparse.Namespace) -> int:
    from wgmagic.tools.doctor import MARK, run_doctor

    def show(check: object) -> None:
        print(f"{MARK[check.verdict]} {check.name}: {check.detail}", flush=True)  # type: ignore[attr-defined]
        if check.fix:  # type: ignore[attr-defined]
            print(f"    fix: {check.fix}", flush=True)  # type: ignore[attr-defined]

    report = run_doctor(args.config, target=args.target, timeout=args.timeout, progress=show)
    from wgmagic.runtime.health import doctor_health

    print(f"doctor: {doctor_health(report.checks).word}")
    return 0 if report.healthy else 1
