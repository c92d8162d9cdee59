"""The WebSocket end of issue 13: WebSocket clients in, UDP to one fixed WireGuard port out.

`WebSocketRelay` accepts WebSocket clients (RFC 6455, served by the `websockets` package, optionally over
TLS) and relays each client's binary messages, one per UDP datagram, to the fixed `target` from a UDP socket
of that client's own (a connected socket: the WireGuard server sees one endpoint per client, and only the
target's datagrams come back); the target's replies go back as binary messages. It never relays anywhere
else: it is not an open relay. `wgmagic relay` runs it standalone next to any WireGuard server, and
`wgmagic gateway --websocket` runs it on the gateway's own loop thread toward the gateway's UDP port.

Every byte from a client is untrusted and memory is bounded:
- a message larger than MAX_MESSAGE closes that client (1009, counted `oversized`); text messages and
  fragments are dropped and counted (`not_binary`); a malformed frame closes that client (1002, counted
  `protocol_error`); a failed upgrade (not WebSocket, wrong path) is answered 400/404 and counted;
- at most `max_clients` clients (more get HTTP 503, counted `refused_full`); a client that sends nothing for
  `idle_timeout` seconds is closed (`idle_closed`); the upgrade must finish within 10 s;
- per client: the frame being read (<= MAX_MESSAGE) and at most CLIENT_BUFFER bytes waiting on its TCP,
  TOTAL_BUFFER over all clients; beyond that, datagrams toward it are dropped (`down_dropped`), as a full
  UDP buffer would drop them. Reads are processed as they arrive (asyncio reads at most 256 KiB at a time),
  so nothing piles up inbound. Worst case: TOTAL_BUFFER + max_clients * (MAX_MESSAGE + 256 KiB) over a
  fixed base, in practice far less; an idle client costs a few KiB (about 18 KiB measured).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import ssl
import time
from collections import Counter
from typing import Any

from wgmagic.addresses import format_address
from wgmagic.runtime.websocket import flush

MAX_MESSAGE = 65536
# Bytes waiting on one client's TCP before datagrams toward it are dropped. Enough to ride out one outer
# retransmission (>= 200 ms) at tens of MB/s, so the outer TCP's own loss recovery does not become inner loss.
CLIENT_BUFFER = 512 * 1024
SOFT_BUFFER = 64 * 1024  # past this, the total over all clients is checked too
TOTAL_BUFFER = 64 * 1024 * 1024  # bytes waiting over all clients
UDP_BATCH = 64
UDP_RCVBUF = 1 << 20
READ_CHUNK = 64 * 1024
DEFAULT_MAX_CLIENTS = 1024
DEFAULT_IDLE_TIMEOUT = 600.0  # seconds without a message from a client; the client reconnects when it has more


class _Client:
    __slots__ = ("conn", "last_seen", "peer", "sock", "watchdog")

    def __init__(self, conn: Any, sock: socket.socket, peer: str) -> None:
        self.conn = conn
        self.sock = sock
        self.peer = peer
        self.last_seen = time.monotonic()
        self.watchdog: asyncio.Task[None] | None = None


class WebSocketRelay:
    """Runs on one asyncio loop (the caller's). target: (host, port) of the WireGuard server's UDP port."""

    def __init__(self, target: tuple[str, int], *, path: str = "/wg", max_clients: int = DEFAULT_MAX_CLIENTS,
                 idle_timeout: float = DEFAULT_IDLE_TIMEOUT) -> None:
        self.target_name = target
        self.path = "/" + path.lstrip("/")
        self.max_clients = max_clients
        self.idle_timeout = idle_timeout
        self.counters: Counter[str] = Counter()
        self.clients: dict[int, _Client] = {}
        self.server: Any = None
        self._target: tuple[Any, ...] | None = None
        self._total_waiting = (0.0, 0)  # (when computed, bytes): refreshed at most every 50 ms
        self._family = socket.AF_INET

    def __repr__(self) -> str:
        return (f"<WebSocketRelay {self.path} -> udp {format_address(self.target_name)} "
                f"clients={len(self.clients)}>")

    # ---- lifecycle --------------------------------------------------------------------------------------
    async def start(self, host: str, port: int, *, tls_cert: str | None = None,
                    tls_key: str | None = None) -> tuple[str, int]:
        """Listen on host:port (0: any free port); returns the bound (host, port). Raises OSError naming the
        address when the bind fails, ValueError for a target that does not resolve."""
        from websockets.asyncio.server import serve

        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(*self.target_name, type=socket.SOCK_DGRAM)
        except socket.gaierror as exc:
            raise ValueError(f"--to {self.target_name[0]}:{self.target_name[1]} does not resolve "
                             f"({exc.strerror})") from None
        self._family, _, _, _, self._target = infos[0]
        context = None
        if tls_cert:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(tls_cert, tls_key)
        try:
            self.server = await serve(
                self._handler, host, port, ssl=context, create_connection=self._connection_class(),
                process_request=self._process_request, max_size=MAX_MESSAGE, compression=None, open_timeout=10,
                ping_interval=30, ping_timeout=30, close_timeout=2, server_header="wgmagic-relay",
                write_limit=CLIENT_BUFFER)
        except OSError as exc:
            from wgmagic.runtime.services.listener import bind_error

            raise bind_error(exc, f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
                             "WebSocket clients") from None
        bound = self.server.sockets[0].getsockname()
        return bound[0], bound[1]

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            for client in list(self.clients.values()):
                client.conn.transport.abort()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 5)
            self.server = None

    def stats(self) -> dict[str, int]:
        return {"clients": len(self.clients), **self.counters}

    # ---- the upgrade --------------------------------------------------------------------------------------
    def _process_request(self, connection: Any, request: Any) -> Any:
        path = request.path.split("?", 1)[0]
        if path != self.path:
            self.counters["refused_path"] += 1
            return connection.respond(404, "Not Found\n")
        if len(self.clients) >= self.max_clients:
            self.counters["refused_full"] += 1
            return connection.respond(503, "Too many clients\n")
        return None

    def _connection_class(self) -> type:
        from websockets.asyncio.server import ServerConnection
        from websockets.frames import BINARY, DATA_OPCODES, Frame

        relay = self

        class DatagramConnection(ServerConnection):
            """Binary frames go straight to the client's UDP socket; handshake, pings and close as usual."""

            wg_client: _Client | None = None

            def process_event(self, event: Any) -> None:
                if isinstance(event, Frame) and event.opcode in DATA_OPCODES:
                    client = self.wg_client
                    if event.opcode is not BINARY or not event.fin:
                        relay.counters["not_binary"] += 1
                    elif client is None:  # before this client's UDP socket exists (not expected)
                        relay.counters["up_before_ready"] += 1
                    else:
                        relay._up(client, event.data)
                    return
                super().process_event(event)

            def connection_made(self, transport: Any) -> None:
                relay.counters["tcp_connections"] += 1
                # Read at most READ_CHUNK at a time (asyncio's default is 256 KiB): each read becomes a burst of
                # datagrams to the server, and a burst of ~180 overflows a 208 KiB UDP receive buffer (the
                # default, and what wireguard-go before 2023 keeps). 64 KiB is about what one segmented UDP
                # send carries. (An attribute of asyncio's selector transport; ignored where absent.)
                if hasattr(transport, "max_size"):
                    transport.max_size = READ_CHUNK
                super().connection_made(transport)

        return DatagramConnection

    # ---- one client ---------------------------------------------------------------------------------------
    async def _handler(self, conn: Any) -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(self._family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            # Room for a burst from the server while this loop is busy with other clients (kernel memory,
            # used only while backlogged; the kernel caps it at net.core.rmem_max).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RCVBUF)
            sock.connect(self._target)  # only the target's datagrams reach this socket
        except OSError:
            sock.close()
            self.counters["udp_socket_failed"] += 1
            return
        address = conn.remote_address
        client = _Client(conn, sock, format_address(address) if address else "?")
        conn.wg_client = client
        self.clients[id(conn)] = client
        self.counters["accepted"] += 1
        loop.add_reader(sock.fileno(), self._down, client)
        client.watchdog = loop.create_task(self._watch_idle(client))
        try:
            await conn.wait_closed()
        finally:
            sent = conn.protocol.close_sent  # what we closed with: 1009 too big, 1002/1007 malformed
            code = sent.code if sent is not None else conn.close_code
            if code == 1009:
                self.counters["oversized"] += 1
            elif code in (1002, 1007):
                self.counters["protocol_error"] += 1
            self.clients.pop(id(conn), None)
            conn.wg_client = None
            with contextlib.suppress(Exception):
                loop.remove_reader(sock.fileno())
            sock.close()
            if client.watchdog is not None:
                client.watchdog.cancel()
            self.counters["closed"] += 1

    async def _watch_idle(self, client: _Client) -> None:
        while True:
            wait = client.last_seen + self.idle_timeout - time.monotonic()
            if wait <= 0:
                self.counters["idle_closed"] += 1
                await client.conn.close(1001, "idle")
                return
            await asyncio.sleep(wait)

    def _up(self, client: _Client, data: bytes) -> None:
        """A client's message: one UDP datagram to the target."""
        client.last_seen = time.monotonic()
        counters = self.counters
        try:
            client.sock.send(data)
        except (BlockingIOError, InterruptedError):
            counters["up_dropped"] += 1  # the kernel's buffer is full: UDP semantics
            return
        except OSError as exc:
            counters[f"up_{errno.errorcode.get(exc.errno or 0, 'error')}"] += 1
            return
        counters["up_messages"] += 1
        counters["up_bytes"] += len(data)

    def _waiting_total(self) -> int:
        """Bytes waiting on all clients' TCP connections (recomputed at most every 50 ms)."""
        now = time.monotonic()
        when, total = self._total_waiting
        if now - when > 0.05:
            total = sum(c.conn.transport.get_write_buffer_size() for c in self.clients.values())
            self._total_waiting = (now, total)
        return total

    def _down(self, client: _Client) -> None:
        """The target answered: its datagrams go back as binary messages (dropped past the buffer bounds)."""
        conn = client.conn
        transport = conn.transport
        protocol = conn.protocol
        counters = self.counters
        sent = 0
        for _ in range(UDP_BATCH):
            try:
                data = client.sock.recv(65535)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # ICMP port unreachable from the target, reported on the next call
                counters["target_unreachable"] += 1
                break
            waiting = transport.get_write_buffer_size()
            if transport.is_closing() or (waiting > SOFT_BUFFER and (
                    waiting > CLIENT_BUFFER or self._waiting_total() > TOTAL_BUFFER)):
                counters["down_dropped"] += 1
                continue
            protocol.send_binary(data)
            sent += 1
            counters["down_messages"] += 1
            counters["down_bytes"] += len(data)
        if sent:
            flush(conn)
