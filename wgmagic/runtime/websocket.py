"""WireGuard datagrams over a WebSocket, for networks that block UDP.

`WebSocketTransport` is a `Transport` (transport.py) as `UdpTransport` is: `open()`, `send(datagrams)`,
`close()`, `local_port`, `kind`, `state`, `last_error`, `describe()`, `outer_stalled()`, and hands each datagram
it receives to `receive(data, addr, now)`, then `after_batch(now)` once per batch. How the datagrams lie inside
the WebSocket is the URL's framing (wgmagic/runtime/wsframing.py): with ws:// and wss://, each WireGuard
message travels as one binary WebSocket message (RFC 6455 section 5.6) to a `wgmagic relay` (or `wgmagic
gateway --websocket`) that turns it back into a UDP datagram; with fly+wss:// (and fly+ws://), as Fly.io's
gateways and flyctl speak it: the magic first, then length-prefixed records in text messages of raw bytes read
as one byte stream, and a keepalive record after a second with nothing sent. With Fly's framing the gateway's
certificate is verified only when a CA file is given (as flyctl does: WireGuard authenticates the peer).

The WebSocket itself (HTTP/1.1 upgrade, framing, masking, ping/pong, close) is the `websockets` package's:
its asyncio client connects (through the HTTP CONNECT proxy the environment names for the URL, with Basic
authentication from the proxy URL; handed to the library explicitly, None for a direct connection) and does
TLS, as wsconnect.py says, which also words a failed attempt; the connection object it builds
(`TunnelConnection`) is subclassed only to take data frames straight off its sans-I/O protocol (one callback
per frame, one `after_batch` per read, no per-message task or queue, and no text ever decoded as UTF-8) and to
write frames without a per-message await. Everything runs on the tunnel's loop thread.

Datagram semantics are kept: while the WebSocket (re)connects a few datagrams are held (bounded) and sent
once it is open; when the outer TCP cannot take more (its write buffer is over WRITE_BUFFER_LIMIT) datagrams
are dropped and counted, exactly as a full UDP socket buffer drops them. The inner TCP sees a loss, not an
ever-growing queue behind a stalled outer connection. A WebSocket that closes is re-established with
exponential backoff (0.25 s doubling to 8 s, with jitter); the WireGuard session carries on over the new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import sys
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.connection import Connection
from websockets.frames import DATA_OPCODES, Frame

from wgmagic._version import __version__
from wgmagic.runtime.transport import TransportHooks, TransportKind, TransportSettings, TransportState
from wgmagic.runtime.wsconnect import OPEN_TIMEOUT, describe_failure, proxy_for, tls_context, where
from wgmagic.runtime.wsframing import Framing, framing_class
from wgmagic.via import BINARY_FRAMING, check_url, mask_url, split_framing

# A WireGuard message is at most one UDP payload (65,535 bytes); a message larger than this is not ours.
MAX_MESSAGE = 65536
PENDING_MAX = 256  # datagrams held while the WebSocket is (re)connecting
WRITE_BUFFER_LIMIT = 512 * 1024  # bytes waiting on the outer TCP before datagrams are dropped
PING_INTERVAL = 15.0  # WebSocket pings keep middleboxes' idle timers from cutting the connection
PING_TIMEOUT = 20.0
BACKOFF_FIRST, BACKOFF_MAX = 0.25, 8.0

Receive = Callable[[bytes, tuple[str, int], float], None]
# struct tcp_info (linux/tcp.h): u8 state, ca_state, retransmits, probes, backoff, ...; u32 lost at 32, retrans
# at 36. TCP_CA_Recovery = 3, TCP_CA_Loss = 4.
_TCP_INFO = getattr(socket, "TCP_INFO", None) if sys.platform.startswith("linux") else None


def flush(conn: Connection) -> None:
    """Write what the connection's sans-I/O protocol has queued in one write (one syscall for a batch of
    frames, where the library's send_data writes frame by frame); its end-of-stream marker as the library
    does."""
    chunks = conn.protocol.data_to_send()
    if not chunks:
        return
    payload = b"".join(chunks)
    if payload:
        conn.transport.write(payload)
    if not all(chunks):  # b"": the protocol wants the TCP connection half-closed
        transport = conn.transport
        if transport.can_write_eof():
            with contextlib.suppress(Exception):
                transport.write_eof()
        else:
            transport.close()


# ---- the transport -----------------------------------------------------------------------------------------
class WebSocketTransport:
    """The tunnel's datagrams inside a WebSocket, framed as the URL says (loop thread only).

    url: ws:// or wss:// (one datagram per binary message, a `wgmagic relay`), or fly+wss:// / fly+ws://
    (Fly.io's framing). address: the (host, port) stamped on every received datagram (the peer's endpoint as the
    WireGuard device knows it; the server behind the WebSocket has exactly one UDP target). on_error(message) is
    called when a connection attempt fails before any succeeded (so `connect` can fail fast with the cause).
    Counters (`ws_rx_*`, `ws_tx_*` (messages: datagrams carried), `ws_tx_dropped`, `ws_tx_keepalives`, the
    framing's `ws_rx_not_binary`, `ws_rx_fly_keepalives`, `ws_rx_fly_bad_magic`, `ws_rx_fly_record_too_long`,
    `ws_connects`, `ws_reconnects`, `ws_connect_failures`) go into `counters`.
    """

    kind = TransportKind.WEBSOCKET

    def __init__(self, loop: asyncio.AbstractEventLoop, url: str, address: tuple[str, int], receive: Receive,
                 after_batch: Callable[[float], None], counters: Counter[str], *, ca_file: str | None = None,
                 on_error: Callable[[str], None] | None = None,
                 on_open: Callable[[], None] | None = None) -> None:
        self.loop = loop
        self.url = check_url(url)
        self.framing, self.ws_url = split_framing(self.url)
        self._framing_class = framing_class(self.framing)
        self.address = address
        self.receive = receive
        self.after_batch = after_batch
        self.counters = counters
        self.ca_file = ca_file
        self.on_error = on_error
        self.on_open = on_open
        self.state = TransportState.CLOSED
        self.last_error: str | None = None
        self.proxy: str | None = None
        self._conn: TunnelConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._pending: deque[bytes] = deque(maxlen=PENDING_MAX)
        self._closed = False
        self._ever_open = False
        self._last_sent = 0.0
        self._keepalive: asyncio.TimerHandle | None = None
        self._connection_class = self._make_connection_class()

    def __repr__(self) -> str:
        return f"<WebSocketTransport {mask_url(self.url)} {self.state}>"

    @property
    def server_name(self) -> str:
        """Who serves the WebSocket, for messages: "the relay", or "the Fly gateway" with Fly's framing."""
        return "the relay" if self.framing == BINARY_FRAMING else f"the {self.framing.capitalize()} gateway"

    @property
    def local_port(self) -> int:
        conn = self._conn
        if conn is None:
            return 0
        try:
            return int(conn.transport.get_extra_info("sockname")[1])
        except Exception:
            return 0

    def describe(self) -> str:
        proxy = f" through the HTTP proxy {where(self.proxy)}" if self.proxy else ""
        return f"WebSocket {mask_url(self.url)}{proxy} ({self.state})"

    def open(self) -> None:
        self._closed = False
        self.state = TransportState.CONNECTING
        self._task = self.loop.create_task(self._run())

    def close(self) -> None:
        self._closed = True
        self.state = TransportState.CLOSED
        self._stop_keepalive()
        if self._task is not None:
            self._task.cancel()
            self._task = None
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.transport.abort()
        self._pending.clear()

    # ---- sending ------------------------------------------------------------------------------------
    def send(self, datagrams: list[tuple[bytes, tuple[str, int]]]) -> None:
        conn = self._conn
        counters = self.counters
        if conn is None:
            for data, _ in datagrams:
                if len(self._pending) == PENDING_MAX:
                    counters["ws_tx_dropped"] += 1
                self._pending.append(data)
            return
        transport = conn.transport
        # The frames are queued in the protocol and written at once below, so the outer TCP's buffer is what it
        # was before this batch: over the limit, the whole batch is dropped (a full UDP buffer's semantics).
        if transport.is_closing() or transport.get_write_buffer_size() > WRITE_BUFFER_LIMIT:
            counters["ws_tx_dropped"] += len(datagrams)
            return
        payloads = [data for data, _ in datagrams]
        self._write(conn, conn.wg_framing.encode(payloads))
        counters["ws_tx_messages"] += len(payloads)
        counters["ws_tx_bytes"] += sum(len(d) for d in payloads)

    def _write(self, conn: TunnelConnection, payloads: list[bytes]) -> None:
        """Queue `payloads` as frames of the connection's framing (text or binary) and write them in one go."""
        protocol = conn.protocol
        send = protocol.send_text if conn.wg_framing.text else protocol.send_binary
        for payload in payloads:
            send(payload)  # bytes as they are: a text frame's payload is never encoded or checked here
        flush(conn)
        self._last_sent = time.monotonic()

    def _start_keepalive(self, conn: TunnelConnection) -> None:
        after = conn.wg_framing.keepalive_after
        if after is not None:
            self._keepalive = self.loop.call_later(after, self._keepalive_due, conn)

    def _stop_keepalive(self) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None

    def _keepalive_due(self, conn: TunnelConnection) -> None:
        """The framing's keepalive once `keepalive_after` seconds passed with nothing sent (Fly's: a zero-length
        record after 1 s, as flyctl writes it)."""
        self._keepalive = None
        if self._conn is not conn or self._closed:
            return
        framing = conn.wg_framing
        after = framing.keepalive_after
        if after is None:
            return
        idle = time.monotonic() - self._last_sent
        if idle >= after * 0.999:
            payload = framing.keepalive()
            if payload is not None and not conn.transport.is_closing():
                self._write(conn, [payload])
                self.counters["ws_tx_keepalives"] += 1
            wait = after
        else:
            wait = after - idle
        self._keepalive = self.loop.call_later(wait, self._keepalive_due, conn)

    def outer_stalled(self) -> bool:
        """Whether the outer TCP connection is repairing a loss right now (Linux TCP_INFO: in fast recovery or
        loss state, or segments marked lost or retransmitted and not yet acknowledged). Then the inner TCP's
        segments are delayed, not lost, and the engine holds their retransmission timers. False where
        TCP_INFO is not available."""
        conn = self._conn
        if conn is None or not _TCP_INFO:
            return False
        sock = conn.transport.get_extra_info("socket")
        if sock is None:
            return False
        try:
            info = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, 64)
        except OSError:
            return False
        if len(info) < 40:
            return False
        ca_state, backoff = info[1], info[4]
        lost, retrans = int.from_bytes(info[32:36], sys.byteorder), int.from_bytes(info[36:40], sys.byteorder)
        return ca_state >= 3 or backoff > 0 or lost > 0 or retrans > 0

    # ---- receiving (called by the connection, on the loop thread) -----------------------------------
    def _on_frame(self, conn: TunnelConnection, opcode: int, data: bytes, fin: bool) -> None:
        framing: Framing = conn.wg_framing
        datagrams = framing.decode(opcode, data, fin)
        if datagrams:
            counters = self.counters
            counters["ws_rx_messages"] += len(datagrams)
            counters["ws_rx_bytes"] += sum(len(d) for d in datagrams)
            receive, address, now = self.receive, self.address, time.monotonic()
            for datagram in datagrams:
                receive(datagram, address, now)
        if framing.failed is not None and not conn.transport.is_closing():
            # The stream cannot be resynchronised: drop this WebSocket; _run connects a new one.
            self.last_error = f"{self.server_name} sent a malformed {framing.name} stream ({framing.failed})"
            conn.transport.abort()

    def _make_framing(self) -> Framing:
        return self._framing_class(self.counters, "ws_rx_", server=False)

    def _make_connection_class(self) -> type[TunnelConnection]:
        owner = self

        class BoundConnection(TunnelConnection):
            """A TunnelConnection of this transport."""

            def __init__(self, *args: Any, **kwargs: Any) -> None:
                self.owner = owner
                super().__init__(*args, **kwargs)

        return BoundConnection

    # ---- connecting and reconnecting ----------------------------------------------------------------
    async def _connect(self) -> TunnelConnection:
        self.proxy = proxy_for(self.ws_url)
        fly = self.framing != BINARY_FRAMING
        kwargs: dict[str, Any] = {}
        if self.ws_url.startswith("wss:"):
            kwargs["ssl"] = tls_context(self.ca_file, verify=not fly or self.ca_file is not None)
        if fly:
            # Servers built on Go's x/net/websocket refuse an upgrade without Origin; flyctl sends its URL.
            kwargs["origin"] = self.ws_url
        conn = await connect(self.ws_url, proxy=self.proxy, create_connection=self._connection_class,
                             max_size=self._framing_class.max_message, compression=None,
                             open_timeout=OPEN_TIMEOUT, ping_interval=PING_INTERVAL, ping_timeout=PING_TIMEOUT,
                             close_timeout=2, user_agent_header=f"wgmagic/{__version__}", **kwargs)
        assert isinstance(conn, TunnelConnection)  # what create_connection= makes
        return conn

    async def _run(self) -> None:
        delay = BACKOFF_FIRST
        while not self._closed:
            try:
                conn = await self._connect()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.counters["ws_connect_failures"] += 1
                self.last_error = describe_failure(exc, self.ws_url, self.proxy, server=self.server_name)
                self.state = TransportState.RECONNECTING if self._ever_open else TransportState.CONNECTING
                if not self._ever_open and self.on_error is not None:
                    self.on_error(self.last_error)
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            if self._closed:
                conn.transport.abort()
                return
            self.counters["ws_connects"] += 1
            if self._ever_open:
                self.counters["ws_reconnects"] += 1
            self._ever_open = True
            self._conn = conn
            self.state = TransportState.OPEN
            self.last_error = None
            opened_at = time.monotonic()
            start = conn.wg_framing.start()  # Fly's magic, before any datagram
            if start:
                self._write(conn, start)
            if self._pending:
                held = [(data, self.address) for data in self._pending]
                self._pending.clear()
                self.send(held)
            self._start_keepalive(conn)
            if self.on_open is not None and self.counters["ws_reconnects"]:
                self.on_open()
            try:
                await conn.wait_closed()
            finally:
                if self._conn is conn:
                    self._conn = None
                    self._stop_keepalive()
            if self._closed:
                return
            self.state = TransportState.RECONNECTING
            if conn.wg_framing.failed is None:
                self.last_error = f"the WebSocket closed ({conn.close_code or 'connection lost'}); reconnecting"
            # One that lived a while reconnects at once; one that dies as soon as it opens (a server refusing
            # the stream) backs off as failed attempts do.
            if time.monotonic() - opened_at >= BACKOFF_MAX:
                delay = BACKOFF_FIRST
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, BACKOFF_MAX)


