"""Names and addresses inside the tunnel: DNS through the tunnel, and which addresses a connection may try.

Owns: resolving a name with the tunnel's DNS servers (never the host's resolver), and keeping the addresses
this tunnel can route (inside a peer's AllowedIPs, of a family the [Interface] has an Address of) in the
order connections try them (RFC 6724 section 6, families interleaved as RFC 8305 section 4). Never: opening
connections (connections.py, the services), or the peer's own Endpoint name (endpoint_lookup.py).
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from wgmagic.runtime.engine import Engine
    from wgmagic.runtime.loop import LoopThread

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def resolve(thread: LoopThread, engine: Engine, name: str, timeout: float) -> list[IPAddress]:
    """Resolve `name` through the tunnel's DNS (from any thread but the loop's): the A answers, then the AAAA.

    timeout: seconds for the whole resolution (search domains, retries and a TCP retry included; each query
    waits up to 2 s, then the next server is asked, RFC 1035 4.2.1 / resolv.conf's rotation). Raises
    NameNotFoundError, DNSTimeoutError, TunnelClosedError."""
    from wgmagic.runtime import resolver  # on use: dnspython is not imported with the tunnel

    result: list[IPAddress] = thread.run(resolver.resolve(engine, name, lifetime=timeout), timeout=timeout + 5)
    return result


def routable(engine: Engine, host: str, addresses: list[IPAddress]) -> list[IPAddress]:
    """`addresses` that this tunnel can reach, in the order connections try them; NoRouteError (with each
    address's reason) when none is usable. `host` is the name shown in that error."""
    usable: list[IPAddress] = engine.routes.select(addresses)
    if not usable:
        raise engine.routes.no_route(host.strip("[]"), addresses)
    return usable


def resolve_addresses(thread: LoopThread, engine: Engine, host: str, timeout: float = 5.0) -> list[IPAddress]:
    """The addresses of `host` (a literal, or a name resolved through the tunnel's DNS) that this tunnel can
    reach, in the order connections try them. Raises NoRouteError, NameNotFoundError, DNSTimeoutError."""
    try:
        addresses: list[IPAddress] = [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        addresses = resolve(thread, engine, host, timeout)
    return routable(engine, host, addresses)


async def resolve_routable_async(engine: Engine, host: str) -> list[IPAddress]:
    """resolve_addresses on the loop thread (the SOCKS5 server's domain-name CONNECTs)."""
    from wgmagic.runtime import resolver

    addresses: list[IPAddress] = await resolver.resolve(engine, host)
    return routable(engine, host, addresses)
