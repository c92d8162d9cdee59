"""A tunnel on the caller's asyncio loop: the same engine as `Tunnel`'s, no thread of its own.

`await connect_async(config)` brings the tunnel up on the running loop (or the `loop` given) and returns an
`AsyncTunnel` once the first handshake completed; everything it does then happens in callbacks of that loop,
exactly as on the tunnel's own thread (runtime/loop.py), because it is the same code: the `Engine` and its
transport, services and relays only ever use the loop they are given. What needs no thread needs none here:
an Endpoint that is an address literal is used as it is (a name goes through `loop.getaddrinfo`, which asyncio
serves from its executor), and the Endpoint is not followed when its name's addresses change (that follower
resolves in an executor; `Tunnel` has it).

Owns: bringing an engine up on a given loop, the transport ladder for --via auto, and the async faces of a
TCP connection (`open_connection`), a forward (`forward`) and a DNS lookup (`resolve`). Never blocks the loop.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
from types import TracebackType

from wgmagic.config import WireGuardConfig, load_config
from wgmagic.errors import HandshakeTimeoutError, TunnelClosedError
from wgmagic.netstack.tcp.config import TcpConfig
from wgmagic.netstack.tcp.connection import TcpConnection
from wgmagic.runtime import fallback
from wgmagic.runtime.engine import Engine
from wgmagic.runtime.relay import HappyEyeballs, SocketRelay
from wgmagic.runtime.seams import IPAddress
from wgmagic.runtime.services.forward import Forward, ForwardSpec, default_protocol
from wgmagic.runtime.transport import TransportKind
from wgmagic.via import Via, ViaMode
from wgmagic.wireguard.timers import Timers

logger = logging.getLogger(__name__)



class AsyncTunnel:
    """One tunnel served on `engine.loop` (see the module). Use it on that loop only; `async with` closes it.

    Raises TunnelClosedError from every call once closed."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.forwards: list[Forward] = []
        self.closed = False

    def __repr__(self) -> str:
        return f"<AsyncTunnel {'closed' if self.closed else 'open'} via {self.engine.carrier.transport.describe()}>"

    async def __aenter__(self) -> AsyncTunnel:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        trace: TracebackType | None) -> None:
        await self.aclose()

    def _check_open(self) -> None:
        if self.closed:
            raise TunnelClosedError("the tunnel is closed")

    async def wait_handshake(self, timeout: float = 10.0) -> float | None:
        """Start a handshake unless a session stands and wait for it: its RTT (seconds, None if one stood).
        Raises HandshakeTimeoutError (with why, after `timeout` seconds or the protocol's retries), or
        TransportError."""
        self._check_open()
        try:
            return await asyncio.wait_for(self.engine.wait_handshake(), timeout)
        except asyncio.TimeoutError:
            raise self.engine.no_handshake_error(next(iter(self.engine.peers.values())), timeout) from None

    async def resolve_addresses(self, host: str) -> list[IPAddress]:
        """The addresses of `host` (a literal, or a name resolved through the tunnel's DNS) this tunnel can
        reach, in connection order. Raises NoRouteError, NameNotFoundError, DNSTimeoutError."""
        self._check_open()
        try:
            found: list[IPAddress] = [ipaddress.ip_address(host.strip("[]"))]
        except ValueError:
            from wgmagic.runtime.resolver import resolve  # on use: dnspython is not imported with the tunnel

            found = await resolve(self.engine, host)
        usable = self.engine.routes.select(found)
        if not usable:
            raise self.engine.routes.no_route(host.strip("[]"), found)
        return usable

    async def open_connection(self, host: str, port: int, *, timeout: float = 15.0,
                              limit: int = 2**16) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A TCP connection through the tunnel to `host`:`port` as asyncio streams (RFC 8305 over the routable
        addresses, `timeout` seconds per attempt). The bytes go through a socket pair whose other end a
        SocketRelay serves on this loop. Raises ConnectionRefusedError, TimeoutError, NoRouteError, OSError."""
        addresses = await self.resolve_addresses(host)
        loop = self.engine.loop
        ours, theirs = socket.socketpair()
        outcome: asyncio.Future[None] = loop.create_future()

        def wake_ours() -> None:  # AF_UNIX has no RST: an unread byte makes the close a reset (relay.py)
            ours.send(b"\0", getattr(socket, "MSG_DONTWAIT", 0))

        def connected(conn: TcpConnection) -> None:
            SocketRelay(self.engine, theirs, conn, connected=True, wake_local_peer=wake_ours)
            if not outcome.done():
                outcome.set_result(None)

        def failed(error: BaseException) -> None:
            theirs.close()
            if not outcome.done():
                outcome.set_exception(error)

        attempt = HappyEyeballs(self.engine, addresses, port, timeout, connected, failed)
        try:
            await outcome
        except BaseException:
            attempt.close()
            ours.close()
            raise
        return await asyncio.open_connection(sock=ours, limit=limit)

    async def forward(self, target: str, *, local_port: int | None = None) -> Forward:
        """Relay each local connection to `target` ("db.internal:5432") through the tunnel, on this loop: a
        driver on the same loop (psycopg's AsyncConnection, asyncpg) connects to it without any thread.

        local_port None: a Unix socket in a fresh 0700 directory (`Forward.libpq_params()` names it), as
        `Tunnel.forward`'s default; a port: TCP on 127.0.0.1 (0: any free port), open to every local client as
        `ssh -L` is. Raises NoRouteError, NameNotFoundError, OSError (the listener)."""
        from wgmagic.addresses import split_host_port

        self._check_open()
        host, port = split_host_port(target)
        addresses = await self.resolve_addresses(host)
        spec = ForwardSpec(host, port, addresses[0], "unix", remote_addresses=tuple(addresses),
                           protocol=default_protocol(port))  # libpq's socket name on PostgreSQL's ports
        if local_port is not None:
            spec.local_kind, spec.bind_port, spec.clients = "tcp", local_port, "any"
        forward = Forward(self.engine, spec)
        self.forwards.append(forward)
        return forward

    async def aclose(self) -> None:
        """Close the forwards and the engine (its waiters fail with TunnelClosedError). Idempotent."""
        if self.closed:
            return
        self.closed = True
        for forward in self.forwards:
            forward.close_on_loop()
        self.forwards.clear()
        self.engine.close()
        await asyncio.sleep(0)  # let the closing callbacks run


async def _endpoints(config: WireGuardConfig, loop: asyncio.AbstractEventLoop,
                     via: Via) -> dict[bytes, list[tuple[str, int]]]:
    """Each peer's Endpoint addresses: a literal as it is; a name through loop.getaddrinfo (in order, once
    each); none over a WebSocket (the relay knows the peer)."""
    endpoints: dict[bytes, list[tuple[str, int]]] = {}
    for peer in config.peers:
        if peer.endpoint is None or via.mode is ViaMode.WEBSOCKET:
            endpoints[peer.public_key] = []
            continue
        host, port = peer.endpoint
        try:
            ipaddress.ip_address(host.strip("[]").partition("%")[0])
            endpoints[peer.public_key] = [(host.strip("[]"), port)]
            continue
        except ValueError:
            pass
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        found: list[tuple[str, int]] = []
        for family, _type, _proto, _name, sockaddr in infos:
            if family in (socket.AF_INET, socket.AF_INET6) and (str(sockaddr[0]), port) not in found:
                found.append((str(sockaddr[0]).partition("%")[0], port))
        endpoints[peer.public_key] = found
    return endpoints


async def connect_async(config: str | os.PathLike[str] | WireGuardConfig, *,
                        loop: asyncio.AbstractEventLoop | None = None, timeout: float = 10.0,
                        timers: Timers | None = None, tcp: TcpConfig | None = None, via: str | Via | None = None,
                        via_ca: str | None = None) -> AsyncTunnel:
    """Bring a tunnel up on `loop` (default: the running loop) and return once the first handshake completed.

    config, timeout (seconds for the handshake), timers, tcp, via, via_ca: as `wgmagic.connect`'s (via "auto"
    climbs `fallback.plan`'s ladder, the same as `connect()`). Raises ConfigError, HandshakeTimeoutError,
    TransportError, OSError (the UDP port cannot be bound)."""
    loop = loop or asyncio.get_running_loop()
    parsed = load_config(config)
    choice = fallback.choose(parsed, via, ca_file=via_ca)
    ladder = fallback.plan(choice, timeout)
    first = ladder.first.via if ladder.first.via.mode is ViaMode.WEBSOCKET else None
    engine = Engine(parsed, await _endpoints(parsed, loop, choice), loop=loop, timers=timers, via=first,
                    tcp_config=tcp)
    tunnel = AsyncTunnel(engine)
    try:
        engine.open()
        for step, rung in enumerate(ladder.rungs):
            if step:
                logger.warning("no answer over %s within %g s: switching to %s", ladder.rungs[step - 1].via.mode,
                               ladder.rungs[step - 1].wait, rung.via.mode)
                engine.carrier.switch(TransportKind.WEBSOCKET, rung.via)
            try:
                await tunnel.wait_handshake(rung.wait)
                break
            except HandshakeTimeoutError:
                if step == len(ladder.rungs) - 1:
                    raise
        engine.paths.follow(choice)  # --via auto: keep choosing the path for the whole session, as connect() does
    except BaseException:
        await tunnel.aclose()
        raise
    return tunnel