class TunnelConnection(ClientConnection):
    """The transport's WebSocket (websockets' ClientConnection): data frames go straight to the framing and the
    tunnel (`WebSocketTransport._on_frame`; never decoded as text by the library), one `after_batch` per read;
    the rest (handshake, pings, close) as usual. `owner` is set by the subclass each transport makes;
    `wg_framing` is this connection's own (a byte stream starts anew with each connection)."""

    owner: WebSocketTransport

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.wg_framing: Framing = self.owner._make_framing()

    def process_event(self, event: Any) -> None:
        if isinstance(event, Frame) and event.opcode in DATA_OPCODES:
            self.owner._on_frame(self, int(event.opcode), bytes(event.data), event.fin)
            return
        super().process_event(event)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self.owner.after_batch(time.monotonic())


def create(hooks: TransportHooks, settings: TransportSettings) -> WebSocketTransport:
    """The transport registry's factory for TransportKind.WEBSOCKET (wgmagic.runtime.transport.TRANSPORTS); the
    URL's scheme chooses the framing (wgmagic.runtime.wsframing)."""
    if settings.url is None:
        raise ValueError("a WebSocket transport needs a ws:// or wss:// URL (or fly+wss:// for Fly's framing)")
    return WebSocketTransport(hooks.loop, settings.url, settings.peer_address, hooks.receive, hooks.after_batch,
                              hooks.counters, ca_file=settings.ca_file, on_error=hooks.on_error,
                              on_open=hooks.on_open)
