"""How the tunnel's WireGuard datagrams reach the peer: one swappable piece of the runtime.

`UdpTransport` is the plain one: a dual-stack UDP socket on the loop thread, drained in batches, with
segmented sends (UDP_SEGMENT, Linux's GSO) where the kernel takes them. A transport that carries the same
datagrams another way (a WebSocket, for networks that block UDP) offers the same interface, `Transport`:
`open()`, `send(datagrams)`, `close()`, `local_port`, what it is (`kind`, `describe()`, `state`, `last_error`)
and `outer_stalled()`, and hands what it receives to `receive(data, addr, now)` then calls `after_batch(now)`
once per batch. The engine asks only through this interface.

Choosing one, in one place: `TRANSPORTS` maps each `TransportKind` to the factory that builds it
(`"module:function"`, imported when first used), and `kind_for(via)` says which one a `Via` names; the order
to try them in is `wgmagic.runtime.fallback.plan` (`connect()`, `connect_async()` and the doctor ask it). A new
transport is one module with a `create(hooks, settings)` function, one `TransportKind` member and one line in
`TRANSPORTS`; `create_udp` below is the example.
"""

from __future__ import annotations

import asyncio
import enum
import errno
import importlib
import ipaddress
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from wgmagic import platform
from wgmagic.runtime import udp_batch
from wgmagic.runtime.udp_batch import BatchReceiver, sockaddr_address
from wgmagic.via import Via, ViaMode

RECV_BATCH = 512  # datagrams read per readiness of the socket, at most, before the engine pumps
RECVMMSG_COUNT = 64  # datagrams per recvmmsg call (0: one recvfrom each); wgmagic.runtime.udp_batch
# A segmented send carries a run of equal-sized datagrams to one address; the kernel cuts them apart. A
# batch stays under 64 KiB and 44 segments (what one sendmsg may hold on the kernels we know).
GSO_MAX_SEGMENTS = 44
GSO_MAX_BYTES = 65000
SOCKET_BUFFER = 16 * 1024 * 1024

Receive = Callable[[bytes, tuple[str, int], float], None]


class TransportKind(str, enum.Enum):
    """Which way the WireGuard datagrams travel; the value is the word status lines and options use."""

    UDP = "udp"
    WEBSOCKET = "websocket"

    def __str__(self) -> str:
        return self.value


class TransportState(str, enum.Enum):
    """A transport's state: CONNECTING (first open under way), OPEN, RECONNECTING (lost, coming back), CLOSED."""

    CONNECTING = "connecting"
    OPEN = "open"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"

    def __str__(self) -> str:
        return self.value


class Transport(Protocol):
    """What the engine needs of the way its WireGuard datagrams travel (loop thread only).

    kind: a TransportKind; state: a TransportState; last_error: why the last attempt to open it failed (one
    sentence, no secret), or None; receive: called with (datagram, (host, port), now) for each datagram that
    arrives (a capture may wrap it).
    """

    kind: TransportKind
    receive: Receive
    last_error: str | None

    @property
    def state(self) -> TransportState: ...

    @property
    def local_port(self) -> int: ...

    def open(self) -> None: ...

    def send(self, datagrams: list[tuple[bytes, tuple[str, int]]]) -> None: ...

    def close(self) -> None: ...

    def describe(self) -> str:
        """What carries the datagrams, for status lines and messages ("UDP", "WebSocket wss://... (open)");
        never a password."""
        ...

    def outer_stalled(self) -> bool:
        """Whether a reliable outer connection is repairing a loss right now (TCP over TCP): then the inner TCP's
        segments are delayed, not lost, and the engine holds their retransmission timers."""
        ...


@dataclass
class TransportHooks:
    """What the engine hands a transport it creates (all called on `loop`): receive(datagram, (host, port),
    now) per datagram, after_batch(now) once per batch read; on_refused() for ICMP port unreachable (UDP);
    on_error(sentence) when it cannot open, on_open() when it (re)opened (a WebSocket); counters to count in."""

    loop: asyncio.AbstractEventLoop
    receive: Receive
    after_batch: Callable[[float], None]
    counters: Counter[str]
    on_refused: Callable[[], None]
    on_error: Callable[[str], None]
    on_open: Callable[[], None]


@dataclass(frozen=True)
class TransportSettings:
    """listen_port: the UDP port to bind (0: any); url / ca_file: a WebSocket relay and the PEM file to verify
    wss:// with; peer_address: the (host, port) received datagrams are reported from when the transport has no
    addresses of its own (a WebSocket: the relay knows the peer)."""

    listen_port: int = 0
    url: str | None = None
    ca_file: str | None = None
    peer_address: tuple[str, int] = ("websocket", 0)


TransportFactory = Callable[[TransportHooks, TransportSettings], Transport]

