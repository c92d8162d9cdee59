"""Which tunnel `wgmagic.connect()` returns: this process's own, or a handle on the key's host process.

`connect(config)` in order: this process has the key up already -> that tunnel or handle, one holder more
(registry.py); share (the argument, else $WGMAGIC_SHARE) -> attach to the key's host (runtime/hosted.py),
starting it if needed; else the in-process tunnel (runtime/tunnel.py), and when another process holds the key:
its host if it runs one (attached automatically), else NotSharedError saying to connect with share=True in
each process.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from wgmagic.config import WireGuardConfig, check_peer_keys, load_config
from wgmagic.errors import TunnelClosedError, TunnelConflictError
from wgmagic.runtime import keylock, registry
from wgmagic.runtime.hosted import SHARE_ENV, START_MARGIN, HostedTunnel, NotSharedError

if TYPE_CHECKING:
    from wgmagic.netstack.tcp.config import TcpConfig
    from wgmagic.runtime import endpoint_lookup
    from wgmagic.runtime.tunnel import Tunnel
    from wgmagic.via import Via
    from wgmagic.wireguard.timers import Timers

logger = logging.getLogger(__name__)


def share_default(share: bool | None) -> bool:
    """`share` as given, else $WGMAGIC_SHARE (1/true/yes/on: share), else False."""
    if share is not None:
        return bool(share)
    return os.environ.get(SHARE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def connect(config: str | os.PathLike[str] | WireGuardConfig, *, name: str | None = None,
            timeout: float = 10.0, share: bool | None = None, timers: Timers | None = None,
            tcp: TcpConfig | None = None, endpoint_resolver: endpoint_lookup.EndpointResolver | None = None,
            reresolve_interval: float = 120.0, via: str | Via | None = None, via_ca: str | None = None,
            note: Callable[[str], None] | None = None) -> Tunnel | HostedTunnel:
    """Bring up a tunnel, or use the one already up for this key, and return once its handshake is done.

    config: a wg-quick file's path or text (or a parsed WireGuardConfig). name: the tunnel's name (default: the
    file's stem). timeout: seconds to wait for the first handshake.
    share: True: the tunnel runs in the key's host process (started if none runs; it outlives this process
    and closes 2 s after the last process let go), and this process gets a `HostedTunnel`: every process of
    this user on the same key may use it, and forwards are relayed by the host, so a driver that holds its
    GIL while it waits on a socket (ConnectorX's pandas path) cannot stall them. None: $WGMAGIC_SHARE.
    False (the default): a `Tunnel` in this process while the key is free; when another process already
    serves the key through a host, a HostedTunnel on it (no TunnelConflictError).
    via: "udp", a ws:// or wss:// URL (to a `wgmagic relay`), "fly" or fly+wss:// (Fly.io's gateway framing),
    or "auto" / "auto URL" (UDP first, then the WebSocket, for the whole session; `note(sentence)` hears each
    switch); unset: $WGMAGIC_VIA, else the config's `#@wgmagic Via = ...`, else UDP. via_ca: a CA file for
    wss://. tcp: the TCP knobs of the tunnel's connections (default: a 30 s user timeout, 15/5/3 keep-alives).
    timers, endpoint_resolver, reresolve_interval (seconds): for tests and unusual networks.
    Connecting again is not an error: a config already up in this process is handed back with one holder
    more; `close()` (or the `with` block) lets go, the last closes it. A hosted tunnel takes `via`, `via_ca`
    and `timeout` only when it starts the host (the host's own TCP settings are the defaults).
    Raises ConfigError, EndpointUnresolvableError, HandshakeTimeoutError, TransportError (the WebSocket, its
    TLS or an HTTP proxy refused); NotSharedError (a TunnelConflictError) when another process holds the key
    with a tunnel of its own; TunnelConflictError when this process has the key up unshared and share=True is
    asked, or the same key and peer are up with another config.
    """
    from wgmagic.runtime import tunnel as in_process

    parsed = load_config(config)
    check_peer_keys(parsed)
    share = share_default(share)
    running = registry.share_any(parsed)
    if running is not None:
        if share and not isinstance(running, HostedTunnel):
            registry.release(running)
            raise TunnelConflictError(
                f"tunnel {running.name!r} is already up with this key inside this process, not shared: close it "
                f"first ({registry.close_hint(running.name)}), then connect with share=True (%wg connect --share)")
        return registry.handed_back(running, timeout)
    if share:
        return HostedTunnel.attach(parsed, name=name, timeout=timeout, via=via, via_ca=via_ca)
    deadline = time.monotonic() + timeout + START_MARGIN
    while True:
        try:
            return in_process.connect(parsed, name=name, timeout=timeout, timers=timers, tcp=tcp,
                                      endpoint_resolver=endpoint_resolver, reresolve_interval=reresolve_interval,
                                      via=via, via_ca=via_ca, note=note)
        except keylock.KeyInUseError as exc:
            # A host takes its host lock before the key's and lets go of it after: a held key with a free host
            # lock is another process's own tunnel.
            if not keylock.host_running(parsed):
                raise NotSharedError(exc.owner, exc.peer) from None
        logger.info("this key's tunnel is served by a host process: attaching to it")
        try:
            return HostedTunnel.attach(parsed, name=name, timeout=timeout, start=False)
        except TunnelClosedError:  # that host ended as we came: the key is free again, or soon
            if time.monotonic() > deadline:
                raise
