"""`wgmagic gateway`: the other end of the tunnel, rootless. A user-space WireGuard responder that relays
peers' TCP connections to local services, answers ping, and answers DNS for the names it is given.

It is a Tunnel whose stack listens instead of connecting: each `--expose [ADDR:]PORT=HOST:PORT` is a TCP
listener on a tunnel address; each accepted tunnel connection is relayed to HOST:PORT on this machine by the
same SocketRelay the forwards use (bounded both ways). Peers are held to their AllowedIPs by the WireGuard
device (cryptokey routing), and under a handshake flood the device answers with cookies (mac2).
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import socket
import time
from dataclasses import dataclass
from typing import Any

from wgmagic.runtime.relay import SocketRelay

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
LOCAL_CONNECT_TIMEOUT = 2.0  # seconds; the loop waits this long at most for a local target to accept


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


class Gateway:
    """Run from any thread; all I/O happens on the tunnel's loop thread."""

    def __init__(self, config: Any, exposes: list[Expose], names: dict[str, tuple[IPAddress, ...]] | None = None,
                 *, name: str = "gateway", timers: Any = None, websocket: tuple[str, int] | None = None,
                 tls_cert: str | None = None, tls_key: str | None = None, websocket_path: str = "/wg") -> None:
        from wgmagic.config import load_config
        from wgmagic.runtime.tunnel import Tunnel

        self.config = load_config(config)
        self.exposes = exposes
        self.names = dict(names or {})
        self.tunnel = Tunnel(self.config, name=name, timers=timers)
        self.engine = self.tunnel._engine
        self.relays: set[SocketRelay] = set()
        self.accepted = 0
        self.refused = 0
        self.dns_answered = 0
        self._listeners: dict[int, Expose] = {}
        self._pending_local: dict[tuple[Any, Any], tuple[socket.socket, float]] = {}
        self._dns_sockets: list[Any] = []
        self.websocket_relay: Any = None
        self.websocket_address: tuple[str, int] | None = None
        try:
            self.tunnel._thread.call(self._setup)
            if websocket is not None:
                self._start_websocket(websocket, tls_cert, tls_key, websocket_path)
        except BaseException:
            self.tunnel.close()
            raise

    def __repr__(self) -> str:
        return f"<Gateway {self.tunnel.name}: {', '.join(map(str, self.exposes))}>"

    @property
    def listen_port(self) -> int:
        return self.engine.local_port

    def _start_websocket(self, listen: tuple[str, int], tls_cert: str | None, tls_key: str | None,
                         path: str) -> None:
        """WireGuard over WebSocket beside UDP (issue 13): the relay of `wgmagic relay`, on this gateway's own
        loop thread, toward this gateway's UDP port on loopback. Each WebSocket client gets a UDP socket of its
        own, so the WireGuard device sees one endpoint per client and roaming between UDP and WebSocket works
        unchanged (see docs/layers.md)."""
        from wgmagic.runtime.services.wsrelay import WebSocketRelay

        self.websocket_relay = WebSocketRelay(("127.0.0.1", self.listen_port), path=path)
        self.websocket_address = self.tunnel._thread.run(
            self.websocket_relay.start(*listen, tls_cert=tls_cert, tls_key=tls_key), timeout=15)

    # ---- loop thread ---------------------------------------------------------------------------------
    def _setup(self) -> None:
        stack = self.engine.stack
        for expose in self.exposes:
            listener = stack.tcp_listen(expose.port, expose.address)
            listener.admit = functools.partial(self._admit, expose)
            self._listeners[id(listener)] = expose
        self.engine.event_handlers.append(self._on_event)
        if self.names:
            own = [iface.ip for iface in self.config.interface.addresses]
            families = sorted({address.version for address in own})
            for family in families:
                sock = stack.udp_open(53, family=family)
                self._dns_sockets.append(sock)
                self.engine.udp_handlers[id(sock)] = self._on_dns

    def _on_event(self, event: object) -> bool:
        if type(event).__name__ != "TcpAccepted":
            return False
        listener = event.listener  # type: ignore[attr-defined]
        while (conn := listener.accept()) is not None:
            local = self._pending_local.pop((conn.local, conn.remote), None)
            if local is None:
                conn.abort(time.monotonic())
                continue
            self._relay(conn, local[0])
        return True

    def _admit(self, expose: Expose, local: tuple[Any, int], remote: tuple[Any, int]) -> bool:
        """A peer's SYN: connect to the local target first, so a target that is down refuses the SYN."""
        now = time.monotonic()
        for key, (sock, born) in list(self._pending_local.items()):  # SYNs that never became connections
            if now - born > 30:
                sock.close()
                del self._pending_local[key]
        try:
            infos = socket.getaddrinfo(expose.target_host, expose.target_port, type=socket.SOCK_STREAM)
            family, _, _, _, address = infos[0]
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.settimeout(LOCAL_CONNECT_TIMEOUT)  # targets are local: this is quick
            code = sock.connect_ex(address)
        except OSError:
            self.refused += 1
            return False
        if code != 0:
            sock.close()
            self.refused += 1
            return False
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._pending_local[(local, remote)] = (sock, now)
        return True

    def _relay(self, conn: Any, local: socket.socket) -> None:
        self.accepted += 1
        relay = SocketRelay(self.engine, local, conn, on_done=self.relays.discard)
        self.relays.add(relay)
        self.engine.pump_conn(conn, time.monotonic())

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
        snapshot.update(accepted=self.accepted, refused=self.refused, dns_answered=self.dns_answered,
                        open_relays=len(self.relays))
        if self.websocket_relay is not None:
            snapshot["websocket"] = self.tunnel._thread.call(self.websocket_relay.stats)
        return snapshot

    def close(self) -> None:
        if self.tunnel.closed:
            return
        if self.websocket_relay is not None:
            with contextlib.suppress(Exception):
                self.tunnel._thread.run(self.websocket_relay.close(), timeout=10)
        with contextlib.suppress(Exception):
            self.tunnel._thread.call(self._close_on_loop, timeout=5.0)
        self.tunnel.close()

    def _close_on_loop(self) -> None:
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
