"""Endpoints that move: a peer whose `Endpoint` is a host name is resolved again, and the tunnel follows.

What `reresolve-dns.sh` does for wg-quick, inside the tunnel: the name is resolved again every `interval`
seconds (getaddrinfo gives no TTL, so the interval is stated: 120 s by default), and sooner when handshakes stop
being answered (an initiation still outstanding at the next check, every `retry` seconds, or an ICMP "port
unreachable" from the address; at most one lookup per `retry`), with the system's resolver in an executor thread
(getaddrinfo blocks; the loop never does). When the peer's current address is no longer among the name's
addresses, the peer is moved to the first new one (the system resolver's order, RFC 6724): the next packet goes
there, and without a session a handshake is started there at once. A peer that roamed (an authenticated packet
moved it to an address the name never had) is left where it is, as the kernel's WireGuard leaves a roamed peer
until `wg set` moves it. A packet still in flight from an address the name had before (the old path's last
datagrams, after a move) does move the peer back there, as WireGuard's roaming must; each check (every `retry`
seconds) puts such a peer back on the name's current address without a lookup (counted `endpoint_restored`).

Loop-thread object; `Tunnel` starts it and closes it. It decides only *when to look the name up* and whether the
answer means a move; the WireGuard device keeps the candidates and moves between them
(`Device.set_endpoint_addresses`, `Device.set_endpoint`; wgmagic/wireguard/endpoint.py).
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from wgmagic.runtime.engine import Engine

DEFAULT_INTERVAL = 120.0  # seconds between lookups of an Endpoint name (no TTL is known through getaddrinfo)
DEFAULT_RETRY = 5.0  # seconds: the check for unanswered handshakes, and the least time between two lookups

Resolver = Callable[[str, int], list[tuple[str, int]]]


def is_name(host: str) -> bool:
    """Whether an Endpoint host is a name (to resolve again) rather than an address literal."""
    try:
        ipaddress.ip_address(host.strip("[]").partition("%")[0])
    except ValueError:
        return True
    return False


class EndpointFollower:
    """Follows the peers' Endpoint names. engine: the tunnel's Engine; resolve(host, port) -> [(address, port),
    ...] in preference order, raising on failure (the tunnel's `_resolve_endpoint`, or a test's); interval,
    retry: seconds (see the module). Counters in engine.counters: `endpoint_reresolved`,
    `endpoint_reresolve_failed`, `endpoint_moved`, `endpoint_restored`."""

    def __init__(self, engine: Engine, resolve: Resolver, *, interval: float = DEFAULT_INTERVAL,
                 retry: float = DEFAULT_RETRY) -> None:
        if interval <= 0 or retry <= 0:
            raise ValueError("interval and retry must be positive seconds")
        self.engine = engine
        self.resolve = resolve
        self.interval = interval
        self.retry = min(retry, interval)
        self.names = {key: peer.configured_endpoint for key, peer in engine.peers.items()
                      if peer.configured_endpoint and is_name(peer.configured_endpoint[0])}
        # every address each name has had (the start's included): a peer found on one of them that the name no
        # longer has did not roam, it was moved back by the old path's late packets
        self.former: dict[bytes, set[tuple[str, int]]] = {
            key: set(engine.device.peer(key).candidates.addresses) for key in self.names}
        self.next_lookup: dict[bytes, float] = {}
        self.last_lookup: dict[bytes, float] = {}
        self.pending: set[bytes] = set()
        self._outstanding_since: dict[bytes, float] = {}  # when a check first saw a handshake outstanding
        self.moves: list[tuple[float, bytes, tuple[str, int] | None, tuple[str, int]]] = []  # (when, key, old, new)
        self._timer: asyncio.TimerHandle | None = None
        self.closed = False

    def start(self) -> None:
        if not self.names:
            return
        now = self.engine.now()
        for key in self.names:
            self.next_lookup[key] = now + self.interval
            self.last_lookup[key] = now  # the tunnel resolved the name when it started
        self._schedule()

    def close(self) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _schedule(self) -> None:
        if self.closed:
            return
        self._timer = self.engine.loop.call_later(self.retry, self._tick)

    def _tick(self) -> None:
        self._timer = None
        if self.closed or self.engine.closed:
            return
        now = self.engine.now()
        for key in self.names:
            if key in self.pending:
                continue
            self._restore(key, now)
            due = now >= self.next_lookup[key]
            if not due and now - self.last_lookup[key] >= self.retry and self._unanswered(key, now):
                due = True
            if due:
                self.lookup(key)
        self._schedule()

    def _restore(self, key: bytes, now: float) -> None:
        """Put a peer that the old path's late packets moved back to a former address of its name on the name's
        current address again (no lookup: the candidates are the last answer)."""
        peer = self.engine.device.peer(key)
        current, candidates = peer.endpoint, peer.candidates
        target = candidates.current
        if current is None or target is None or current in candidates.addresses or current not in self.former[key]:
            return
        self.engine.device.set_endpoint(key, target, now)
        self.engine.counters["endpoint_restored"] += 1
        self.engine.pump(now)

    def _unanswered(self, key: bytes, now: float) -> bool:
        """Handshakes to the peer stop being answered: an initiation has been outstanding since an earlier
        check (its answer takes one round trip), or the address answered "port unreachable"."""
        peer = self.engine.device.peer(key)
        if peer.candidates.refused:
            return True
        if not peer.handshake_in_flight:
            self._outstanding_since.pop(key, None)
            return False
        since = self._outstanding_since.setdefault(key, now)
        return now > since

    def lookup(self, key: bytes) -> None:
        """Resolve the peer's Endpoint name again now (in an executor); the answer is applied on the loop."""
        host, port = self.names[key]
        now = self.engine.now()
        self.pending.add(key)
        self.last_lookup[key] = now
        self.next_lookup[key] = now + self.interval
        future = self.engine.loop.run_in_executor(None, self.resolve, host, port)
        future.add_done_callback(lambda fut: self._resolved(key, fut))

    def _resolved(self, key: bytes, future: asyncio.Future[list[tuple[str, int]]]) -> None:
        self.pending.discard(key)
        if self.closed or self.engine.closed:
            return
        try:
            addresses = list(future.result())
        except Exception:
            self.engine.counters["endpoint_reresolve_failed"] += 1
            return
        if not addresses:
            self.engine.counters["endpoint_reresolve_failed"] += 1
            return
        self.engine.counters["endpoint_reresolved"] += 1
        self.apply(key, addresses)

    def apply(self, key: bytes, addresses: list[tuple[str, int]]) -> None:
        """The name's addresses now: keep the peer where it is if that is still one of them (or it roamed
        elsewhere), else move it to the first."""
        device = self.engine.device
        former = self.former.setdefault(key, set())
        current = device.peer(key).endpoint
        if device.set_endpoint_addresses(key, addresses):
            former.update(addresses)
            return
        if current is not None and former and current not in former:
            return  # roamed: an authenticated packet moved it to an address the name never had
        if len(former) < 256:
            former.update(addresses)
        now = self.engine.now()
        device.set_endpoint(key, addresses[0], now)  # a handshake starts there unless a session stands
        self.engine.peers[key].resolved_endpoint = addresses[0]
        self.engine.counters["endpoint_moved"] += 1
        self.moves.append((now, key, current, addresses[0]))
        del self.moves[:-16]
        self.engine.pump(now)