# The registry: one line per transport ("module:function", imported on first use).
TRANSPORTS: dict[TransportKind, str] = {
    TransportKind.UDP: "wgmagic.runtime.transport:create_udp",
    TransportKind.WEBSOCKET: "wgmagic.runtime.websocket:create",
}


def transport_factory(kind: TransportKind) -> TransportFactory:
    """The factory registered for `kind` (KeyError if none)."""
    module, _, name = TRANSPORTS[kind].partition(":")
    factory: TransportFactory = getattr(importlib.import_module(module), name)
    return factory


def kind_for(via: Via | None) -> TransportKind:
    """The transport a `Via` names (None or UDP or AUTO: UDP first; WEBSOCKET: the WebSocket)."""
    return TransportKind.WEBSOCKET if via is not None and via.mode is ViaMode.WEBSOCKET else TransportKind.UDP


def create_udp(hooks: TransportHooks, settings: TransportSettings) -> UdpTransport:
    """The registry's factory for TransportKind.UDP."""
    return UdpTransport(hooks.loop, settings.listen_port, hooks.receive, hooks.after_batch, hooks.on_refused,
                        hooks.counters)


def normalize_address(addr: tuple[Any, ...]) -> tuple[str, int]:
    """(host, port) from a socket address; IPv4-mapped IPv6 (::ffff:a.b.c.d) becomes plain IPv4."""
    host = addr[0]
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return host, addr[1]


