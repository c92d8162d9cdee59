"""A listening TCP port (RFC 9293 3.5 passive open): takes SYNs for its port and queues the new connections."""

from __future__ import annotations

import enum
import ipaddress
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from wgmagic.netstack.events import TcpAccepted
from wgmagic.netstack.tcp.connection import TcpConnection, reset_for
from wgmagic.netstack.wire.ip import PROTO_TCP

if TYPE_CHECKING:
    from wgmagic.netstack.stack import Stack

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class Admission(enum.Enum):
    """What an `admit` hook decides for a new SYN besides True/False: DEFER holds it unanswered until `settle()`
    (a gateway connecting to its local target first), as smoltcp's `pause_synack`."""

    DEFER = "defer"


DEFER = Admission.DEFER


class TcpListener:
    """The LISTEN side of one port on a `Stack` (made by `Stack.tcp_listen`).

    A SYN that matches becomes a `TcpConnection` in SYN_RECEIVED at once (no SYN cache), queued in `pending`
    (at most `backlog`; more are dropped and counted as "listen_backlog_full") and announced with a
    `TcpAccepted` event; `accept()` takes it. `admit`, when set, is asked once per new SYN before any answer:
    True answers it; False refuses it (the stack answers with a RST: the peer sees "connection refused");
    DEFER holds it unanswered (held SYNs count against the backlog; a retransmitted SYN meanwhile is absorbed)
    until its owner calls `settle()`, as smoltcp holds its SYN-ACK.
    """

    def __init__(self, stack: Stack, port: int, local_ip: IPAddress | None, backlog: int) -> None:
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
            self.stack._event(TcpAccepted(self))
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
                self.stack._adopt(key, conn)
                return conn
        self.stack.drops["listen_refused"] += 1
        reset = reset_for(local, remote, segment)
        if reset is not None:
            self.stack._emit(key[0], key[2], PROTO_TCP, reset)
        return None

    def accept(self) -> TcpConnection | None:
        """The oldest queued connection (SYN_RECEIVED or already ESTABLISHED), or None."""
        return self.pending.popleft() if self.pending else None

    def close(self) -> None:
        """Stop listening; connections already queued are left to whoever holds the listener."""
        self.closed = True
        self.stack._listeners.pop(self.port, None)
