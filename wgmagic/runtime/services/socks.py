"""A SOCKS5 server (RFC 1928, with RFC 1929 username/password) whose CONNECTs go through the tunnel.

The negotiation is a small sans-I/O parser (wgmagic.proto.socks5) fed with whatever bytes arrive; this server drives it
from a non-blocking socket and, once the CONNECT succeeds, hands the socket to a SocketRelay.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import time
from typing import Any

from wgmagic.proto.socks5 import (  # noqa: F401  (re-exported: their home was this module)
    ATYP_DOMAIN,
    ATYP_IPV4,
    ATYP_IPV6,
    CMD_CONNECT,
    MAX_NEGOTIATION_BYTES,
    NO_ACCEPTABLE,
    NO_AUTH,
    REP_ADDRESS_TYPE_NOT_SUPPORTED,
    REP_COMMAND_NOT_SUPPORTED,
    REP_CONNECTION_REFUSED,
    REP_GENERAL_FAILURE,
    REP_HOST_UNREACHABLE,
    REP_NETWORK_UNREACHABLE,
    REP_NOT_ALLOWED,
    REP_SUCCEEDED,
    REP_TTL_EXPIRED,
    USER_PASS,
    VERSION,
    Connect,
    Fail,
    Send,
    Socks5Negotiation,
    reply,
)
from wgmagic.runtime.relay import HappyEyeballs, SocketRelay
from wgmagic.runtime.services.forward import warn_if_exposed

NEGOTIATION_TIMEOUT = 10.0
CONNECT_TIMEOUT = 15.0  # seconds a CONNECT may take to reach its target through the tunnel


ERROR_REPLIES: dict[type[BaseException], int] = {
    ConnectionRefusedError: REP_CONNECTION_REFUSED,
    TimeoutError: REP_HOST_UNREACHABLE,
}


class Socks5Server:
    """A loopback SOCKS5 listener on the tunnel's loop thread."""

    def __init__(self, engine: Any, resolver: Any, host: str = "127.0.0.1", port: int = 1080,
                 credentials: tuple[str, str] | None = None) -> None:
        self.engine = engine
        self.resolver = resolver  # async callable: name -> list of addresses (through the tunnel's DNS)
        self.credentials = credentials
        warn_if_exposed(host, "the SOCKS5 proxy")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.listener = socket.socket(family, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, port))
        self.listener.listen(128)
        self.listener.setblocking(False)
        self.address = self.listener.getsockname()[:2]
        self.clients: set[_SocksClient] = set()
        self.relays: set[SocketRelay] = set()
        self.counters = {"accepted": 0, "connected": 0, "rejected": 0}
        self.closed = False
        engine.loop.add_reader(self.listener.fileno(), self._on_accept)

    def __repr__(self) -> str:
        return f"<Socks5Server {self.address[0]}:{self.address[1]} auth={'on' if self.credentials else 'off'}>"

    def _on_accept(self) -> None:
        for _ in range(64):
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            self.counters["accepted"] += 1
            self.clients.add(_SocksClient(self, sock))

    def close_on_loop(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            self.engine.loop.remove_reader(self.listener.fileno())
        self.listener.close()
        for client in list(self.clients):
            client.close()
        for relay in list(self.relays):
            relay.close()


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
        try:
            data = self.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
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
            else:
                self.loop.remove_reader(self.sock.fileno())
                self.loop.create_task(self._connect(action))

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
        addresses = engine.select_addresses(addresses)
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

        def connected(conn: Any) -> None:
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
