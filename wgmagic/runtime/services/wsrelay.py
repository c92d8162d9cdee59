"""The relay end of WireGuard over WebSocket: WebSocket clients in, UDP to one fixed WireGuard port out.

`WebSocketRelay` accepts WebSocket clients (RFC 6455, served by the `websockets` package, optionally over
TLS) and relays each client's binary messages, one per UDP datagram, to the fixed `target` from a UDP socket
of that client's own (a connected socket: the WireGuard server sees one endpoint per client, and only the
target's datagrams come back); the target's replies go back as binary messages. It never relays anywhere
else: it is not an open relay. `wgmagic relay` runs it standalone next to any WireGuard server, and
`wgmagic gateway --websocket` runs it on the gateway's own loop thread toward the gateway's UDP port.

How the datagrams lie inside the WebSocket is the relay's framing (wgmagic/runtime/wsframing.py; `--framing`):
"binary", one datagram per binary message, what wgmagic's client speaks over ws:// and wss://; or "fly", Fly.io's
gateway framing (the client's magic, then length-prefixed records in text messages read as one byte stream), so
flyctl and `--via fly+wss://...` can use a wgmagic relay. Replies go back in the same framing.

Every byte from a client is untrusted and memory is bounded:
- a message larger than the framing's limit (64 KiB binary, 256 KiB fly) closes that client (1009, counted
  `oversized`); with the binary framing, text messages and fragments are dropped and counted (`not_binary`);
  a malformed frame, or a fly stream with a wrong magic or a record over 65,535 bytes, closes that client (1002,
  counted `protocol_error`, and `fly_bad_magic` / `fly_record_too_long`); a failed upgrade (not WebSocket,
  wrong path) is answered 400/404 and counted;
- at most `max_clients` clients (more get HTTP 503, counted `refused_full`); a client that sends nothing for
  `idle_timeout` seconds is closed (`idle_closed`); the upgrade must finish within 10 s;
- per client: the frame being read (<= the framing's largest message) and at most CLIENT_BUFFER bytes waiting
  on its TCP, TOTAL_BUFFER over all clients; beyond that, datagrams toward it are dropped (`down_dropped`), as a full
  UDP buffer would drop them. Toward the server, at most UP_QUEUE_LIMIT bytes per client (reading that
  client pauses past UP_QUEUE_HIGH, so the outer TCP's flow control holds the rest) and TOTAL_BUFFER over
  all clients (`up_dropped` beyond). Worst case: 2 * TOTAL_BUFFER + max_clients * (the framing's largest
  message + 256 KiB) over a fixed base, in practice far less; an idle client costs a few KiB (about 18 KiB measured).

Toward the server, datagrams are paced (`UpstreamPacer`): a WireGuard server in user space reads its UDP
socket one datagram at a time and holds little (wireguard-go before 2023 keeps Linux's default 208 KiB: 92
datagrams), so a burst larger than that while it waits for a CPU is lost, and the inner TCP takes it as
congestion. What a read of the client's TCP brings at once (a window's worth; after an outer stall, the whole
backlog) leaves in bursts of at most UP_BURST, refilled at UP_RATE per second, each run of equal-sized
datagrams in one segmented send (UDP_SEGMENT) where the kernel takes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import ssl
import sys
import time
from collections import Counter, deque
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.frames import DATA_OPCODES, CloseCode, Frame
from websockets.http11 import Request, Response

from wgmagic import platform
from wgmagic.addresses import format_address
from wgmagic.runtime.transport import gso_run_end
from wgmagic.runtime.websocket import flush
from wgmagic.runtime.wsframing import Framing, framing_class

MAX_MESSAGE = 65536
# Bytes waiting on one client's TCP before datagrams toward it are dropped. Enough to ride out one outer
# retransmission (>= 200 ms) at tens of MB/s, so the outer TCP's own loss recovery does not become inner loss.
CLIENT_BUFFER = 512 * 1024
SOFT_BUFFER = 64 * 1024  # past this, the total over all clients is checked too
TOTAL_BUFFER = 64 * 1024 * 1024  # bytes waiting over all clients
UDP_BATCH = 64
UDP_RCVBUF = 1 << 20
READ_CHUNK = 64 * 1024
# Toward the WireGuard server, each client's datagrams are paced (UpstreamPacer): what a read of the client's TCP
# brings (after an outer stall, the whole backlog at once) leaves at most UP_BURST at a time and UP_RATE per
# second, queued meanwhile (reading that client pauses past UP_QUEUE_HIGH). A userspace server's socket holds
# little: 208 KiB, the default that wireguard-go before 2023 keeps, is 92 datagrams of 1,420 bytes on Linux.
UP_BURST = 32
UP_RATE = 64_000.0  # datagrams per second at most, per client (about 90 MB/s of 1,420-byte datagrams)
UP_QUEUE_HIGH = 128 * 1024  # bytes queued toward the server before reading this client pauses
# The hard bound per client: reading pauses after the read that crossed UP_QUEUE_HIGH, so at most one read
# (READ_CHUNK, or asyncio's 256 KiB where READ_CHUNK cannot be set) and one message more (of the binary framing;
# the relay adds the framing's own largest message instead); past it, dropped.
UP_QUEUE_LIMIT = UP_QUEUE_HIGH + 256 * 1024 + MAX_MESSAGE
DEFAULT_MAX_CLIENTS = 1024
DEFAULT_IDLE_TIMEOUT = 600.0  # seconds without a message from a client; the client reconnects when it has more


class UpstreamPacer:
    """One client's datagrams toward the server, paced by a token bucket (sans-I/O: times are arguments).

    `push(data, now)` queues a datagram (False, and nothing queued, past `limit` bytes); `ready(now)` takes
    what may leave now: at most `burst` datagrams at once, refilled at `rate` datagrams per second;
    `next_at(now)` is when to call `ready` again (None when the queue is empty). `queued_bytes` is what waits,
    for the caller's backpressure. A datagram that finds the queue empty and a token left goes at once: pacing
    adds no delay to a flow below the rate, it only spreads out bursts.
    """

    __slots__ = ("burst", "limit", "queue", "queued_bytes", "rate", "tokens", "updated")

    def __init__(self, rate: float = UP_RATE, burst: int = UP_BURST, limit: int = UP_QUEUE_LIMIT) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("UpstreamPacer: rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self.limit = limit
        self.tokens = float(burst)
        self.updated: float | None = None
        self.queue: deque[bytes] = deque()
        self.queued_bytes = 0

    def __repr__(self) -> str:
        return f"<UpstreamPacer queued={len(self.queue)} ({self.queued_bytes} bytes) tokens={self.tokens:.1f}>"

    def _refill(self, now: float) -> None:
        if self.updated is not None and now > self.updated:
            self.tokens = min(float(self.burst), self.tokens + (now - self.updated) * self.rate)
        if self.updated is None or now > self.updated:
            self.updated = now

    def push(self, data: bytes, now: float) -> bool:
        if self.queued_bytes + len(data) > self.limit:
            return False
        self.queue.append(data)
        self.queued_bytes += len(data)
        return True

    def ready(self, now: float) -> list[bytes]:
        self._refill(now)
        count = min(int(self.tokens + 1e-9), len(self.queue))  # a token short by rounding is a token
        if count <= 0:
            return []
        self.tokens = max(0.0, self.tokens - count)
        queue = self.queue
        out = [queue.popleft() for _ in range(count)]
        self.queued_bytes -= sum(len(d) for d in out)
        return out

    def clear(self) -> None:
        """Forget what is queued (its client is gone)."""
        self.queue.clear()
        self.queued_bytes = 0

    def next_at(self, now: float) -> float | None:
        """When enough tokens for the next batch are there (a few datagrams, not one: fewer wake-ups)."""
        if not self.queue:
            return None
        self._refill(now)
        want = min(len(self.queue), max(1, self.burst // 4))
        if self.tokens + 1e-9 >= want:
            return now
        return now + (want - self.tokens) / self.rate + 1e-9


def send_connected(sock: socket.socket, datagrams: list[bytes], gso: bool, counters: Counter[str]) -> bool:
    """Send datagrams on a connected UDP socket, in order: each run of equal-sized ones (`gso_run_end`) in one
    segmented send (UDP_SEGMENT, Linux) when `gso`, else one send each. A full buffer drops (UDP semantics).
    Counts `up_messages`, `up_bytes`, `up_dropped`, `up_<errno>`, `gso_unavailable`. Returns whether segmented
    sends still work (False once the kernel refused one: the caller stops asking)."""
    pairs = [(data, None) for data in datagrams]
    sent = size = 0
    count = len(pairs)
    i = 0
    while i < count:
        end = gso_run_end(pairs, i) if gso else i + 1  # type: ignore[arg-type]
        try:
            if end - i > 1:
                try:
                    sock.sendmsg(datagrams[i:end], [(socket.SOL_UDP, platform.UDP_SEGMENT,
                                                     len(datagrams[i]).to_bytes(2, sys.byteorder))])
                except OSError as exc:
                    if exc.errno not in (errno.EINVAL, errno.EIO, errno.ENOPROTOOPT, errno.EOPNOTSUPP):
                        raise
                    gso = False  # no segmentation offload here: one datagram per call from now on
                    counters["gso_unavailable"] += 1
                    continue
            else:
                sock.send(datagrams[i])
            sent += end - i
            size += sum(len(d) for d in datagrams[i:end])
        except (BlockingIOError, InterruptedError):
            counters["up_dropped"] += end - i  # the kernel's buffer is full: UDP semantics
        except OSError as exc:
            counters[f"up_{errno.errorcode.get(exc.errno or 0, 'error')}"] += end - i
        i = end
    counters["up_messages"] += sent
    counters["up_bytes"] += size
    return gso


class _Client:
    __slots__ = ("conn", "last_seen", "pacer", "paused", "peer", "sock", "timer", "watchdog")

    def __init__(self, conn: RelayConnection, sock: socket.socket, peer: str,
                 queue_limit: int = UP_QUEUE_LIMIT) -> None:
        self.conn = conn
        self.sock = sock
        self.peer = peer
        self.last_seen = time.monotonic()
        self.watchdog: asyncio.Task[None] | None = None
        self.pacer = UpstreamPacer(limit=queue_limit)
        self.paused = False  # reading this client's TCP is paused: its queue toward the server is full
        self.timer: asyncio.TimerHandle | None = None


class RelayConnection(ServerConnection):
    """One WebSocket client of a relay (websockets' ServerConnection): data frames go through the relay's framing
    (never decoded as text by the library) straight to the client's UDP socket; handshake, pings and close as
    usual. `relay` is set by the subclass each relay makes (`WebSocketRelay._connection_class`); `wg_client` is
    the client's UDP side once the handler made it; `wg_framing` this connection's framing, from the first
    byte (Fly's magic may arrive before the handler runs)."""

    relay: WebSocketRelay
    wg_client: _Client | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.wg_framing: Framing = self.relay._framing_class(self.relay.counters, "", server=True)

    def process_event(self, event: Any) -> None:
        relay = self.relay
        if isinstance(event, Frame) and event.opcode in DATA_OPCODES:
            framing = self.wg_framing
            datagrams = framing.decode(int(event.opcode), bytes(event.data), event.fin)
            client = self.wg_client
            for datagram in datagrams:
                if client is None:  # before this client's UDP socket exists (not expected)
                    relay.counters["up_before_ready"] += 1
                else:
                    relay._up(client, datagram)
            if framing.failed is not None and self.protocol.close_sent is None:
                # The byte stream cannot be resynchronised: close this client as a protocol error.
                self.protocol.fail(CloseCode.PROTOCOL_ERROR, f"{framing.name} framing: {framing.failed}")
                flush(self)
            return
        super().process_event(event)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        client = self.wg_client
        if client is not None and client.pacer.queue and client.timer is None:
            self.relay._send_up(client)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.relay.counters["tcp_connections"] += 1
        # Read at most READ_CHUNK at a time (asyncio's default is 256 KiB): each read becomes a burst of
        # datagrams to the server, and a burst of ~180 overflows a 208 KiB UDP receive buffer (the default, and
        # what wireguard-go before 2023 keeps). 64 KiB is about what one segmented UDP send carries. (An
        # attribute of asyncio's selector transport; ignored where absent.)
        if hasattr(transport, "max_size"):
            transport.max_size = READ_CHUNK
        super().connection_made(transport)


class WebSocketRelay:
    """Runs on one asyncio loop (the caller's). target: (host, port) of the WireGuard server's UDP port;
    framing: "binary" (wgmagic's client) or "fly" (Fly.io's gateway framing; flyctl dials the path "/").
    ValueError for an unknown framing."""

    def __init__(self, target: tuple[str, int], *, path: str = "/wg", max_clients: int = DEFAULT_MAX_CLIENTS,
                 idle_timeout: float = DEFAULT_IDLE_TIMEOUT, framing: str = "binary") -> None:
        self.target_name = target
        self.framing = framing
        self._framing_class = framing_class(framing)
        self.path = "/" + path.lstrip("/")
        self.max_clients = max_clients
        self.idle_timeout = idle_timeout
        self.counters: Counter[str] = Counter()
        self.clients: dict[int, _Client] = {}
        self.server: Server | None = None
        self._target: tuple[Any, ...] = ()  # the target's socket address, once start() resolved it
        self._total_waiting = (0.0, 0)  # (when computed, bytes): refreshed at most every 50 ms
        self._family = socket.AF_INET
        self._gso = platform.enabled("udp_gso")
        self._up_queued = 0  # bytes in all clients' pacers

    def __repr__(self) -> str:
        framing = f" ({self.framing})" if self.framing != "binary" else ""
        return (f"<WebSocketRelay {self.path}{framing} -> udp {format_address(self.target_name)} "
                f"clients={len(self.clients)}>")

    # ---- lifecycle --------------------------------------------------------------------------------------
    async def start(self, host: str, port: int, *, tls_cert: str | None = None,
                    tls_key: str | None = None) -> tuple[str, int]:
        """Listen on host:port (0: any free port); returns the bound (host, port). Raises OSError naming the
        address when the bind fails, ValueError for a target that does not resolve."""
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
                process_request=self._process_request, max_size=self._framing_class.max_message, compression=None,
                open_timeout=10, ping_interval=30, ping_timeout=30, close_timeout=2, server_header="wgmagic-relay",
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
    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path != self.path:
            self.counters["refused_path"] += 1
            return connection.respond(404, "Not Found\n")
        if len(self.clients) >= self.max_clients:
            self.counters["refused_full"] += 1
            return connection.respond(503, "Too many clients\n")
        return None

    def _connection_class(self) -> type[RelayConnection]:
        relay = self

        class BoundConnection(RelayConnection):
            """A RelayConnection of this relay."""

            def __init__(self, *args: Any, **kwargs: Any) -> None:
                self.relay = relay
                super().__init__(*args, **kwargs)

        return BoundConnection

    # ---- one client ---------------------------------------------------------------------------------------
    async def _handler(self, conn: ServerConnection) -> None:
        assert isinstance(conn, RelayConnection)  # what create_connection=self._connection_class() makes
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
        client = _Client(conn, sock, format_address(address) if address else "?",
                         UP_QUEUE_LIMIT - MAX_MESSAGE + self._framing_class.max_message)
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
            if client.timer is not None:
                client.timer.cancel()
                client.timer = None
            self._up_queued -= client.pacer.queued_bytes
            client.pacer.clear()
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
        """A client's message: one UDP datagram to the target, queued in its pacer (sent by `_send_up`)."""
        client.last_seen = time.monotonic()
        if self._up_queued + len(data) > TOTAL_BUFFER or not client.pacer.push(data, client.last_seen):
            self.counters["up_dropped"] += 1  # the bounds: reading pauses long before, in practice
            return
        self._up_queued += len(data)

    def _send_up(self, client: _Client) -> None:
        """Send what the client's pacer lets go now; pause reading the client while its queue is long, and come
        back when the next batch may leave."""
        client.timer = None
        if self.clients.get(id(client.conn)) is not client:
            return  # closed meanwhile
        pacer = client.pacer
        now = time.monotonic()
        before = pacer.queued_bytes
        batch = pacer.ready(now)
        if batch:
            self._up_queued -= before - pacer.queued_bytes
            self._sendto_target(client, batch)
        transport = client.conn.transport
        if pacer.queued_bytes > UP_QUEUE_HIGH and not client.paused:
            client.paused = True
            self.counters["up_paused"] += 1
            transport.pause_reading()
        elif client.paused and pacer.queued_bytes <= UP_QUEUE_HIGH // 2:
            client.paused = False
            transport.resume_reading()
        when = pacer.next_at(now)
        if when is not None:
            client.timer = asyncio.get_running_loop().call_at(when, self._send_up, client)

    def _sendto_target(self, client: _Client, datagrams: list[bytes]) -> None:
        self._gso = send_connected(client.sock, datagrams, self._gso, self.counters)

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
        sent: list[bytes] = []
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
            sent.append(data)
            counters["down_messages"] += 1
            counters["down_bytes"] += len(data)
        if sent:
            framing: Framing = conn.wg_framing
            send = protocol.send_text if framing.text else protocol.send_binary
            for payload in framing.encode(sent):
                send(payload)  # bytes as they are (Fly's text messages are raw bytes)
            flush(conn)
