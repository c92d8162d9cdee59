"""`wgmagic gateway`: the other end of the tunnel, rootless. A user-space WireGuard responder that relays
peers' TCP connections to local services, answers ping, and answers DNS for the names it is given.

It is a Tunnel whose stack listens instead of connecting: each `--expose [ADDR:]PORT=HOST:PORT` is a TCP
listener on a tunnel address; each accepted tunnel connection is relayed to HOST:PORT on this machine by the
same SocketRelay the forwards use (bounded both ways). A peer's SYN is held unanswered while the gateway
connects to the local target without blocking (the target's host name was resolved once, at start): the
SYN-ACK goes out when that connect succeeds, a reset when it fails or takes longer than `connect_timeout`, so a
target that is down refuses the peer's connection and a slow one delays no other peer.

Peers are held to their AllowedIPs by the WireGuard device (cryptokey routing), and under a handshake flood
the device answers with cookies (mac2).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import ipaddress
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from wgmagic.netstack.stack import DEFER
from wgmagic.runtime.relay import SocketRelay

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# Seconds a peer's SYN is held unanswered while the local target connects; then the peer gets a reset.
LOCAL_CONNECT_TIMEOUT = 10.0


@dataclass(frozen=True)
class Expose:
    address: IPAddress | None  # the tunnel address to listen on (None: every address of the interface)
    port: int
    target_host: str
    target_port: int

    def __str__(self) -> str:
        where = f"[{self.address}]" if self.address and self.address.version == 6 else str(self.address or "*")
        return f"{where}:{self.port} -> {self.target_host}:{self.target_port}"


def parse_expose(text: str) -> Expose:
    """'5432=127.0.0.1:5432', '198.18.0.1:5432=localhost:5432' or '[fd00::1]:80=127.0.0.1:8080'."""
    from wgmagic.runtime.services.forward import parse_target

    listen, sep, target = text.partition("=")
    if not sep:
        raise ValueError(f"--expose {text!r}: expected [ADDR:]PORT=HOST:PORT")
    if listen.isdigit():
        address, port = None, int(listen)
    else:
        host, port = parse_target(listen)
        address = ipaddress.ip_address(host)
    if not 0 < port < 65536:
        raise ValueError(f"--expose {text!r}: the port must be 1..65535")
    target_host, target_port = parse_target(target)
    return Expose(address, port, target_host, target_port)


def parse_name(text: str) -> tuple[str, tuple[IPAddress, ...]]:
    """'db.internal=198.18.0.1,fd00::1' -> ('db.internal.', (addresses))."""
    name, sep, addresses = text.partition("=")
    if not sep or not name.strip():
        raise ValueError(f"--name {text!r}: expected NAME=ADDR[,ADDR...]")
    try:
        parsed = tuple(ipaddress.ip_address(a.strip()) for a in addresses.split(",") if a.strip())
    except ValueError as exc:
        raise ValueError(f"--name {text!r}: {exc}") from None
    return name.strip().lower().rstrip(".") + ".", parsed


def resolve_target(expose: Expose) -> tuple[tuple[int, tuple[Any, ...]], ...]:
    """The local addresses of an --expose target, in the system's order (getaddrinfo: RFC 6724 with gai.conf),
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


