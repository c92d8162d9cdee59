"""`%wg forward` (TCP and UDP), `%wg socks` and `%wg expose`: listeners relayed through the tunnel."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError

from wgmagic.addresses import format_address
from wgmagic.notebook.cmd.tunnels import find_tunnel
from wgmagic.notebook.variables import value

if TYPE_CHECKING:
    from wgmagic.notebook.magics import WgMagic
    from wgmagic.runtime.services.udp_forward import UdpForward


def forward(magic: WgMagic, args: argparse.Namespace) -> Any:
    """`%wg forward HOST:PORT [--local ...]`, or `udp:HOST:PORT [--idle-timeout S]`: the Forward object."""
    local: str | int | None = args.local
    if isinstance(local, str) and local.isdigit():
        local = int(local)
    target = value(magic.shell.user_ns, args.target) or ""
    if target.strip().lower().startswith("udp:"):
        return _forward_udp(magic, args, target, local)
    if args.idle_timeout is not None:
        raise UsageError("%wg forward: --idle-timeout is for UDP forwards (udp:HOST:PORT)")
    opened = find_tunnel(magic, args.tunnel).forward(target, local=local)
    params = opened.libpq_params()
    print(f"wgmagic: {format_address(opened.local_address)} -> {args.target}; libpq: "
          + " ".join(f"{k}={v}" for k, v in params.items()))
    return opened


def _forward_udp(magic: WgMagic, args: argparse.Namespace, target: str, local: str | int | None) -> UdpForward:
    from wgmagic.runtime.services.udp_forward import UdpForward

    try:
        opened = find_tunnel(magic, args.tunnel).forward(target, local=local, idle_timeout=args.idle_timeout)
    except ValueError as exc:
        raise UsageError(f"%wg forward: {exc}") from None
    assert isinstance(opened, UdpForward)  # a "udp:" target makes a UDP forward
    where = opened.local_address
    shown = where if isinstance(where, str) else f"udp {format_address(where)}"
    print(f"wgmagic: {shown} -> {opened.target} (a flow per client address; idle flows end after "
          f"{opened.spec.idle_timeout:g} s)")
    return opened


def socks(magic: WgMagic, args: argparse.Namespace) -> Any:
    """`%wg socks [PORT] [--unix DIR] [--no-auth]`: the SOCKS5 server; TCP credentials are shown once."""
    if args.port is None and args.no_auth:
        raise UsageError("%wg socks: --no-auth is for a TCP port (%wg socks PORT --no-auth)")
    if args.port is not None and args.unix:
        raise UsageError("%wg socks: give a PORT or --unix DIR, not both")
    try:
        server = find_tunnel(magic, args.tunnel).socks(args.port, unix=args.unix, no_auth=args.no_auth)
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


def expose(magic: WgMagic, args: argparse.Namespace) -> Any:
    """`%wg expose [ADDR:]PORT=HOST:PORT [--allow CIDR]` (like ssh -R), or `--close PORT`."""
    tunnel = find_tunnel(magic, args.tunnel)
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
        exposed = tunnel.expose(value(magic.shell.user_ns, args.spec) or "", allow=args.allow)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    where = ", ".join(f"[{a}]:{exposed.port}" if a.version == 6 else f"{a}:{exposed.port}"
                      for a in exposed.addresses)
    print(f"wgmagic: peers reach {exposed.expose.target_host}:{exposed.expose.target_port} at {where}")
    return exposed