class UdpTransport:
    """The tunnel's UDP socket (loop thread only).

    listen_port: 0 for any free port (a client), or the gateway's ListenPort. `receive(data, (host, port),
    now)` is called for each datagram and `after_batch(now)` once a batch has been read; `on_refused()` when
    the kernel reports ICMP port unreachable for something we sent. Counters (`udp_rx_*`, `udp_tx_*`,
    `gso_unavailable`, `endpoint_refused`, `sendto_<errno>`) go into `counters`.
    """

    kind = TransportKind.UDP
    last_error: str | None = None  # binding fails loudly in open(); a datagram transport has no session to lose

    def __init__(self, loop: asyncio.AbstractEventLoop, listen_port: int, receive: Receive,
                 after_batch: Callable[[float], None], on_refused: Callable[[], None],
                 counters: Counter[str]) -> None:
        self.loop = loop
        self.listen_port = listen_port
        self.receive = receive
        self.after_batch = after_batch
        self.on_refused = on_refused
        self.counters = counters
        self.sock: socket.socket | None = None
        self.dual_stack = False
        self.gso = platform.enabled("udp_gso")
        self._sendto_cache: dict[tuple[str, int], tuple[Any, ...]] = {}
        self._sources: dict[tuple[Any, ...], tuple[str, int]] = {}  # socket address -> normalize_address()
        self._raw_sources: dict[bytes, tuple[str, int]] = {}  # raw sockaddr -> normalize_address()
        # recvmmsg where the system has it (Linux): many datagrams per system call
        self._batch = BatchReceiver(RECVMMSG_COUNT) if RECVMMSG_COUNT and udp_batch.available() else None

    def __repr__(self) -> str:
        return f"<UdpTransport port={self.local_port} gso={self.gso}>"

    def open(self) -> None:
        """Bind the socket (raises OSError with the port when the bind fails) and start reading."""
        try:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            try:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                sock.bind(("::", self.listen_port))
            except OSError:
                sock.close()
                raise
            self.dual_stack = True
        except OSError:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                sock.bind(("0.0.0.0", self.listen_port))
            except OSError as exc:
                sock.close()
                raise OSError(exc.errno, f"cannot bind the tunnel's UDP port {self.listen_port}: "
                                         f"{exc.strerror}") from None
            self.dual_stack = False
        platform.tune_udp_socket(sock, SOCKET_BUFFER)
        sock.setblocking(False)
        self.sock = sock
        self.loop.add_reader(sock.fileno(), self._on_readable)

    def close(self) -> None:
        if self.sock is None:
            return
        try:
            self.loop.remove_reader(self.sock.fileno())
        except Exception:  # the loop may be closing already
            pass
        self.sock.close()
        self.sock = None

    @property
    def local_port(self) -> int:
        return self.sock.getsockname()[1] if self.sock else 0

    @property
    def state(self) -> TransportState:
        return TransportState.OPEN if self.sock is not None else TransportState.CLOSED

    def describe(self) -> str:
        return "UDP"

    def outer_stalled(self) -> bool:
        """Never: UDP has no outer connection whose loss repair could delay the inner TCP."""
        return False

    def _on_readable(self) -> None:
        if self._batch is not None:
            self._on_readable_batched(self._batch)
            return
        sock = self.sock
        if sock is None:
            return
        now = time.monotonic()
        receive, counters, sources = self.receive, self.counters, self._sources
        recvfrom = sock.recvfrom
        datagrams = size = 0
        for _ in range(RECV_BATCH):
            try:
                data, addr = recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                break
            except ConnectionRefusedError:
                self._refused(sock)
                continue
            except OSError:
                counters["socket_error"] += 1
                break
            datagrams += 1
            size += len(data)
            source = sources.get(addr)
            if source is None:
                source = normalize_address(addr)
                if len(sources) > 64:
                    sources.clear()
                sources[addr] = source
            receive(data, source, now)
        if datagrams:  # counted once per batch, not per datagram
            counters["udp_rx_datagrams"] += datagrams
            counters["udp_rx_bytes"] += size
        self.after_batch(now)

    def _on_readable_batched(self, batch: BatchReceiver) -> None:
        """The same as the recvfrom loop, up to `batch.count` datagrams per system call (recvmmsg)."""
        sock = self.sock
        if sock is None:
            return
        now = time.monotonic()
        receive, counters, sources = self.receive, self.counters, self._raw_sources
        fd = sock.fileno()
        datagrams = size = 0
        while datagrams < RECV_BATCH:
            try:
                got = batch.receive(fd)
            except InterruptedError:
                continue
            except ConnectionRefusedError:
                self._refused(sock)
                continue
            except OSError:
                counters["socket_error"] += 1
                break
            for data, name in got:
                source = sources.get(name)
                if source is None:
                    try:
                        source = normalize_address(sockaddr_address(name))
                    except ValueError:
                        counters["socket_error"] += 1
                        continue
                    if len(sources) > 64:
                        sources.clear()
                    sources[name] = source
                size += len(data)
                receive(data, source, now)
            datagrams += len(got)
            if len(got) < batch.count:
                break  # the socket is empty
        if datagrams:  # counted once per batch, not per datagram
            counters["udp_rx_datagrams"] += datagrams
            counters["udp_rx_bytes"] += size
        self.after_batch(now)

    def _refused(self, sock: socket.socket) -> None:
        # ICMP port unreachable for something we sent: nothing listens at the endpoint.
        self.counters["endpoint_refused"] += 1
        self.on_refused()
        platform.drain_error_queue(sock)

    def send(self, datagrams: list[tuple[bytes, tuple[str, int]]]) -> None:
        """Send (datagram, (host, port)) pairs; a full kernel buffer drops (UDP semantics, counted)."""
        sock = self.sock
        if sock is None:
            return
        cache = self._sendto_cache
        sent = dropped = size = 0
        count = len(datagrams)
        i = 0
        while i < count:
            data, addr = datagrams[i]
            target = cache.get(addr)
            if target is None:
                target = self._sockaddr(addr)
                if len(cache) > 64:
                    cache.clear()
                cache[addr] = target
            end = gso_run_end(datagrams, i) if self.gso else i + 1
            try:
                if end - i > 1:
                    run = [d for d, _ in datagrams[i:end]]
                    try:
                        sock.sendmsg(run, [(socket.SOL_UDP, platform.UDP_SEGMENT,
                                            len(data).to_bytes(2, sys.byteorder))], 0, target)
                    except OSError as exc:
                        if exc.errno not in (errno.EINVAL, errno.EIO, errno.ENOPROTOOPT, errno.EOPNOTSUPP):
                            raise
                        # No segmentation offload on this kernel or route: one datagram per call from now on.
                        self.gso = False
                        self.counters["gso_unavailable"] += 1
                        continue
                    sent += end - i
                    size += sum(len(d) for d in run)
                else:
                    sock.sendto(data, target)
                    sent += 1
                    size += len(data)
            except (BlockingIOError, InterruptedError):
                dropped += end - i  # the kernel's buffer is full: UDP semantics, the protocols above recover
            except ConnectionRefusedError:
                self.counters["endpoint_refused"] += 1
            except OSError as exc:
                self.counters[f"sendto_{errno.errorcode.get(exc.errno or 0, 'error')}"] += 1
            i = end
        self.counters["udp_tx_datagrams"] += sent
        self.counters["udp_tx_bytes"] += size
        if dropped:
            self.counters["udp_tx_dropped"] += dropped

    def _sockaddr(self, addr: tuple[str, int]) -> tuple[Any, ...]:
        host, port = addr
        if self.dual_stack and ipaddress.ip_address(host).version == 4:
            return (f"::ffff:{host}", port, 0, 0)
        return (host, port)


def gso_run_end(datagrams: list[tuple[bytes, tuple[str, int]]], start: int) -> int:
    """End of the run from `start` that one segmented send can carry: same address, same size (the last one
    may be shorter), within the kernel's limits."""
    first, addr = datagrams[start]
    size = len(first)
    total = size
    end = start + 1
    limit = min(len(datagrams), start + GSO_MAX_SEGMENTS)
    while end < limit:
        data, other = datagrams[end]
        if other != addr or len(data) > size or total + len(data) > GSO_MAX_BYTES:
            break
        total += len(data)
        end += 1
        if len(data) < size:
            break
    return end
