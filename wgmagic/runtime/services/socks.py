"""A SOCKS5 server (RFC 1928, with RFC 1929 username/password) whose CONNECTs go through the tunnel.

The negotiation is a small sans-I/O parser (wgmagic.proto.socks5) fed with whatever bytes arrive; the
loop-side server drives it from a non-blocking socket and, once the CONNECT succeeds, hands the socket to a
SocketRelay. UDP ASSOCIATE (section 7) hands the control connection to a UdpAssociation (socks_udp.py).

Private to its user by default: `Tunnel.socks()` listens on a Unix socket in a fresh 0700 directory (curl
>= 7.84: `--proxy socks5h://localhost/PATH`; Python: `socks5_connect(PATH, host, port)` here); on TCP it asks
for RFC 1929 credentials, generated per proxy unless given, and only `no_auth=True` (with a warning) serves
any local user without them.
"""

from __future__ import annotations

import contextlib
import ipaddress
import secrets
import socket
import struct
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from wgmagic import explain
from wgmagic.proto.socks5 import (
    ATYP_DOMAIN,
    ATYP_IPV4,
    ATYP_IPV6,
    CMD_CONNECT,
    NO_ACCEPTABLE,
    NO_AUTH,
    REP_CONNECTION_REFUSED,
    REP_GENERAL_FAILURE,
    REP_HOST_UNREACHABLE,
    REP_NETWORK_UNREACHABLE,
    REP_SUCCEEDED,
    REP_TTL_EXPIRED,
    USER_PASS,
    VERSION,
    Connect,
    Fail,
    Send,
    Socks5Negotiation,
    UdpAssociate,
    reply,
)
from wgmagic.runtime.relay import HappyEyeballs, SocketRelay
from wgmagic.runtime.seams import EngineAPI
from wgmagic.runtime.services.listener import accept_pending, close_listener, listen_inet, listen_unix, receive

if TYPE_CHECKING:
    from wgmagic.netstack.tcp.connection import TcpConnection

NEGOTIATION_TIMEOUT = 10.0
CONNECT_TIMEOUT = 15.0  # seconds a CONNECT may take to reach its target through the tunnel
MAX_UDP_ASSOCIATIONS = 256  # per proxy; each holds a loopback UDP socket and a tunnel-side one per family
SOCKET_NAME = "socks5.sock"


def generate_credentials() -> tuple[str, str]:
    """A fresh RFC 1929 (username, password) for one proxy: URL-safe, so they fit in socks5h://user:pass@."""
    return f"wg-{secrets.token_hex(4)}", secrets.token_urlsafe(18)


ERROR_REPLIES: dict[type[BaseException], int] = {
    ConnectionRefusedError: REP_CONNECTION_REFUSED,
    TimeoutError: REP_HOST_UNREACHABLE,
}


class Socks5Server:
    """A SOCKS5 listener on the tunnel's loop thread: TCP on `host`:`port`, or (unix=True) a Unix socket in
    `unix_dir` or a fresh 0700 directory. `credentials` (RFC 1929) are never shown by repr."""

    def __init__(self, engine: EngineAPI, resolver: Any, host: str = "127.0.0.1", port: int = 1080,
                 credentials: tuple[str, str] | None = None, *, unix: bool = False,
                 unix_dir: str | None = None) -> None:
        self.engine = engine
        self.resolver = resolver  # async callable: name -> list of addresses (through the tunnel's DNS)
        self.credentials = credentials
        self.socket_dir: str | None = None
        self.owns_socket_dir = False
        if unix or unix_dir is not None:
            self.listener, self.address, self.socket_dir, self.owns_socket_dir = listen_unix(
                SOCKET_NAME, unix_dir, socket.SOCK_STREAM, backlog=128,
                alternative="choose a shorter directory, or a TCP port (with credentials)")
        else:
            self.listener, self.address = listen_inet(host, port, socket.SOCK_STREAM, backlog=128,
                                                      what="the SOCKS5 proxy")
        self.clients: set[_SocksClient] = set()
        self.relays: set[SocketRelay] = set()
        self.associations: set[Any] = set()  # UdpAssociation
        self.counters = {"accepted": 0, "connected": 0, "rejected": 0, "udp_associations": 0}
        self.udp_drops: Counter[str] = Counter()  # every UDP ASSOCIATE datagram dropped, by reason
        self.closed = False
        engine.loop.add_reader(self.listener.fileno(), self._on_accept)

    @property
    def is_unix(self) -> bool:
        return isinstance(self.address, str)

    def proxy_url(self, *, reveal: bool = False) -> str:
        """The proxy as curl and most clients take it: socks5h://localhost/PATH for the Unix socket (curl
        >= 7.84), socks5h://[user:password@]host:port on TCP; the password shows as *** unless `reveal`."""
        if self.is_unix:
            return f"socks5h://localhost{self.address}"
        host, port = self.address[:2]
        host = f"[{host}]" if ":" in host else host
        auth = ""
        if self.credentials is not None:
            auth = f"{self.credentials[0]}:{self.credentials[1] if reveal else '***'}@"
        return f"socks5h://{auth}{host}:{port}"

    def stats(self) -> dict[str, Any]:
        """Connections accepted/connected/rejected, UDP associations opened and open, UDP drops by reason
        (from any thread: read on the loop)."""
        from wgmagic.runtime.services.udp_forward import run_on_loop

        def snapshot() -> dict[str, Any]:
            return {**self.counters, "udp_associations_open": len(self.associations),
                    "udp_drops": dict(self.udp_drops)}

        return run_on_loop(self.engine.loop, snapshot)

    def __repr__(self) -> str:
        from wgmagic.addresses import format_address

        where = format_address(self.address)
        return f"<Socks5Server {where} auth={'on' if self.credentials else 'off'}>"

    def _on_accept(self) -> None:
        accept_pending(self.listener, self._on_client)

    def _on_client(self, sock: socket.socket, _peer: Any) -> None:
        self.counters["accepted"] += 1
        self.clients.add(_SocksClient(self, sock))

    def close_on_loop(self) -> None:
        if self.closed:
            return
        self.closed = True
        close_listener(self.engine.loop, self.listener, self.address, self.socket_dir, self.owns_socket_dir)
        for client in list(self.clients):
            client.close()
        for relay in list(self.relays):
            relay.close()
        for association in list(self.associations):
            association.close()


