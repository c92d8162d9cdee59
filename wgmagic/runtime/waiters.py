"""Futures waiting on the engine's loop for something the protocols report: a handshake, an ICMP echo reply.

Owns: settling them exactly once, and leaving none behind unretrieved when the tunnel closes (a future that
failed with nobody awaiting it would print "Future exception was never retrieved"). Loop thread only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Iterator
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from wgmagic.runtime.engine import Engine

T = TypeVar("T")
K = TypeVar("K")


class Waiters(Generic[T]):
    """The futures waiting for one outcome (e.g. a peer's next handshake: its RTT in seconds, or None)."""

    def __init__(self) -> None:
        self._futures: list[asyncio.Future[T]] = []

    def __len__(self) -> int:
        return len(self._futures)

    def add(self, future: asyncio.Future[T]) -> None:
        self._futures.append(future)

    def discard(self, future: asyncio.Future[T]) -> None:
        if future in self._futures:
            self._futures.remove(future)

    def resolve(self, value: T) -> None:
        """Every waiter gets `value`; the list empties."""
        futures, self._futures = self._futures, []
        for future in futures:
            if not future.done():
                future.set_result(value)

    def __iter__(self) -> Iterator[asyncio.Future[T]]:
        return iter(list(self._futures))

    def fail(self, error: BaseException, *, retrieved: bool = False,
             keep: Collection[asyncio.Future[T]] = ()) -> None:
        """Every waiter gets `error`, but those in `keep` (still waiting on something else, e.g. another peer's
        handshake), which stay; `retrieved`: mark it retrieved (a closing tunnel's waiters may be gone)."""
        futures = [f for f in self._futures if f not in keep]
        self._futures = [f for f in self._futures if f in keep]
        for future in futures:
            if not future.done():
                future.set_exception(error)
                if retrieved:
                    future.exception()


class EchoWaiters:
    """ICMP echo requests in flight, by (destination bytes, identifier, sequence): when each was sent and the
    future that gets the reply's arrival time (seconds, the engine's clock). `last`: (when, rtt) of the newest
    reply, for the metrics."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._waiting: dict[tuple[bytes, int, int], tuple[float, asyncio.Future[float]]] = {}
        self.last: tuple[float, float] | None = None

    def add(self, key: tuple[bytes, int, int], sent: float) -> asyncio.Future[float]:
        future: asyncio.Future[float] = self.loop.create_future()
        self._waiting[key] = (sent, future)
        future.add_done_callback(lambda _f: self._waiting.pop(key, None))
        return future

    def reply(self, key: tuple[bytes, int, int], now: float) -> None:
        """An echo reply arrived at `now`; an unknown key (a late or foreign reply) is ignored."""
        entry = self._waiting.pop(key, None)
        if entry is None:
            return
        sent, future = entry
        self.last = (now, now - sent)
        if not future.done():
            future.set_result(now)

    def fail(self, error: BaseException) -> None:
        for _sent, future in list(self._waiting.values()):
            if not future.done():
                future.set_exception(error)
                future.exception()  # retrieved: a ping no longer waiting must not leave a warning behind
        self._waiting.clear()


def wait_handshake(engine: Engine, public_key: bytes | None = None) -> asyncio.Future[float | None]:
    """A future for the next handshake with the peer (default: any peer), started now unless a session stands:
    its RTT in seconds (None as responder, or when a session already stood); HandshakeTimeoutError when the
    retries give up (REKEY_ATTEMPT_TIME), PortUnreachableError (a HandshakeTimeoutError) as soon as every address
    of the Endpoint refused twice in a row (Engine.endpoint_refused), TransportError when the transport cannot
    open, TunnelClosedError."""
    peers = [engine.peers[public_key]] if public_key else list(engine.peers.values())
    future: asyncio.Future[float | None] = engine.loop.create_future()
    now = engine.now()
    for peer in peers:
        if engine.device.peer(peer.public_key).has_session(engine.device.protocol_time(now)):
            future.set_result(peer.last_handshake_rtt)
            return future
    for peer in peers:
        peer.handshake_waiters.add(future)
    try:
        for peer in peers:
            engine.device.initiate_handshake(peer.public_key, now)
    except BaseException:
        for peer in peers:  # nobody will await `future`: leave no waiter for close() to fail unretrieved
            peer.handshake_waiters.discard(future)
        future.cancel()
        raise
    engine.pump(now)
    return future
