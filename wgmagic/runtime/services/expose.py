"""Reverse forwards (like `ssh -R`): a TCP listener on a tunnel address, inside this process's IP stack, whose
connections are relayed to a port on this machine. `Tunnel.expose` (`%wg expose`, `wgmagic up -R`) and the
gateway's `--expose` both use `ExposeListener`.

A peer's SYN is held unanswered (`TcpListener.admit` returns DEFER) while the listener connects to the local
target without blocking the loop: the SYN-ACK goes out when that connect succeeds, a reset when it fails or
takes longer than `connect_timeout`, so a target that is down refuses the peer's connection and a slow one delays
no other peer. A SYN whose source is outside every peer's AllowedIPs (cryptokey routing already drops those
packets in the device; this is the same rule, checked again where the connection is made), or outside the
listener's own `allow` networks, is refused with a reset.

Everything here runs on the tunnel's loop thread; the owner creates and closes listeners inside
`Tunnel.call_on_loop`.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from wgmagic.addresses import Expose
from wgmagic.netstack.tcp.listener import DEFER
from wgmagic.runtime.relay import SocketRelay
from wgmagic.runtime.seams import EngineAPI

if TYPE_CHECKING:
    from wgmagic.runtime.tunnel import Tunnel

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# Seconds a peer's SYN is held unanswered while the local target connects; then the peer gets a reset.
LOCAL_CONNECT_TIMEOUT = 10.0
# Seconds a refused connection's 4-tuple stays refused: a copy of its SYN still in flight (the peer retransmits
# after about 1 s, RFC 6298) gets a reset at once instead of starting a new local connect nobody waits for.
REFUSED_MEMORY = 3.0


def resolve_target(expose: Expose) -> tuple[tuple[int, tuple[Any, ...]], ...]:
    """The local addresses of an expose's target, in the system's order (getaddrinfo: RFC 6724 with gai.conf),
    as (family, sockaddr) pairs; raises ValueError naming the target when its host does not resolve."""
    try:
        infos = socket.getaddrinfo(expose.target_host, expose.target_port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ValueError(f"--expose {expose}: the target host {expose.target_host!r} does not resolve on this "
                         f"machine ({exc.strerror})") from None
    found: list[tuple[int, tuple[Any, ...]]] = []
    for family, _, _, _, sockaddr in infos:
        if (family, sockaddr) not in found:
            found.append((family, sockaddr))
    return tuple(found)


@dataclass(eq=False)
class LocalConnect:
    """A peer's held SYN and the non-blocking connect to the local target that will settle it (loop thread)."""

    listener: Any
    local: tuple[IPAddress, int]
    remote: tuple[IPAddress, int]
    addresses: list[tuple[int, tuple[Any, ...]]]  # still to try, in order
    deadline: float  # time.monotonic() seconds
    sock: socket.socket | None = None
    timer: Any = None
    errors: list[str] = field(default_factory=list)  # errno names of the addresses that failed


