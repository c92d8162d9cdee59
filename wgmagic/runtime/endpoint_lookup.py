"""A peer's Endpoint name to addresses, at a tunnel's start: the system's resolver, in its order.

Owns: turning `Endpoint = host:port` into the (address, port) candidates the engine tries in turn, and the
error when a name has none. Never: the tunnel's own DNS (that is `routes.py`, for names inside the tunnel), or
following a name that moves later (`endpoints.py`'s EndpointFollower, which is handed the same resolver).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

from wgmagic import explain
from wgmagic.errors import EndpointUnresolvableError

if TYPE_CHECKING:
    from wgmagic.config import WireGuardConfig

# resolver(host, port) -> [(address, port), ...]: what `connect(endpoint_resolver=...)` takes
EndpointResolver = Callable[[str, int], list[tuple[str, int]]]


def resolve_endpoint(host: str, port: int) -> list[tuple[str, int]]:
    """The peer Endpoint's addresses in the order the system's resolver gives them (getaddrinfo applies
    RFC 6724 and /etc/gai.conf), each once, IPv6 without a zone; the engine tries the next when handshakes to
    one go unanswered. Raises EndpointUnresolvableError (the name does not resolve, or to no IPv4/IPv6)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        raise EndpointUnresolvableError(str(explain.endpoint_unresolvable(host, port, str(exc.strerror)))) from None
    addresses: list[tuple[str, int]] = []
    for family, _type, _proto, _name, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        candidate = (str(sockaddr[0]).partition("%")[0] if family == socket.AF_INET6 else str(sockaddr[0]), port)
        if candidate not in addresses:
            addresses.append(candidate)
    if not addresses:
        raise EndpointUnresolvableError(f"the peer's Endpoint {host}:{port} has no IPv4 or IPv6 address")
    return addresses


def initial_endpoints(config: WireGuardConfig, resolver: EndpointResolver, *, over_websocket: bool
                      ) -> dict[bytes, list[tuple[str, int]] | tuple[str, int] | None]:
    """Per peer public key, what the engine starts with: the resolved candidates, or over a WebSocket the
    Endpoint as written (never dialled: the relay knows the peer, and only the proxy may resolve names)."""
    if over_websocket:
        return {p.public_key: p.endpoint for p in config.peers}
    return {p.public_key: resolver(*p.endpoint) if p.endpoint else [] for p in config.peers}
