"""The tunnel's cache of names resolved through its DNS servers (runtime/resolver.py fills it).

Owns: expiry (a fixed lifetime per answer, seconds on the engine's clock) and the bound (at most `size` names,
the oldest dropped first). Keeps addresses only, never errors (a failed lookup is retried next time).
"""

from __future__ import annotations

from typing import Any

# Seconds the runtime keeps a name's addresses. Not imported from netstack.dns: that module loads dnspython
# (tens of ms), which the tunnel's start must not wait for (notebook/prefetch.py loads it during the handshake).
CACHE_TTL = 30.0


class DnsCache:
    """name -> addresses, each kept `ttl` seconds (default CACHE_TTL), `size` names."""

    def __init__(self, ttl: float = CACHE_TTL, size: int = 256) -> None:
        self.ttl = ttl
        self.size = size
        self._entries: dict[str, tuple[float, tuple[Any, ...]]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, name: str, now: float) -> list[Any] | None:
        """The addresses still fresh at `now`, or None."""
        entry = self._entries.get(name)
        if entry is None or entry[0] <= now:
            return None
        return list(entry[1])

    def put(self, name: str, addresses: list[Any] | tuple[Any, ...], now: float) -> None:
        self._entries.pop(name, None)
        self._entries[name] = (now + self.ttl, tuple(addresses))
        while len(self._entries) > self.size:
            self._entries.pop(next(iter(self._entries)))
