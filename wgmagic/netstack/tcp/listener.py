"""A listening TCP port (RFC 9293 3.5 passive open): takes SYNs for its port and queues the new connections.

Owns: the queue of new connections, the backlog and the SYNs an `admit` hook holds. Knows the stack that made
it only through `ListenerHost`, the small interface the stack hands it (no import of stack.py, no private
member of the stack): emitting a segment, announcing an event, adopting a settled connection, unlisting itself.
"""

from __future__ import annotations

import enum
import ipaddress
from collections import Counter, deque
from collections.abc import Callable, Mapping
from typing import Protocol

from wgmagic.netstack.events import NetstackEvent, TcpAccepted
from wgmagic.netstack.tcp.config import TcpConfig
from wgmagic.netstack.tcp.connection import TcpConnection, reset_for

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class Admission(enum.Enum):
    """What an `admit` hook decides for a new SYN besides True/False: DEFER holds it unanswered until `settle()`
    (a gateway connecting to its local target first), as smoltcp's `pause_synack`."""

    DEFER = "defer"


DEFER = Admission.DEFER


ConnectionKey = tuple[bytes, int, bytes, int]  # (local address, local port, remote address, remote port), raw


class ListenerHost(Protocol):
    """What a `TcpListener` may use of the stack that made it (`wgmagic.netstack.stack.Stack` is one).

    Addresses are raw bytes (4 or 16); `now` and lengths as the stack's. `drops`/`counters` are the stack's
    counters by reason; `tcp` its table of connections by `ConnectionKey`."""

    drops: Counter[str]
    counters: Counter[str]
    rng: Callable[[int], bytes]
    tcp_options: TcpConfig | None

    @property
    def tcp(self) -> Mapping[ConnectionKey, TcpConnection]: ...

    def path_mtu(self, dst: bytes) -> int:
        """The path MTU towards `dst` (bytes)."""
        ...

    def announce(self, event: NetstackEvent) -> None:
        """Queue `event` for the stack's next `events()`."""
        ...

    def adopt(self, key: ConnectionKey, conn: TcpConnection) -> None:
        """Take `conn` into the stack's table under `key` (a deferred SYN the listener's owner accepted)."""
        ...

    def send_tcp(self, src: bytes, dst: bytes, segment: bytes) -> None:
        """Send one TCP segment from `src` to `dst` (an IP packet with protocol 6)."""
        ...

    def stop_listening(self, port: int) -> None:
        """Forget the listener on `port` (later SYNs to it are answered with a reset)."""
        ...


class TcpListener:
    """The LISTEN side of one port on a `Stack` (made by `Stack.tcp_listen`).

    A SYN that matches becomes a `TcpConnection` in SYN_RECEIVED at once (no SYN cache), queued in `pending`
    (at most `backlog`; more are dropped and counted as "listen_backlog_full") and announced with a
    `TcpAccepted` event; `accept()` takes it. `admit`, when set, is asked once per new SYN before any answer:
    True answers it; False refuses it (the stack answers with a RST: the peer sees "connection refused");
    DEFER holds it unanswered (held SYNs count against the backlog; a retransmitted SYN meanwhile is absorbed)
    until its owner calls `settle()`, as smoltcp holds its SYN-ACK.
    """

    def __init__(self, stack: ListenerHost, port: int, local_ip: IPAddress | None, backlog: int) -> None:
        self.stack = stack
        self.port = port
        self.local_ip = local_ip
        self.backlog = backlog
        self.pending: deque[TcpConnection] = deque()
        self.closed = False
        self.admit: Callable[[tuple[IPAddress, int], tuple[IPAddress, int]], bool | Admission] | None = None
        # SYNs held by DEFER: (local, remote) -> the SYN segment.
        self.held: dict[tuple[tuple[IPAddress, int], tuple[IPAddress, int]], bytes] = {}

    def __repr__(self) -> str:
        return f"<TcpListener {self.local_ip or '*'}:{self.port} pending={len(self.pending)}>"

    def offer(self, local: tuple[IPAddress, int], remote: tuple[IPAddress, int], segment: memoryview,
              now: float) -> TcpConnection | Admission | None:
        """A segment for this port that matches no connection: the new connection if it is an acceptable SYN
        (RFC 9293 3.10.7.2), DEFER if `admit` held it, else None (the stack then answers with a RST)."""
        is_syn = len(segment) > 13 and segment[13] & 0x12 == 0x02
        if is_syn and (local, remote) in self.held:
            self.stack.counters["tcp_syn_held_again"] += 1
            return DEFER
        if self.closed or len(self.pending) + len(self.held) >= self.backlog:
            self.stack.drops["listen_backlog_full"] += 1
            return None
        if self.admit is not None and is_syn:
            verdict = self.admit(local, remote)
            if verdict is DEFER:
                self.held[(local, remote)] = bytes(segment)
                self.stack.counters["tcp_syn_deferred"] += 1
                return DEFER
            if not verdict:
                self.stack.drops["listen_refused"] += 1
                return None
        conn = self._connection(local, remote, segment, now)
        if conn is not None:
            self.pending.append(conn)
            self.stack.announce(TcpAccepted(self))
        return conn

    def _connection(self, local: tuple[IPAddress, int], remote: tuple[IPAddress, int],
                    segment: memoryview | bytes, now: float) -> TcpConnection | None:
        mss = self.stack.path_mtu(remote[0].packed) - (40 if remote[0].version == 4 else 60)
        return TcpConnection.accept_syn(local, remote, segment, now, options=self.stack.tcp_options,
                                        rng=self.stack.rng, mss=mss)

    def settle(self, local: tuple[IPAddress, int], remote: tuple[IPAddress, int], accept: bool,
               now: float) -> TcpConnection | None:
        """Answer a SYN that `admit` deferred. accept=True answers it with a SYN-ACK (RFC 9293 3.10.7.2) and
        returns the new connection, in SYN-RECEIVED, to the caller (it is not queued for accept()); False
        answers a reset, so the peer sees "connection refused". Returns None when refused, when no such SYN is
        held, or when the listener has closed or the 4-tuple is taken meanwhile (then it resets too)."""
        segment = self.held.pop((local, remote), None)
        if segment is None:
            return None
        key = (local[0].packed, local[1], remote[0].packed, remote[1])
        if accept and not self.closed and key not in self.stack.tcp:
            conn = self._connection(local, remote, segment, now)
            if conn is not None:
                self.stack.adopt(key, conn)
                return conn
        self.stack.drops["listen_refused"] += 1
        reset = reset_for(local, remote, segment)
        if reset is not None:
            self.stack.send_tcp(key[0], key[2], reset)
        return None

    def accept(self) -> TcpConnection | None:
        """The oldest queued connection (SYN_RECEIVED or already ESTABLISHED), or None."""
        return self.pending.popleft() if self.pending else None

    def close(self) -> None:
        """Stop listening; connections already queued are left to whoever holds the listener."""
        self.closed = True
        self.stack.stop_listening(self.port)