class Gateway:
    """Run from any thread; all I/O happens on the tunnel's loop thread."""

    def __init__(self, config: Any, exposes: list[Expose], names: dict[str, tuple[IPAddress, ...]] | None = None,
                 *, name: str = "gateway", timers: Any = None,
                 connect_timeout: float = LOCAL_CONNECT_TIMEOUT) -> None:
        """config: a wg-quick file or text ([Interface] with Address, one [Peer] per client); raises
        ConfigError, ValueError when a target's host does not resolve, OSError when a port cannot be bound."""
        from wgmagic.config import load_config
        from wgmagic.runtime.tunnel import Tunnel

        self.config = load_config(config)
        self.exposes = exposes
        self.names = dict(names or {})
        self.connect_timeout = connect_timeout
        # The targets are fixed: resolve them once, here, never on the loop thread for each SYN.
        self.targets = {expose: resolve_target(expose) for expose in exposes}
        self.tunnel = Tunnel(self.config, name=name, timers=timers)
        self.engine = self.tunnel.runtime_engine
        self.relays: set[SocketRelay] = set()
        self.accepted = 0
        self.refused = 0
        self.dns_answered = 0
        self._connecting: dict[tuple[Any, Any], LocalConnect] = {}
        self._dns_sockets: list[Any] = []
        try:
            self.tunnel.call_on_loop(self._setup)
        except BaseException:
            self.tunnel.close()
            raise

    def __repr__(self) -> str:
        return f"<Gateway {self.tunnel.name}: {', '.join(map(str, self.exposes))}>"

    @property
    def listen_port(self) -> int:
        """The UDP port WireGuard listens on (ListenPort, or the one the kernel chose)."""
        return self.tunnel.call_on_loop(lambda: self.engine.local_port)

    # ---- loop thread ---------------------------------------------------------------------------------
    def _setup(self) -> None:
        stack = self.engine.stack
        for expose in self.exposes:
            listener = stack.tcp_listen(expose.port, expose.address)
            listener.admit = functools.partial(self._admit, listener, expose)
        if self.names:
            own = [iface.ip for iface in self.config.interface.addresses]
            families = sorted({address.version for address in own})
            for family in families:
                sock = stack.udp_open(53, family=family)
                self._dns_sockets.append(sock)
                self.engine.udp_handlers[id(sock)] = self._on_dns

    def _admit(self, listener: Any, expose: Expose, local: tuple[Any, int], remote: tuple[Any, int]) -> object:
        """A peer's new SYN: hold it (DEFER) while the local target connects; refuse it at once (False) when
        every address of the target refuses on the spot."""
        attempt = LocalConnect(listener, local, remote, list(self.targets[expose]),
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
        self.engine.counters["gateway_local_connect_timeouts"] += 1
        self._drop_socket(attempt)
        self._settle(attempt, False)

    def _count_refusal(self, attempt: LocalConnect) -> None:
        """A peer's connection refused: counted, with why each address of the target failed (for stats())."""
        self.refused += 1
        for reason in attempt.errors:
            if reason != "timeout":
                self.engine.counters[f"gateway_local_connect_{reason}"] += 1

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

    def _on_dns(self, sock: Any) -> None:
        from wgmagic.netstack.dns import answer_query

        while (item := sock.recvfrom()) is not None:
            data, source = item
            reply = answer_query(data, self.names)
            if reply is None:
                self.engine.counters["dns_malformed_queries"] += 1
                continue
            self.dns_answered += 1
            sock.sendto(reply, source, time.monotonic())
        self.engine.pump()

    # ---- any thread ------------------------------------------------------------------------------------
    def stats(self) -> dict[str, object]:
        snapshot = self.tunnel.stats()
        connecting = self.tunnel.call_on_loop(lambda: len(self._connecting))
        snapshot.update(accepted=self.accepted, refused=self.refused, dns_answered=self.dns_answered,
                        open_relays=len(self.relays), connecting=connecting)
        return snapshot

    def close(self) -> None:
        if self.tunnel.closed:
            return
        with contextlib.suppress(Exception):
            self.tunnel.call_on_loop(self._close_on_loop, timeout=5.0)
        self.tunnel.close()

    def _close_on_loop(self) -> None:
        for attempt in list(self._connecting.values()):
            self._drop_socket(attempt)
            self._settle(attempt, False)
        for relay in list(self.relays):
            with contextlib.suppress(Exception):
                relay.close()
        for sock in self._dns_sockets:
            self.engine.udp_handlers.pop(id(sock), None)
            sock.close()

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