class ExposeListener:
    """One exposed port on the tunnel's stack (loop thread only).

    engine: the tunnel's Engine; targets: the local target's (family, sockaddr) pairs (resolve_target);
    allow: networks a peer's source address must be in besides the peers' AllowedIPs (None: AllowedIPs only);
    counter_prefix: engine.counters keys are `{prefix}_refused_not_allowed`, `{prefix}_local_connect_...`.
    Raises OSError (EADDRINUSE) when the tunnel port already listens.
    """

    def __init__(self, engine: EngineAPI, expose: Expose, targets: Sequence[tuple[int, tuple[Any, ...]]], *,
                 connect_timeout: float = LOCAL_CONNECT_TIMEOUT, allow: Sequence[IPNetwork] | None = None,
                 counter_prefix: str = "expose") -> None:
        self.engine = engine
        self.expose = expose
        self.targets = tuple(targets)
        self.connect_timeout = connect_timeout
        self.allow = tuple(allow) if allow is not None else None
        self.prefix = counter_prefix
        self.relays: set[SocketRelay] = set()
        self.accepted = 0
        self.refused = 0
        self.closed = False
        self._connecting: dict[tuple[Any, Any], LocalConnect] = {}
        self._refused: dict[tuple[Any, Any], float] = {}  # (local, remote) -> until when it stays refused
        try:
            self.listener = engine.stack.tcp_listen(expose.port, expose.address)
        except OSError as exc:
            where = "any tunnel address" if expose.address is None else str(expose.address)
            raise OSError(exc.errno, f"cannot listen on TCP port {expose.port} of {where} to expose "
                          f"{expose.target_host}:{expose.target_port}: the port already listens on the tunnel "
                          "(an earlier expose has it)") from None
        self.listener.admit = self._admit

    def __repr__(self) -> str:
        return f"<ExposeListener {self.expose} accepted={self.accepted} refused={self.refused}>"

    @property
    def connecting(self) -> int:
        return len(self._connecting)

    def describe(self) -> dict[str, object]:
        """A row for `%wg status`: what listens where, and how many connections it took and refused."""
        return {"listen": str(self.expose).split(" -> ")[0], "target": f"{self.expose.target_host}:"
                f"{self.expose.target_port}", "open": len(self.relays), "accepted": self.accepted,
                "refused": self.refused}

    def permitted(self, address: IPAddress) -> bool:
        """Whether a peer at `address` may connect: inside a peer's AllowedIPs and inside `allow` if given."""
        if not self.engine.device.allowed_ips.contains(address):
            return False
        return self.allow is None or any(address in net for net in self.allow if net.version == address.version)

    def _admit(self, local: tuple[Any, int], remote: tuple[Any, int]) -> object:
        """A peer's new SYN: refuse it (False: a reset) when its source is not permitted, or every address of
        the target refuses on the spot; otherwise hold it (DEFER) while the local target connects."""
        if self.closed:
            return False
        now = time.monotonic()
        if self._refused.get((local, remote), 0.0) > now:
            self.engine.counters[f"{self.prefix}_refused_again"] += 1
            return False
        if not self.permitted(remote[0]):
            self.refused += 1
            self.engine.counters[f"{self.prefix}_refused_not_allowed"] += 1
            return False
        attempt = LocalConnect(self.listener, local, remote, list(self.targets),
                               time.monotonic() + self.connect_timeout)
        if not self._connect_next(attempt):
            self._count_refusal(attempt)
            return False
        self._connecting[(local, remote)] = attempt
        attempt.timer = self.engine.loop.call_at(attempt.deadline, self._timed_out, attempt)
        return DEFER

    def _connect_next(self, attempt: LocalConnect) -> bool:
        """Start a non-blocking connect to the next address; False when none is left that did not fail."""
        while attempt.addresses:
            family, address = attempt.addresses.pop(0)
            try:
                sock = socket.socket(family, socket.SOCK_STREAM)
            except OSError as exc:
                attempt.errors.append(errno.errorcode.get(exc.errno or 0, "error"))
                continue
            sock.setblocking(False)
            code = sock.connect_ex(address)
            if code in (0, errno.EINPROGRESS):
                attempt.sock = sock
                self.engine.loop.add_writer(sock.fileno(), self._on_connect_writable, attempt)
                return True
            attempt.errors.append(errno.errorcode.get(code, str(code)))
            sock.close()
        return False

    def _on_connect_writable(self, attempt: LocalConnect) -> None:
        sock = attempt.sock
        if sock is None:
            return
        self.engine.loop.remove_writer(sock.fileno())
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code == 0:
            self._settle(attempt, True)
            return
        attempt.errors.append(errno.errorcode.get(code, str(code)))
        attempt.sock = None
        sock.close()
        if time.monotonic() < attempt.deadline and self._connect_next(attempt):
            return  # the target's next address (RFC 6724 order) is being tried
        self._settle(attempt, False)

    def _timed_out(self, attempt: LocalConnect) -> None:
        attempt.timer = None
        attempt.errors.append("timeout")
        self.engine.counters[f"{self.prefix}_local_connect_timeouts"] += 1
        self._drop_socket(attempt)
        self._settle(attempt, False)

    def _count_refusal(self, attempt: LocalConnect) -> None:
        """A peer's connection refused: counted, with why each address of the target failed."""
        self.refused += 1
        for reason in attempt.errors:
            if reason != "timeout":
                self.engine.counters[f"{self.prefix}_local_connect_{reason}"] += 1

    def _drop_socket(self, attempt: LocalConnect) -> None:
        if attempt.sock is not None:
            with contextlib.suppress(Exception):
                self.engine.loop.remove_writer(attempt.sock.fileno())
            attempt.sock.close()
            attempt.sock = None

    def _settle(self, attempt: LocalConnect, connected: bool) -> None:
        """Answer the held SYN: SYN-ACK and relay when the local connect succeeded, a reset otherwise."""
        if self._connecting.pop((attempt.local, attempt.remote), None) is None:
            return
        if attempt.timer is not None:
            attempt.timer.cancel()
            attempt.timer = None
        now = time.monotonic()
        conn = attempt.listener.settle(attempt.local, attempt.remote, connected, now)
        if conn is None:
            self._drop_socket(attempt)
            self._count_refusal(attempt)
            if len(self._refused) >= 1024:
                self._refused = {k: v for k, v in self._refused.items() if v > now}
            if len(self._refused) < 1024:
                self._refused[(attempt.local, attempt.remote)] = now + REFUSED_MEMORY
        else:
            local, attempt.sock = attempt.sock, None
            assert local is not None
            with contextlib.suppress(OSError):
                local.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.accepted += 1
            relay = SocketRelay(self.engine, local, conn, on_done=self.relays.discard)
            self.relays.add(relay)
            self.engine.stack.wake(conn)
        self.engine.pump(now)

    def close_on_loop(self) -> None:
        """Stop listening, refuse the held SYNs and close the relays (their local sockets and connections)."""
        if self.closed:
            return
        self.closed = True
        for attempt in list(self._connecting.values()):
            self._drop_socket(attempt)
            self._settle(attempt, False)
        self.listener.close()
        for relay in list(self.relays):
            with contextlib.suppress(Exception):
                relay.close()
        self.relays.clear()


class Exposed:
    """The handle `Tunnel.expose` returns: where it listens, its counters, `close()`. Thread-safe."""

    def __init__(self, tunnel: Tunnel, listener: ExposeListener, on_close: Callable[[Exposed], None]) -> None:
        self.tunnel = tunnel
        self.listener = listener
        self.expose = listener.expose
        self._on_close = on_close

    @property
    def port(self) -> int:
        return self.expose.port

    @property
    def addresses(self) -> list[IPAddress]:
        """The tunnel addresses peers connect to."""
        if self.expose.address is not None:
            return [self.expose.address]
        return [iface.ip for iface in self.tunnel.config.interface.addresses]

    def describe(self) -> dict[str, object]:
        return self.tunnel.call_on_loop(self.listener.describe)

    def close(self) -> None:
        self._on_close(self)

    def __enter__(self) -> Exposed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Exposed {self.expose}>"
