"""Which of a name's addresses to connect to through the tunnel, and in what order.

A private name often has both A and AAAA records while a tunnel carries one family only (a Fly.io 6PN is
IPv6-only). `select_destinations` keeps the addresses the tunnel can use -- inside a peer's AllowedIPs
(cryptokey routing) and of a family the [Interface] has an Address of -- and orders them as RFC 6724 section 6
orders destinations, then interleaves the families as RFC 8305 section 4 asks, so that connection attempts
(`wgmagic.runtime.relay.HappyEyeballs`) alternate between them.

Pure functions: no socket, no clock.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import Any

from wgmagic import explain
from wgmagic.errors import NoRouteError
from wgmagic.wireguard.allowedips import AllowedIPs

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

# RFC 6724 section 2.1, the default policy table: (prefix, precedence, label). IPv4 addresses are looked up
# as IPv4-mapped IPv6 addresses (::ffff:0:0/96).
POLICY_TABLE: tuple[tuple[ipaddress.IPv6Network, int, int], ...] = tuple(
    (ipaddress.IPv6Network(prefix), precedence, label) for prefix, precedence, label in (
        ("::1/128", 50, 0),
        ("::ffff:0:0/96", 35, 4),
        ("2002::/16", 30, 2),
        ("2001::/32", 5, 5),
        ("fc00::/7", 3, 13),
        ("::/96", 1, 3),
        ("fec0::/10", 1, 11),
        ("3ffe::/16", 1, 12),
        ("::/0", 40, 1),
    ))

# RFC 4291 / RFC 6724 section 3.1 scope values.
SCOPE_LINK_LOCAL, SCOPE_SITE_LOCAL, SCOPE_GLOBAL = 0x2, 0x5, 0xE


def _as_v6(address: IPAddress) -> ipaddress.IPv6Address:
    if isinstance(address, ipaddress.IPv4Address):
        return ipaddress.IPv6Address(b"\x00" * 10 + b"\xff\xff" + address.packed)
    return address


def policy(address: IPAddress) -> tuple[int, int]:
    """(precedence, label) of the longest matching prefix of RFC 6724's default policy table."""
    mapped = _as_v6(address)
    best: tuple[int, int, int] | None = None
    for prefix, precedence, label in POLICY_TABLE:
        if mapped in prefix and (best is None or prefix.prefixlen > best[0]):
            best = (prefix.prefixlen, precedence, label)
    assert best is not None  # ::/0 matches everything
    return best[1], best[2]


def scope(address: IPAddress) -> int:
    """RFC 6724 section 3.1: link-local for loopback and link-local unicast (both families), the multicast
    scope field for IPv6 multicast, site-local for fec0::/10, global otherwise (ULAs included)."""
    if address.version == 4:
        if address.is_loopback or address.is_link_local:
            return SCOPE_LINK_LOCAL
        return SCOPE_GLOBAL
    if address.is_multicast:
        return address.packed[1] & 0x0F
    if address.is_loopback or address.is_link_local:
        return SCOPE_LINK_LOCAL
    if address.is_site_local:
        return SCOPE_SITE_LOCAL
    return SCOPE_GLOBAL


def common_prefix_length(a: IPAddress, b: IPAddress, limit: int) -> int:
    """Leading bits a and b share, at most `limit` (RFC 6724 section 2.2, CommonPrefixLen)."""
    diff = int(a) ^ int(b)
    width = a.max_prefixlen
    shared = width - diff.bit_length()
    return min(shared, limit)


def routing_table(allowed_ips: AllowedIPs[Any] | Iterable[IPNetwork]) -> AllowedIPs[Any]:
    """The AllowedIPs table itself (a device's `dev.allowed_ips`), or one built from a list of prefixes: the
    check lives in one place, `AllowedIPs.contains` (whitepaper 2.1)."""
    if isinstance(allowed_ips, AllowedIPs):
        return allowed_ips
    table: AllowedIPs[Any] = AllowedIPs()
    for network in allowed_ips:
        table.insert(network, True)
    return table


def routable(address: IPAddress, allowed_ips: AllowedIPs[Any] | Iterable[IPNetwork]) -> bool:
    """Whether some AllowedIPs prefix covers the address (WireGuard's cryptokey routing)."""
    return routing_table(allowed_ips).contains(address)


