"""A listening TCP port (RFC 9293 3.5 passive open): takes SYNs for its port and queues the new connections."""

from __future__ import annotations

import ipaddress
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from wgmagic.netstack.events import TcpAccepted
from wgmagic.netstack.tcp.connection import TcpConnection

if TYPE_CHECKING:
    from wgmagic.netstack.stack import Stack

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class TcpListener:
    """The LISTEN side of one port on a `Stack` (made by `Stack.tcp_listen`).

    A SYN that matches becomes a `TcpConnection` in SYN_RECEIVED at once (no SYN cache), queued in `pending`
    (at most `backlog`; more are dropped and counted as "listen_backlog_full") and announced with a
    `TcpAccepted` event; `accept()` takes it. `admit`, when set, is asked once per new SYN before any answer:
    False refuses it (the stack answers with a RST: the peer sees "connection refused").
    """

    def __init__(self, stack: Stack, port: int, local_ip: IPAddress | None, backlog: int) -> None:
        self.stack = stack
        self.port = port
        self.local_ip = local_ip
        self.backlog = backlog
        self.pending: deque[TcpConnection] = deque()
        self.closed = False
        self.admit: Callable[[tuple[IPAddress, int], tuple[IPAddress, int]], bool] | None = None

    def __repr__(self) -> str:
        return f"<TcpListener {self.local_ip or '*'}:{self.port} pending={len(self.pending)}>"

    def offer(self, local: tuple[IPAddress, int], remote: tuple[IPAddress, int], segment: memoryview,
              now: float) -> TcpConnection | None:
        """A segment for this port that matches no connection: the new connection if it is an acceptable SYN
        (RFC 9293 3.10.7.2), else None (the stack then answers with a RST)."""
        if self.closed or len(self.pending) >= self.backlog:
            self.stack.drops["listen_backlog_full"] += 1
            return None
        is_syn = len(segment) > 13 and segment[13] & 0x12 == 0x02
        if self.admit is not None and is_syn and not self.admit(local, remote):
            self.stack.drops["listen_refused"] += 1
            return None
        mss = self.stack.path_mtu(remote[0].packed) - (40 if remote[0].version == 4 else 60)
        conn = TcpConnection.accept_syn(local, remote, segment, now, options=self.stack.tcp_options,
                                        rng=self.stack.rng, mss=mss)
        if conn is not None:
            self.pending.append(conn)
            self.stack._event(TcpAccepted(self))
        return conn

    def accept(self) -> TcpConnection | None:
        """The oldest queued connection (SYN_RECEIVED or already ESTABLISHED), or None."""
        return self.pending.popleft() if self.pending else None

    def close(self) -> None:
        """Stop listening; connections already queued are left to whoever holds the listener."""
        self.closed = True
        self.stack._listeners.pop(self.port, None)
