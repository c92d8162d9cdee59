"""The local services of one tunnel: made, listed and closed here; `Tunnel` exposes them.

Owns: the five factories (a TCP forward, a UDP forward, a SOCKS5 proxy, a reverse forward, a packet capture),
the lists of what is open, and closing it all on the loop when the tunnel closes. Each service's own work is
in runtime/services/ (forward.py, udp_forward.py, socks.py, expose.py, capture.py), on the tunnel's loop
thread. Never: the user-facing docstrings (they stay on `Tunnel`'s methods), name resolution (routes.py).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Protocol, TypeVar

from wgmagic import platform
from wgmagic.addresses import format_address

if TYPE_CHECKING:
    from wgmagic.proto.forwarding import ForwardProtocol
    from wgmagic.runtime.engine import Engine
    from wgmagic.runtime.loop import LoopThread
    from wgmagic.runtime.routes import IPAddress
    from wgmagic.runtime.services.capture import Capture
    from wgmagic.runtime.services.expose import Exposed
    from wgmagic.runtime.services.forward import Forward
    from wgmagic.runtime.services.socks import Socks5Server
    from wgmagic.runtime.services.udp_forward import UdpForward
    from wgmagic.runtime.tunnel import Tunnel

logger = logging.getLogger(__name__)
S = TypeVar("S")


class _ClosesOnLoop(Protocol):
    def close_on_loop(self) -> None: ...


class TunnelServices:
    """The services one tunnel runs (thread-safe: each is built and closed on the tunnel's loop thread).

    `tunnel` is the owner: its routes (`resolve_addresses`) and, for exposes and captures, the handle they
    keep. Lists: `forwards`, `socks_servers`, `exposes`, `captures` (copies)."""

    def __init__(self, tunnel: Tunnel, thread: LoopThread, engine: Engine) -> None:
        self._tunnel = tunnel
        self._thread = thread
        self._engine = engine
        self._forwards: list[Forward | UdpForward] = []
        self._socks_servers: list[Socks5Server] = []
        self._exposes: list[Exposed] = []
        self._captures: list[Capture] = []

    # ---- factories ---------------------------------------------------------------------------------------
    def forward(self, target: str, local: str | int | None, *, idle_timeout: float | None,
                max_flows: int | None, clients: platform.ClientScope | None,
                protocol: ForwardProtocol | None = None, addresses: list[IPAddress] | None = None
                ) -> Forward | UdpForward:
        """`Tunnel.forward`: a TCP forward, or a UDP one for "udp:HOST:PORT". `protocol` None: PostgreSQL's
        for its well-known ports (wgmagic.proto.postgres.PORTS), else the neutral one."""
        from wgmagic.addresses import is_udp_target, parse_local, split_host_port
        from wgmagic.runtime.services.forward import Forward, ForwardSpec, default_protocol

        if is_udp_target(target):
            return self._udp_forward(target, local, idle_timeout, max_flows)
        host, port = split_host_port(target)
        where = parse_local(local)
        addresses = addresses or self._tunnel.resolve_addresses(host)
        spec = ForwardSpec(host, port, addresses[0], "unix", remote_addresses=tuple(addresses), clients=clients,
                           protocol=protocol or default_protocol(port))
        if where.kind == "unix":
            spec.socket_dir = where.socket_dir
        else:
            spec.local_kind, spec.bind_host, spec.bind_port = "tcp", where.bind_host, where.bind_port
        forward = self._thread.call(Forward, self._engine, spec)
        self._forwards.append(forward)
        if spec.fallback_reason:
            # A degraded mode, not a hole: the loopback guard still keeps other users out.
            guard = "this process" if spec.clients == "process" else "this user's processes"
            logger.warning("%s; this forward listens on TCP %s instead, and admits connections from %s only",
                           spec.fallback_reason, spec.bind_host, guard)
        return forward

    def _udp_forward(self, target: str, local: str | int | None, idle_timeout: float | None,
                     max_flows: int | None) -> UdpForward:
        from wgmagic.addresses import parse_udp_target
        from wgmagic.runtime.services.udp_forward import UdpForward, make_spec

        host, _port = parse_udp_target(target)
        spec = make_spec(target, local, self._tunnel.resolve_addresses(host), idle_timeout=idle_timeout,
                         max_flows=max_flows)
        forward = self._thread.call(UdpForward, self._engine, spec)
        self._forwards.append(forward)
        return forward

    def socks(self, port: int | None, host: str, credentials: tuple[str, str] | None, *, unix: str | None,
              no_auth: bool) -> Socks5Server:
        """`Tunnel.socks`: a Unix-socket proxy (port None) or a TCP one with credentials (or none, warned)."""
        from wgmagic.runtime.routes import resolve_routable_async
        from wgmagic.runtime.services.socks import Socks5Server, generate_credentials

        engine = self._engine

        async def resolver(name: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
            return await resolve_routable_async(engine, name)

        if port is None and host != "127.0.0.1" and unix is None:
            port = 0
        if port is None:
            if no_auth or credentials is not None:
                raise ValueError("a Unix-socket SOCKS proxy is private by its 0700 directory: credentials and "
                                 "no_auth are for a TCP port")
            server = self._thread.call(lambda: Socks5Server(engine, resolver, unix=True, unix_dir=unix))
        else:
            if no_auth and credentials is not None:
                raise ValueError("no_auth=True and credentials contradict each other")
            if no_auth:
                logger.warning("the SOCKS5 proxy on %s asks for no credentials: every user of this machine "
                               "can reach the private network through it", format_address((host, port)))
            elif credentials is None:
                credentials = generate_credentials()
            server = self._thread.call(Socks5Server, engine, resolver, host, port,
                                       None if no_auth else credentials)
        self._socks_servers.append(server)
        return server

    def expose(self, spec: str | int, target: str | None, *, allow: str | Iterable[str] | None,
               connect_timeout: float) -> Exposed:
        """`Tunnel.expose`: a reverse forward listening on the tunnel's addresses."""
        from wgmagic.addresses import parse_expose
        from wgmagic.runtime.services.expose import Exposed, ExposeListener, resolve_target

        text = spec if target is None else f"{spec}={target}"
        parsed = parse_expose(str(text), option="expose")
        networks = None if allow is None else [ipaddress.ip_network(n, strict=False) for n in (
            [allow] if isinstance(allow, str) else allow)]
        targets = resolve_target(parsed)
        listener = self._thread.call(lambda: ExposeListener(self._engine, parsed, targets,
                                                            connect_timeout=connect_timeout, allow=networks))
        exposed = Exposed(self._tunnel, listener, self.close_expose)
        self._exposes.append(exposed)
        return exposed

    def capture(self, file: str | os.PathLike[str] | None, *, seconds: float | None, max_packets: int,
                max_bytes: int, payload: bool, outer: bool) -> Capture:
        """`Tunnel.capture`: a pcapng capture of this tunnel, started at once."""
        from wgmagic.runtime.services.capture import Capture

        path = file or f"wgmagic-{self._tunnel.name}-{time.strftime('%Y%m%d-%H%M%S')}.pcapng"
        capture = Capture(self._tunnel, path, seconds=seconds, max_packets=max_packets, max_bytes=max_bytes,
                          payload=payload, outer=outer)
        self._captures = [c for c in self._captures if c.stopped_by is None] + [capture]
        return capture

    # ---- closing -----------------------------------------------------------------------------------------
    def close_forward(self, forward: Forward | UdpForward) -> None:
        """Close one forward (TCP or UDP) and take it off the list."""
        self._close(self._forwards, forward, forward.close_on_loop)

    def close_socks(self, server: Socks5Server) -> None:
        """Close one SOCKS5 proxy and take it off the list."""
        self._close(self._socks_servers, server, server.close_on_loop)

    def close_expose(self, exposed: Exposed) -> None:
        """Close one reverse forward and take it off the list (what `Exposed.close()` calls)."""
        self._close(self._exposes, exposed, exposed.listener.close_on_loop)

    def _close(self, services: list[S], service: S, close_on_loop: Callable[[], None]) -> None:
        """Take `service` off its list and run its `close_on_loop` on the loop thread; once that thread has
        stopped, the tunnel's close has closed it already."""
        if service in services:
            services.remove(service)
        if self._thread.running:
            self._thread.call(close_on_loop)

    def close_all(self, timeout: float = 5.0) -> None:
        """Close every capture, expose, forward and SOCKS proxy on the loop (the tunnel is closing); raises
        TimeoutError or TunnelClosedError when the loop does not answer."""
        for capture in self._captures:
            self._thread.call(capture.close_on_loop, timeout=timeout)
        for exposed in self._exposes:
            self._thread.call(exposed.listener.close_on_loop, timeout=timeout)
        listeners: list[_ClosesOnLoop] = [*self._forwards, *self._socks_servers]
        for listener in listeners:
            self._thread.call(listener.close_on_loop, timeout=timeout)
        self._forwards.clear()
        self._socks_servers.clear()
        self._exposes.clear()

    # ---- lists -------------------------------------------------------------------------------------------
    @property
    def forwards(self) -> list[Forward | UdpForward]:
        """The open forwards, TCP and UDP (a copy)."""
        return list(self._forwards)

    @property
    def socks_servers(self) -> list[Socks5Server]:
        """The open SOCKS5 proxies (a copy)."""
        return list(self._socks_servers)

    @property
    def exposes(self) -> list[Exposed]:
        """The open reverse forwards (a copy)."""
        return list(self._exposes)

    @property
    def captures(self) -> list[Capture]:
        """The captures started, the running one last (a copy)."""
        return list(self._captures)