def select_destinations(addresses: Iterable[IPAddress], *, sources: Sequence[IPInterface],
                        allowed_ips: AllowedIPs[Any] | Iterable[IPNetwork]) -> list[IPAddress]:
    """The addresses the tunnel can connect to, best first, families interleaved.

    addresses: as resolved (A and AAAA answers, duplicates allowed), in the resolver's order.
    sources: the tunnel's [Interface] Address entries (the candidate source addresses).
    allowed_ips: the device's AllowedIPs table (`Device.allowed_ips`), or the union of the peers' prefixes.
    Returns a new list without duplicates; empty when none is usable (the caller says "no route").

    RFC 6724 section 6 rules that apply to a tunnel: 1 (avoid unusable destinations: no route or no source
    address of that family), 2 (prefer matching scope), 5 (prefer matching label), 6 (prefer higher
    precedence), 8 (prefer smaller scope), 9 (longest matching prefix, same family), 10 (otherwise keep the
    resolver's order). Rules 3, 4 and 7 (deprecated, home and native-transport addresses) have no counterpart
    in a tunnel's fixed addresses. Then RFC 8305 section 4: the first address's family leads and the two
    families alternate.
    """
    table = routing_table(allowed_ips)
    source_of: dict[int, IPInterface] = {}
    for interface in sources:
        source_of.setdefault(interface.version, interface)
    usable: list[IPAddress] = []
    seen: set[IPAddress] = set()
    for address in addresses:
        if address in seen:
            continue
        seen.add(address)
        if address.version in source_of and table.contains(address):
            usable.append(address)

    def key(item: tuple[int, IPAddress]) -> tuple[int, ...]:
        index, dst = item
        src = source_of[dst.version]
        src_address = src.ip
        dst_scope, src_scope = scope(dst), scope(src_address)
        dst_precedence, dst_label = policy(dst)
        _, src_label = policy(src_address)
        limit = 64 if dst.version == 6 else src.network.prefixlen
        return (
            0 if dst_scope == src_scope else 1,                       # rule 2
            0 if dst_label == src_label else 1,                       # rule 5
            -dst_precedence,                                          # rule 6
            dst_scope,                                                # rule 8
            # Rule 9 compares within a family only; two addresses of different families never get this far,
            # since an IPv4 address's precedence (35) is no IPv6 unicast prefix's in the table.
            -common_prefix_length(dst, src_address, limit),           # rule 9
            index,                                                    # rule 10
        )

    ranked = [dst for _, dst in sorted(enumerate(usable), key=key)]
    return interleave_families(ranked)


def interleave_families(ranked: Sequence[IPAddress]) -> list[IPAddress]:
    """RFC 8305 section 4: the first address's family first, then alternate families, each family keeping
    its own order (First Address Family Count = 1)."""
    if not ranked:
        return []
    first = ranked[0].version
    lead = [a for a in ranked if a.version == first]
    other = [a for a in ranked if a.version != first]
    result: list[IPAddress] = []
    for index in range(max(len(lead), len(other))):
        if index < len(lead):
            result.append(lead[index])
        if index < len(other):
            result.append(other[index])
    return result


def describe_no_route(name: str, addresses: Sequence[IPAddress], *, sources: Sequence[IPInterface],
                      allowed_ips: AllowedIPs[Any] | Iterable[IPNetwork]) -> str:
    """Why none of `addresses` can be reached through the tunnel, for a NoRouteError (wgmagic.explain's words)."""
    table = routing_table(allowed_ips)
    families = {s.version for s in sources}
    reasons = []
    for address in addresses:
        if address.version not in families:
            reasons.append(explain.no_interface_address(str(address), address.version))
        elif not table.contains(address):
            reasons.append(explain.outside_allowed_ips(str(address)))
    literal = [str(a) for a in addresses] == [name]
    return str(explain.no_route(name, reasons, literal=literal))


class Routes:
    """Where the tunnel can connect: its [Interface] Address entries (`sources`, the candidate source
    addresses) and the device's AllowedIPs table (cryptokey routing, whitepaper 2.1). Fixed once the tunnel is
    up, so safe from any thread."""

    def __init__(self, sources: Sequence[IPInterface], allowed_ips: AllowedIPs[Any]) -> None:
        self.sources = sources
        self.allowed_ips = allowed_ips

    def select(self, addresses: Iterable[IPAddress]) -> list[IPAddress]:
        """`select_destinations` for this tunnel: the reachable ones, in connection order."""
        return select_destinations(addresses, sources=self.sources, allowed_ips=self.allowed_ips)

    def no_route(self, name: str, addresses: Sequence[IPAddress]) -> NoRouteError:
        """The NoRouteError for `name`, whose `addresses` none can be reached (describe_no_route's words)."""
        return NoRouteError(describe_no_route(name, addresses, sources=self.sources, allowed_ips=self.allowed_ips))

    def check(self, address: IPAddress) -> None:
        """Raise NoRouteError unless some peer's AllowedIPs cover `address` and an Address of its family
        exists to send from."""
        if not self.select([address]):
            raise self.no_route(str(address), [address])