class _SocksClient:
    def __init__(self, server: Socks5Server, sock: socket.socket) -> None:
        self.server = server
        self.loop = server.engine.loop
        self.sock = sock
        sock.setblocking(False)
        self.negotiation = Socks5Negotiation(server.credentials)
        self.attempt: HappyEyeballs | None = None
        self.closed = False
        self.loop.add_reader(sock.fileno(), self._on_readable)
        self.timeout = self.loop.call_later(NEGOTIATION_TIMEOUT, self.close)

    def _on_readable(self) -> None:
        data = receive(self.sock)
        if data is None:
            return
        if not data:
            self.close()
            return
        for action in self.negotiation.feed(data):
            if isinstance(action, Send):
                self._send(action.data)
            elif isinstance(action, Fail):
                self.server.counters["rejected"] += 1
                self._send(action.data)
                self.close()
                return
            elif isinstance(action, UdpAssociate):
                self._udp_associate(action)
                return
            else:
                self.loop.remove_reader(self.sock.fileno())
                self.loop.create_task(self._connect(action))

    def _udp_associate(self, request: UdpAssociate) -> None:
        """Hand the control connection to a UdpAssociation and reply with its relay's address."""
        from wgmagic.runtime.services.socks_udp import UdpAssociation

        self.loop.remove_reader(self.sock.fileno())
        if len(self.server.associations) >= MAX_UDP_ASSOCIATIONS:
            self.server.counters["rejected"] += 1
            self._send(reply(REP_GENERAL_FAILURE))
            self.close()
            return
        try:
            association = UdpAssociation(self.server, self.sock, (request.host, request.port))
        except OSError:
            self.server.counters["rejected"] += 1
            self._send(reply(REP_GENERAL_FAILURE))
            self.close()
            return
        self.timeout.cancel()
        self.closed = True  # the socket is the association's now
        self.server.clients.discard(self)
        self.server.associations.add(association)
        self.server.counters["udp_associations"] += 1
        self._send(reply(REP_SUCCEEDED, association.address))

    def _send(self, data: bytes) -> None:
        if data:
            with contextlib.suppress(OSError):
                self.sock.send(data)  # a few bytes into an empty socket buffer: never partial in practice

    async def _connect(self, request: Connect) -> None:
        """Resolve (a domain name through the tunnel's DNS, keeping the addresses the tunnel can route, in
        RFC 6724 order) and connect RFC 8305 style; reply, then relay."""
        engine = self.server.engine
        try:
            try:
                addresses = [ipaddress.ip_address(request.host)]
            except ValueError:
                addresses = await self.server.resolver(request.host)
        except Exception as exc:
            from wgmagic.errors import NoRouteError

            self._send(reply(REP_NETWORK_UNREACHABLE if isinstance(exc, NoRouteError) else REP_HOST_UNREACHABLE))
            self.server.counters["rejected"] += 1
            self.close()
            return
        if self.closed:
            return
        addresses = engine.routes.select(addresses)
        if not addresses:
            self._send(reply(REP_NETWORK_UNREACHABLE))
            self.server.counters["rejected"] += 1
            self.close()
            return
        sock = self.sock

        def on_relay_connected(relay: SocketRelay) -> None:
            local = relay.conn.local
            self.server.counters["connected"] += 1
            with contextlib.suppress(OSError):
                sock.send(reply(REP_SUCCEEDED, (str(local[0]), local[1])))
            early = bytes(self.negotiation.buffer)  # bytes a client pipelined behind its request
            if early:
                relay.conn.send(early)

        def connected(conn: TcpConnection) -> None:
            self.attempt = None
            if self.closed:  # negotiation timed out meanwhile
                conn.abort(time.monotonic())
                engine.pump_conn(conn)
                return
            self.timeout.cancel()
            self.server.clients.discard(self)
            relay = SocketRelay(engine, sock, conn, on_done=self.server.relays.discard,
                                on_connected=on_relay_connected, connected=True)
            if not relay.done:
                self.server.relays.add(relay)

        def failed(error: BaseException) -> None:
            self.attempt = None
            code = next((c for t, c in ERROR_REPLIES.items() if isinstance(error, t)), REP_HOST_UNREACHABLE)
            self.server.counters["rejected"] += 1
            self._send(reply(code))
            self.close()

        self.timeout.cancel()
        self.timeout = self.loop.call_later(CONNECT_TIMEOUT + NEGOTIATION_TIMEOUT, self.close)
        self.attempt = HappyEyeballs(engine, addresses, request.port, CONNECT_TIMEOUT, connected, failed)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.timeout.cancel()
        if self.attempt is not None:
            self.attempt.close()
            self.attempt = None
        with contextlib.suppress(Exception):
            self.loop.remove_reader(self.sock.fileno())
        with contextlib.suppress(OSError):
            self.sock.close()
        self.server.clients.discard(self)


