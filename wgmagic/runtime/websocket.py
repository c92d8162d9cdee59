"""WireGuard datagrams over a WebSocket, for networks that block UDP.

`WebSocketTransport` is a `Transport` (transport.py) as `UdpTransport` is: `open()`, `send(datagrams)`,
`close()`, `local_port`, `kind`, `state`, `last_error`, `describe()`, `outer_stalled()`, and hands each datagram
it receives to `receive(data, addr, now)`, then `after_batch(now)` once per batch. Each WireGuard message
travels as one binary WebSocket message (RFC 6455 section 5.6), to a
`wgmagic relay` (or `wgmagic gateway --websocket`) that turns it back into a UDP datagram.

The WebSocket itself (HTTP/1.1 upgrade, framing, masking, ping/pong, close) is the `websockets` package's:
its asyncio client connects (through an HTTP CONNECT proxy from HTTPS_PROXY/NO_PROXY when one is configured,
with Basic authentication from the proxy URL) and verifies TLS; the connection object it builds is
subclassed only to take binary frames straight off its sans-I/O protocol (one callback per frame, one
`after_batch` per read, no per-message task or queue) and to write frames without a per-message await.
Everything runs on the tunnel's loop thread.

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
import ssl
import sys
import time
import urllib.parse
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from wgmagic._version import __version__
from wgmagic.runtime.transport import TransportHooks, TransportKind, TransportSettings, TransportState
from wgmagic.via import VIA_CA_ENV, check_url, mask_url

# A WireGuard message is at most one UDP payload (65,535 bytes); a message larger than this is not ours.
MAX_MESSAGE = 65536
PENDING_MAX = 256  # datagrams held while the WebSocket is (re)connecting
WRITE_BUFFER_LIMIT = 512 * 1024  # bytes waiting on the outer TCP before datagrams are dropped
OPEN_TIMEOUT = 10.0  # seconds for TCP, proxy CONNECT, TLS and the HTTP upgrade together
PING_INTERVAL = 15.0  # WebSocket pings keep middleboxes' idle timers from cutting the connection
PING_TIMEOUT = 20.0
BACKOFF_FIRST, BACKOFF_MAX = 0.25, 8.0

Receive = Callable[[bytes, tuple[str, int], float], None]
# struct tcp_info (linux/tcp.h): u8 state, ca_state, retransmits, probes, backoff, ...; u32 lost at 32, retrans
# at 36. TCP_CA_Recovery = 3, TCP_CA_Loss = 4.
_TCP_INFO = getattr(socket, "TCP_INFO", None) if sys.platform.startswith("linux") else None

def tls_context(ca_file: str | None) -> ssl.SSLContext:
    """Certificate and host-name verification against the system trust store, or only `ca_file` if given."""
    context = ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()
    return context


def proxy_for(url: str) -> str | None:
    """The HTTP proxy the environment names for this URL (HTTPS_PROXY/https_proxy, NO_PROXY), or None."""
    from websockets.proxy import get_proxy
    from websockets.uri import parse_uri

    return get_proxy(parse_uri(url))


def _where(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "wss" else 80)
    return f"{parts.hostname}:{port}"


def describe_failure(exc: BaseException, url: str, proxy: str | None) -> str:
    """One plain sentence for a failed WebSocket connection: which hop (proxy, TLS, server) and why.
    Never shows a password (the proxy is named by host and port only)."""
    from websockets.exceptions import InvalidProxyMessage, InvalidProxyStatus, InvalidStatus, ProxyError

    target = _where(url)
    shown = mask_url(url)
    proxy_name = _where(proxy.replace("http://", "ws://", 1).replace("https://", "wss://", 1)) if proxy else None
    if isinstance(exc, InvalidProxyStatus):
        status = exc.response.status_code
        reason = exc.response.reason_phrase
        credentials = ("the proxy wants a user name and password, or refused the ones given: put them in the "
                       "proxy URL (HTTPS_PROXY=http://USER:PASSWORD@proxy:port)")
        hint = {407: credentials, 401: credentials,
                403: "the proxy forbids this destination or port (many proxies allow CONNECT only to port 443)",
                502: f"the proxy could not reach {target}"}.get(status, "")
        return (f"the HTTP proxy {proxy_name} refused to CONNECT to {target}: HTTP {status} {reason}"
                + (f"; {hint}" if hint else ""))
    if isinstance(exc, (InvalidProxyMessage, ProxyError)):
        return f"the HTTP proxy {proxy_name} did not answer as an HTTP proxy ({exc})"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"TLS: the certificate of {target} is not trusted ({exc.verify_message}); give the CA that "
                f"signed it (via_ca=, --via-ca or ${VIA_CA_ENV})")
    if isinstance(exc, ssl.SSLError):
        return f"TLS with {target} failed ({exc.reason or exc})"
    if isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        hint = " (check the URL's path against the relay's --path)" if status == 404 else ""
        return f"the WebSocket server at {shown} answered HTTP {status} instead of upgrading{hint}"
    via = f" (through the HTTP proxy {proxy_name})" if proxy_name else ""
    if isinstance(exc, ConnectionRefusedError):
        return f"nothing accepts connections at {proxy_name or target}{via}: is the relay running?"
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return f"no WebSocket to {shown} within {OPEN_TIMEOUT:g} s{via}"
    if isinstance(exc, OSError):
        return f"cannot connect to {proxy_name or target}{via}: {exc.strerror or exc}"
    text = f"the WebSocket to {shown} failed{via}: {type(exc).__name__}: {exc}"
    for url_with_secrets in (proxy, url):  # a library's message may quote a URL whole
        if url_with_secrets:
            with contextlib.suppress(ValueError):
                password = urllib.parse.urlsplit(url_with_secrets).password
                if password:
                    text = text.replace(password, "***")
    return text


def flush(conn: Any) -> None:
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
    """The tunnel's datagrams as binary WebSocket messages (loop thread only).

    address: the (host, port) stamped on every received datagram (the peer's endpoint as the WireGuard
    device knows it; the relay behind the WebSocket has exactly one UDP target). on_error(message) is called
    when a connection attempt fails before any succeeded (so `connect` can fail fast with the cause).
    Counters (`ws_rx_*`, `ws_tx_*`, `ws_tx_dropped`, `ws_rx_dropped_*`, `ws_connects`, `ws_reconnects`,
    `ws_connect_failures`) go into `counters`.
    """

    kind = TransportKind.WEBSOCKET

    def __init__(self, loop: asyncio.AbstractEventLoop, url: str, address: tuple[str, int], receive: Receive,
                 after_batch: Callable[[float], None], counters: Counter[str], *, ca_file: str | None = None,
                 on_error: Callable[[str], None] | None = None,
                 on_open: Callable[[], None] | None = None) -> None:
        self.loop = loop
        self.url = check_url(url)
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
        self._conn: Any = None
        self._task: asyncio.Task[None] | None = None
        self._pending: deque[bytes] = deque(maxlen=PENDING_MAX)
        self._closed = False
        self._ever_open = False
        self._connection_class = self._make_connection_class()

    def __repr__(self) -> str:
        return f"<WebSocketTransport {mask_url(self.url)} {self.state}>"

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
        proxy = f" through the HTTP proxy {_where(self.proxy.replace('http', 'ws', 1))}" if self.proxy else ""
        return f"WebSocket {mask_url(self.url)}{proxy} ({self.state})"

    def open(self) -> None:
        self._closed = False
        self.state = TransportState.CONNECTING
        self._task = self.loop.create_task(self._run())

    def close(self) -> None:
        self._closed = True
        self.state = TransportState.CLOSED
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
        if transport.is_closing():
            counters["ws_tx_dropped"] += len(datagrams)
            return
        protocol = conn.protocol
        sent = size = 0
        for data, _ in datagrams:
            if transport.get_write_buffer_size() > WRITE_BUFFER_LIMIT:
                counters["ws_tx_dropped"] += len(datagrams) - sent
                break
            protocol.send_binary(data)
            sent += 1
            size += len(data)
        flush(conn)
        counters["ws_tx_messages"] += sent
        counters["ws_tx_bytes"] += size

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
    def _on_message(self, data: bytes) -> None:
        counters = self.counters
        counters["ws_rx_messages"] += 1
        counters["ws_rx_bytes"] += len(data)
        self.receive(data, self.address, time.monotonic())

    def _make_connection_class(self) -> type:
        from websockets.asyncio.client import ClientConnection
        from websockets.frames import BINARY, DATA_OPCODES, Frame

        owner = self

        class DatagramConnection(ClientConnection):
            """Binary frames go straight to the tunnel; the rest (handshake, pings, close) as usual."""

            def process_event(self, event: Any) -> None:
                if isinstance(event, Frame) and event.opcode in DATA_OPCODES:
                    if event.opcode is BINARY and event.fin:
                        owner._on_message(event.data)
                    else:  # text, fragments: not a WireGuard datagram
                        owner.counters["ws_rx_dropped_not_binary"] += 1
                    return
                super().process_event(event)

            def data_received(self, data: bytes) -> None:
                super().data_received(data)
                owner.after_batch(time.monotonic())

        return DatagramConnection

    # ---- connecting and reconnecting ----------------------------------------------------------------
    async def _connect(self) -> Any:
        from websockets.asyncio.client import connect

        self.proxy = proxy_for(self.url)
        kwargs: dict[str, Any] = {}
        if self.url.startswith("wss:"):
            kwargs["ssl"] = tls_context(self.ca_file)
        return await connect(self.url, proxy=self.proxy, create_connection=self._connection_class,
                             max_size=MAX_MESSAGE, compression=None, open_timeout=OPEN_TIMEOUT,
                             ping_interval=PING_INTERVAL, ping_timeout=PING_TIMEOUT, close_timeout=2,
                             user_agent_header=f"wgmagic/{__version__}", **kwargs)

    async def _run(self) -> None:
        delay = BACKOFF_FIRST
        while not self._closed:
            try:
                conn = await self._connect()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.counters["ws_connect_failures"] += 1
                self.last_error = describe_failure(exc, self.url, self.proxy)
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
            delay = BACKOFF_FIRST
            if self._pending:
                held = [(data, self.address) for data in self._pending]
                self._pending.clear()
                self.send(held)
            if self.on_open is not None and self.counters["ws_reconnects"]:
                self.on_open()
            try:
                await conn.wait_closed()
            finally:
                if self._conn is conn:
                    self._conn = None
            if self._closed:
                return
            self.state = TransportState.RECONNECTING
            self.last_error = f"the WebSocket closed ({conn.close_code or 'connection lost'}); reconnecting"
            await asyncio.sleep(BACKOFF_FIRST * random.uniform(0.8, 1.2))


def create(hooks: TransportHooks, settings: TransportSettings) -> WebSocketTransport:
    """The transport registry's factory for TransportKind.WEBSOCKET (wgmagic.runtime.transport.TRANSPORTS)."""
    if settings.url is None:
        raise ValueError("a WebSocket transport needs a ws:// or wss:// URL")
    return WebSocketTransport(hooks.loop, settings.url, settings.peer_address, hooks.receive, hooks.after_batch,
                              hooks.counters, ca_file=settings.ca_file, on_error=hooks.on_error,
                              on_open=hooks.on_open)
