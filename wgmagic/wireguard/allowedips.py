"""Cryptokey routing (whitepaper section 2.1): the AllowedIPs table, by longest prefix, IPv4 and IPv6.

One table serves both directions: a packet to send goes to the peer whose AllowedIPs hold its destination
(`routes`); a decrypted packet is accepted only if its source routes back to the peer it came from.
"""

from __future__ import annotations

import ipaddress
from typing import Generic, TypeVar

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
P = TypeVar("P")
CACHE_SIZE = 4096
_MISSING = object()


def _raw(address: bytes | IPAddress | str) -> bytes:
    if isinstance(address, bytes):
        return address
    if isinstance(address, str):
        address = ipaddress.ip_address(address)
    return address.packed


class AllowedIPs(Generic[P]):
    """Prefixes (IPv4Network / IPv6Network) mapped to peers; lookups by longest matching prefix.

    Addresses may be given as raw bytes (4 or 16: the fast path), ip_address objects or text. A prefix
    inserted twice belongs to the last peer that claimed it (as `wg set ... allowed-ips` moves it). Lookups
    are cached (up to CACHE_SIZE addresses; cleared on every change).
    """

    def __init__(self) -> None:
        self._v4: list[tuple[int, int, int, P]] = []  # (prefixlen, network int, mask int, peer), longest first
        self._v6: list[tuple[int, int, int, P]] = []
        self._cache: dict[bytes, P | None] = {}

    def __repr__(self) -> str:
        return f"<AllowedIPs v4={len(self._v4)} v6={len(self._v6)}>"

    def __len__(self) -> int:
        return len(self._v4) + len(self._v6)

    def insert(self, network: IPNetwork, peer: P) -> None:
        """Route `network` to `peer` (replacing whoever held exactly that prefix)."""
        table = self._v4 if network.version == 4 else self._v6
        key = (network.prefixlen, int(network.network_address))
        table[:] = [route for route in table if route[:2] != key]
        table.append((network.prefixlen, int(network.network_address), int(network.netmask), peer))
        table.sort(key=lambda route: -route[0])
        self._cache.clear()

    def remove_peer(self, peer: P) -> None:
        """Drop every prefix of `peer`."""
        self._v4 = [route for route in self._v4 if route[3] is not peer]
        self._v6 = [route for route in self._v6 if route[3] is not peer]
        self._cache.clear()

    def networks(self, peer: P) -> list[IPNetwork]:
        """The prefixes routed to `peer`, longest first."""
        out: list[IPNetwork] = []
        for table, cls in ((self._v4, ipaddress.IPv4Network), (self._v6, ipaddress.IPv6Network)):
            out += [cls((network, prefix)) for prefix, network, _, owner in table if owner is peer]
        return out

    def routes(self, address: bytes | IPAddress | str) -> P | None:
        """The peer whose AllowedIPs hold `address` by longest prefix, or None."""
        raw = _raw(address)
        cache = self._cache
        found = cache.get(raw, cache)
        if found is not cache:
            return found  # type: ignore[return-value]
        found = self._lookup(raw)
        if len(cache) >= CACHE_SIZE:
            cache.clear()
        cache[raw] = found
        return found

    def routes_raw(self, raw: bytes) -> P | None:
        """`routes` for a raw 4- or 16-byte address (the per-packet path: one dictionary lookup when cached)."""
        found = self._cache.get(raw, _MISSING)
        if found is not _MISSING:
            return found  # type: ignore[return-value]
        return self.routes(raw)

    def _lookup(self, raw: bytes) -> P | None:
        value = int.from_bytes(raw, "big")
        table = self._v4 if len(raw) == 4 else self._v6 if len(raw) == 16 else ()
        for _, network, mask, peer in table:
            if value & mask == network:
                return peer
        return None

    def contains(self, address: bytes | IPAddress | str) -> bool:
        """Whether any peer's AllowedIPs hold `address`."""
        return self.routes(address) is not None

    __contains__ = contains