def socks5_connect(proxy: str | tuple[str, int], host: str, port: int, *,
                   credentials: tuple[str, str] | None = None, timeout: float | None = 15.0) -> socket.socket:
    """A TCP connection to host:port through a SOCKS5 proxy (RFC 1928 CONNECT, names resolved by the proxy:
    through the tunnel), as a connected blocking socket; standard library only, for Python clients of a
    Unix-socket proxy (which PySocks and httpx cannot reach).

    proxy: the Unix socket's path (`server.address`) or (host, port); credentials: RFC 1929 (user, password)
    for a TCP proxy that asks for them. Raises ConnectionRefusedError, TimeoutError (REP 4, 6) or OSError
    naming the proxy's reply code; ValueError for a name longer than 255 bytes.
    """
    if isinstance(proxy, str):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(proxy)
        except BaseException:
            sock.close()
            raise
    else:
        sock = socket.create_connection(proxy, timeout=timeout)
    try:
        _client_negotiate(sock, host, port, credentials, CMD_CONNECT)
    except BaseException:
        sock.close()
        raise
    return sock


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        piece = sock.recv(size - len(data))
        if not piece:
            raise ConnectionError("the SOCKS5 proxy closed the connection")
        data += piece
    return data


def _client_negotiate(sock: socket.socket, host: str, port: int, credentials: tuple[str, str] | None,
                      command: int) -> tuple[str, int]:
    """The client side of greeting, RFC 1929 sub-negotiation and request; returns BND.ADDR, BND.PORT."""
    sock.sendall(bytes((VERSION, 1, USER_PASS if credentials else NO_AUTH)))
    version, method = _recv_exactly(sock, 2)
    if version != VERSION or method == NO_ACCEPTABLE:
        raise PermissionError("the SOCKS5 proxy accepts none of the offered authentication methods"
                              + ("" if credentials else " (it may want a username and password)"))
    if method == USER_PASS:
        if credentials is None:
            raise PermissionError("the SOCKS5 proxy wants a username and password")
        user, password = (c.encode() for c in credentials)
        sock.sendall(bytes((1, len(user))) + user + bytes((len(password),)) + password)
        if _recv_exactly(sock, 2)[1] != 0:
            raise PermissionError("the SOCKS5 proxy refused the username or password")
    try:
        address = ipaddress.ip_address(host.strip("[]"))
        target = bytes((ATYP_IPV4 if address.version == 4 else ATYP_IPV6,)) + address.packed
    except ValueError:
        name = host.encode("idna")
        if len(name) > 255:
            raise ValueError(f"host name {host!r} is longer than SOCKS5's 255 bytes") from None
        target = bytes((ATYP_DOMAIN, len(name))) + name
    sock.sendall(bytes((VERSION, command, 0)) + target + struct.pack("!H", port))
    _version, code, _rsv, atyp = _recv_exactly(sock, 4)
    size = {ATYP_IPV4: 4, ATYP_IPV6: 16}.get(atyp)
    raw = _recv_exactly(sock, size) if size else _recv_exactly(sock, _recv_exactly(sock, 1)[0])
    bound_port = int.from_bytes(_recv_exactly(sock, 2), "big")
    if code != REP_SUCCEEDED:
        if code == REP_CONNECTION_REFUSED:
            raise ConnectionRefusedError(str(explain.connection_refused(host, port, through="the SOCKS5 proxy")))
        if code in (REP_HOST_UNREACHABLE, REP_TTL_EXPIRED):
            raise TimeoutError(str(explain.proxy_unreachable(host, port, code)))
        raise OSError(str(explain.proxy_failed(host, port, code)))
    bound = str(ipaddress.ip_address(raw)) if size else raw.decode("idna", "replace")
    return bound, bound_port
