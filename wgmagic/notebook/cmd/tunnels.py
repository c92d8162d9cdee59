"""`%wg connect`, `%wg disconnect`, `%wg status`, and the lookups of the magic's tunnel registry
(`WgMagic.tunnels`: name -> Tunnel, or HostedTunnel for a tunnel shared through its key's host process, with
`current_tunnel` and the `default_tunnel` setting)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError

from wgmagic.errors import ConfigError
from wgmagic.notebook.prefetch import PREFETCH
from wgmagic.notebook.variables import config_text

if TYPE_CHECKING:
    from wgmagic.notebook.magics import WgMagic
    from wgmagic.runtime.tunnel import Tunnel


def find_tunnel(magic: WgMagic, name: str | None = None) -> Tunnel:
    """The named tunnel, or the default/current one; a UsageError that says what to do when there is none."""
    if name is None and magic.default_tunnel and magic.default_tunnel in magic.tunnels:
        name = magic.default_tunnel
    name = name or magic.current_tunnel
    if name is None or name not in magic.tunnels:
        if not magic.tunnels:
            again = f" --name {name}" if name else ""
            raise UsageError(f"no tunnel is up: run %wg connect CONFIG{again} first")
        raise UsageError(f"no tunnel named {name!r} (up: {', '.join(magic.tunnels)}): "
                         f"%wg connect CONFIG --name {name} brings it back")
    tunnel: Tunnel = magic.tunnels[name]
    if tunnel.closed:
        raise UsageError(f"tunnel {name!r} was disconnected: %wg connect it again")
    return tunnel


def default_tunnel_name(magic: WgMagic) -> str | None:
    """The tunnel a command without --tunnel uses: the `default_tunnel` setting when it is up, else the current
    one, else the setting's name (so the error names it)."""
    if magic.default_tunnel and magic.default_tunnel in magic.tunnels:
        return magic.default_tunnel
    return magic.current_tunnel or magic.default_tunnel


def _default_name(source: str, taken: dict[str, Tunnel]) -> str:
    """The tunnel's name by the one rule of wgmagic.connect and `wgmagic up` (runtime.tunnel.default_name)."""
    from wgmagic.runtime.tunnel import default_name

    return default_name(source, {name for name, tunnel in taken.items() if not tunnel.closed})


def connect(magic: WgMagic, args: argparse.Namespace) -> None:
    """`%wg connect CONFIG [--name N] [--timeout S] [--via ...] [--share]`: up after the first handshake, or an
    error. --share (or `WgMagic.share`, else $WGMAGIC_SHARE): the key's host process runs the tunnel for every
    notebook on the key; without it, a key another notebook shares is attached to as well."""
    from wgmagic.config import parse_config, private_key_prompt
    from wgmagic.errors import TunnelConflictError
    from wgmagic.netstack.tcp.config import tunnel_config
    from wgmagic.runtime.hosted import NotSharedError, not_shared_text
    from wgmagic.runtime.share import connect

    text, source = config_text(magic.shell.user_ns, args.config)
    config = parse_config(text, source=source, ask_private_key=private_key_prompt())
    if not config.peers:
        raise ConfigError("has no [Peer] section: there is nothing to connect to", source=source)
    name = args.name
    if name is None and magic.default_tunnel and (
            magic.default_tunnel not in magic.tunnels or magic.tunnels[magic.default_tunnel].closed):
        name = magic.default_tunnel
    name = name or _default_name(source, magic.tunnels)
    if name in magic.tunnels and not magic.tunnels[name].closed:
        magic.tunnels[name].close()
    # The prefetch thread's imports (the SQL driver, the DNS library, pandas) share the GIL with this thread: the
    # tunnel's own modules load first, so that the prefetch runs while the handshake is in flight, not while the
    # code that sends it is still being imported.
    import wgmagic.runtime.tunnel  # noqa: F401

    PREFETCH.start()
    share = True if getattr(args, "share", None) else getattr(magic, "share", None)
    try:
        tunnel = connect(config, name=name, timeout=magic.timeout if args.timeout is None else args.timeout,
                         share=share, tcp=tunnel_config(user_timeout=magic.tcp_user_timeout),
                         via=getattr(args, "via", None), via_ca=getattr(args, "via_ca", None),
                         note=lambda message: print(f"wgmagic: {message}"))
    except NotSharedError as exc:  # the same facts, with what a notebook user runs
        raise TunnelConflictError(not_shared_text(exc.owner, exc.peer, notebook=True)) from None
    held = _registered_as(magic, tunnel)
    if held is not None or tunnel.name != name:
        # wgmagic.connect handed back a running tunnel with the same key and peer (one holder more): the magic
        # registers it once, under its own name, so status lists it once and disconnect closes it once.
        if held is not None:
            tunnel.close()  # the magic holds it already: let go of the holder this connect added
        else:
            held = tunnel.name if magic.tunnels.get(tunnel.name) in (None, tunnel) or \
                magic.tunnels[tunnel.name].closed else name
            magic.tunnels[held] = tunnel
        magic.current_tunnel = held
        print(f"wgmagic: tunnel {held!r} is already up (same key and peer): using it")
        return
    magic.tunnels[name] = tunnel
    magic.current_tunnel = name
    from wgmagic.runtime import lifecycle

    lifecycle.before_exit(magic.close_all)  # a kernel's exit or SIGTERM: %%wgsql sessions say goodbye first
    rtt = tunnel.stats().get("handshake_rtt")
    shown = f" (handshake {rtt * 1000:.1f} ms)" if isinstance(rtt, float) else ""
    if tunnel.via is not None or getattr(tunnel, "hosted", False):
        shown += f" over {tunnel.transport_description}"
    print(f"wgmagic: tunnel {name!r} is up{shown}")


def _registered_as(magic: WgMagic, tunnel: Tunnel) -> str | None:
    """The name under which the magic's registry holds this (open) tunnel already, else None."""
    return next((key for key, held in magic.tunnels.items() if held is tunnel and not held.closed), None)


def status(magic: WgMagic, args: argparse.Namespace) -> Any:
    """`%wg status [N]`: a TunnelStatus (one tunnel) or a table of them (every tunnel)."""
    from wgmagic.notebook.status import TunnelStatus

    names = [args.name] if args.name else list(magic.tunnels)
    if not names:
        print("wgmagic: no tunnel is up (%wg connect CONFIG)")
        return None
    rows = [TunnelStatus.of(find_tunnel(magic, name), magic.connections.values()) for name in names]
    return rows[0] if len(rows) == 1 else TunnelStatus.many(rows)


def disconnect(magic: WgMagic, args: argparse.Namespace) -> None:
    """`%wg disconnect [N] [--all]`: the tunnel closes with its forwards; its SQL connections close but stay
    known, so that once `%wg connect --name N` brings it back their next cell reconnects (as after a flap)."""
    names = list(magic.tunnels) if args.all else [args.name or magic.current_tunnel]
    if names == [None]:
        raise UsageError("no tunnel is up")
    for name in names:
        if name not in magic.tunnels:
            raise UsageError(f"no tunnel named {name!r}")
        for conn in magic.connections.values():
            if conn.tunnel_name == name:
                conn.close()
        magic.tunnels.pop(name).close()
        print(f"wgmagic: tunnel {name!r} closed")
    if magic.current_tunnel not in magic.tunnels:
        magic.current_tunnel = next(iter(magic.tunnels), None)
