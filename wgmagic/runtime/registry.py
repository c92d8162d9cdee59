"""The open tunnels of this process: their names, the one-key rule, who holds each, and closing all at exit.

Owns: the table of open tunnels (name -> Tunnel, or HostedTunnel: a handle on a tunnel a host process serves,
runtime/hosted.py), the number of holders of each (every `connect()` that handed
the tunnel out), a tunnel's default name, and the refusal of a second tunnel with the same key to the same peer.
Never: sockets, threads or files (the tunnel and `keylock.py` own those); the lock across processes is
`keylock.py`'s.

Two tunnels with one private key to one peer take each other's traffic: a WireGuard peer knows one endpoint per
public key and moves it to whichever sender it last authenticated (roaming, whitepaper 2.1), so the older
tunnel's next keepalive or handshake silently steals the newer one's replies. So this process keeps one tunnel
per (key, peer) and hands it out again to every `connect()` for the same configuration.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import re
import threading
from collections.abc import Container, Iterator
from typing import TYPE_CHECKING, TypeVar, cast

from wgmagic.errors import TunnelConflictError

if TYPE_CHECKING:
    from typing import TypeAlias

    from wgmagic.config import WireGuardConfig
    from wgmagic.runtime.hosted import HostedTunnel
    from wgmagic.runtime.tunnel import Tunnel

    Held: TypeAlias = Tunnel | HostedTunnel  # what this table holds

HeldT = TypeVar("HeldT", bound="Tunnel | HostedTunnel")
logger = logging.getLogger("wgmagic.runtime.tunnel")  # the words of connect(), whichever module hands back

# Strong references: an open tunnel runs a thread and holds a socket until it closes, referenced or not, so it
# stays findable (get_tunnel, the one-key check) and the exit hook still closes it.
_open: dict[str, Held] = {}
_holders: dict[str, int] = {}
_lock = threading.RLock()


def close_hint(name: str) -> str:
    """How a user closes the open tunnel `name`: the Python call and the magic, for refusal messages."""
    return f"wgmagic.get_tunnel({name!r}).close(), or %wg disconnect {name}"


def default_name(source: str, taken: Container[str] = ()) -> str:
    """A tunnel's name when none is given, one rule for `wgmagic.connect`, `wgmagic up` and `%wg connect`: the
    config file's stem, as wg-quick names the interface (/etc/wireguard/wg0.conf -> wg0); "$var" (text from a
    notebook variable) -> var; other text -> wg0. A name an open tunnel of this process (or `taken`) already
    has gets a suffix: wg0-2, wg0-3, ... (text: wg1, wg2, ...)."""
    with _lock:
        if source.startswith("<"):  # text given directly: wg0, wg1, ... as wg-quick users number interfaces
            candidates: Iterator[str] = (f"wg{index}" for index in itertools.count())
        else:
            base = source[1:] if source.startswith("$") else os.path.splitext(os.path.basename(source))[0]
            base = re.sub(r"[^\w.-]", "_", base) or "wg"
            candidates = itertools.chain([base], (f"{base}-{index}" for index in itertools.count(2)))
        return next(n for n in candidates if n not in taken and not (n in _open and not _open[n].closed))


def find_twin(config: WireGuardConfig) -> Tunnel | None:
    """The open in-process tunnel of this process with the same private key to one of the same peers, if any
    (a HostedTunnel handle is not one: its tunnel runs in the host process)."""
    other = find_held(config)
    return None if other is None or getattr(other, "hosted", False) else cast("Tunnel", other)


def find_held(config: WireGuardConfig) -> Held | None:
    """The open tunnel or hosted handle of this process with the same private key to one of the same peers."""
    with _lock:
        peers = {p.public_key for p in config.peers}
        for other in _open.values():
            if other.closed or other.config.interface.private_key != config.interface.private_key:
                continue
            if peers & {p.public_key for p in other.config.peers}:
                return other
        return None


def register(tunnel: Held, name: str | None) -> str:
    """Enter a new tunnel (one holder) under `name` (None: `default_name(tunnel.config.source)`), before it
    starts, so a concurrent connect sees it; sets and returns `tunnel.name`.

    Raises TunnelConflictError when the name is taken or a tunnel with the same key to the same peer is open;
    the message names the calls that resolve it."""
    with _lock:
        name = name or default_name(tunnel.config.source)
        if name in _open:
            raise TunnelConflictError(f"a tunnel named {name!r} is already open: close it ({close_hint(name)}), or "
                                      "choose another name (name=... / %wg connect --name ...)")
        other = find_held(tunnel.config)
        if other is not None:
            raise TunnelConflictError(
                f"tunnel {other.name!r} is already up with this private key to the same peer; a WireGuard peer "
                "answers only the one of two such tunnels that spoke last, so both would lose traffic. "
                f"Use that tunnel (wgmagic.get_tunnel({other.name!r}), or wgmagic.connect() with the same "
                f"config, which hands it back), or close it first ({close_hint(other.name)})")
        tunnel.name = name
        _open[name] = tunnel
        _holders[name] = 1
        return name


def share(config: WireGuardConfig) -> Tunnel | None:
    """The running in-process tunnel to hand back to a `connect()` for `config`, with one more holder; None
    when no in-process tunnel of this process has this key and peer (see share_any).

    Raises TunnelConflictError when one has, but with another configuration (addresses, peers, AllowedIPs,
    DNS...): handing it back would give the caller something else than it asked for."""
    with _lock:
        if find_twin(config) is None:
            return None
        return cast("Tunnel", share_any(config))


def share_any(config: WireGuardConfig) -> Held | None:
    """`share` for in-process tunnels and hosted handles alike (wgmagic.connect's first question)."""
    with _lock:
        other = find_held(config)
        if other is None:
            return None
        if other.config.interface != config.interface or other.config.peers != config.peers:
            raise TunnelConflictError(
                f"tunnel {other.name!r} is already up with this private key to the same peer, with another "
                f"configuration; close it first ({close_hint(other.name)}), or connect with the same config to "
                "use it")
        _holders[other.name] = _holders.get(other.name, 0) + 1
        return other


def handed_back(running: HeldT, timeout: float) -> HeldT:
    """`running` (from share/share_any, one holder more) once its handshake is done, within `timeout` seconds;
    on failure that holder lets go (`close()`) and the error is raised."""
    try:
        running.wait_handshake(timeout=timeout)
    except BaseException:
        running.close()
        raise
    logger.info("tunnel %r is already up: handed back (%d holders)", running.name, running.holders)
    return running


def release(tunnel: Held) -> bool:
    """One holder lets go of `tunnel`: True when it was the last (the caller then closes the tunnel)."""
    with _lock:
        if _open.get(tunnel.name) is not tunnel:
            return True
        left = _holders.get(tunnel.name, 1) - 1
        _holders[tunnel.name] = left
        return left <= 0


def holders(tunnel: Held) -> int:
    """How many `connect()` calls hold `tunnel` now (0 once it is closed)."""
    with _lock:
        return _holders.get(tunnel.name, 0) if _open.get(tunnel.name) is tunnel else 0


def unregister(tunnel: Held) -> None:
    """Take a closed (or never started) tunnel out of the table."""
    with _lock:
        if _open.get(tunnel.name) is tunnel:
            del _open[tunnel.name]
            _holders.pop(tunnel.name, None)


def open_tunnels() -> list[Held]:
    """The open tunnels of this process (and handles on hosted ones), oldest first."""
    with _lock:
        return list(_open.values())


@atexit.register
def close_all() -> None:
    """Close every tunnel of this process, whoever holds it (at interpreter exit)."""
    for tunnel in open_tunnels():
        tunnel.close(force=True)
