"""An in-process network for runtime tests: an Engine whose transport is memory, and on the other side a real
WireGuard device and IP stack acting as the peer host 198.18.0.1 (sans-I/O objects, no sockets, no threads).

`MemoryNet(loop)` runs on a real asyncio loop: what either side sends is delivered in a later loop turn, so
relays, Happy Eyeballs and timers behave as over a network, with nothing mocked but the wire. The peer host
echoes what arrives on port 7 (RFC 862) and sends `download` bytes to whoever connects to port 9000.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Callable

from wgmagic.config import WireGuardConfig, parse_config
from wgmagic.netstack.events import TcpAccepted, TcpReadable, TcpWritable
from wgmagic.netstack.stack import Stack
from wgmagic.runtime.engine import Engine
from wgmagic.runtime.transport import TransportHooks, TransportKind, TransportSettings, TransportState
from wgmagic.wireguard import crypto
from wgmagic.wireguard.device import Device
from wgmagic.wireguard.timers import Timers

OURS, THEIRS = bytes(range(32)), bytes(range(1, 33))
ENDPOINT = ("198.18.0.1", 51820)
HERE = ("198.18.0.2", 40000)
PEER_HOST = ipaddress.ip_address("198.18.0.1")
ECHO_PORT, DOWNLOAD_PORT = 7, 9000


def client_config(endpoint: tuple[str, int] = ENDPOINT) -> WireGuardConfig:
    """Our side's config: key OURS, 198.18.0.2, one peer (key THEIRS) for 198.18.0.0/24 at `endpoint`."""
    return parse_config(f"""[Interface]
PrivateKey = {crypto.encode_key(OURS)}
Address = 198.18.0.2/32

[Peer]
PublicKey = {crypto.encode_key(crypto.public_key(THEIRS))}
AllowedIPs = 198.18.0.0/24
Endpoint = {endpoint[0]}:{endpoint[1]}
""")


def peer_device(timers: Timers | None = None) -> Device:
    """The peer's own WireGuard device (key THEIRS), knowing us (key OURS) at 198.18.0.2."""
    device = Device(THEIRS, timers=timers)
    device.add_peer(crypto.public_key(OURS), allowed_ips=[ipaddress.ip_network("198.18.0.2/32")])
    return device


class RecordingTransport:
    """A Transport of `kind` for tests: what the engine sends is kept for `take()`, or, with `on_send`, handed
    to it batch by batch instead (MemoryNet delivers it to the peer's side that way)."""

    last_error: str | None = None

    def __init__(self, hooks: TransportHooks, settings: TransportSettings, *, kind: TransportKind = TransportKind.UDP,
                 local_port: int = HERE[1],
                 on_send: Callable[[list[tuple[bytes, tuple[str, int]]]], None] | None = None) -> None:
        self.kind = kind
        self.local_port = local_port
        self.receive = hooks.receive
        self.after_batch = hooks.after_batch
        self.on_send = on_send
        self.sent: list[tuple[bytes, tuple[str, int]]] = []
        self.state = TransportState.CLOSED

    def open(self) -> None:
        self.state = TransportState.OPEN

    def close(self) -> None:
        self.state = TransportState.CLOSED

    def send(self, datagrams: list[tuple[bytes, tuple[str, int]]]) -> None:
        if self.on_send is not None:
            self.on_send(datagrams)
        else:
            self.sent.extend(datagrams)

    def describe(self) -> str:
        return str(self.kind)

    def outer_stalled(self) -> bool:
        return False

    def take(self) -> list[tuple[bytes, tuple[str, int]]]:
        sent, self.sent = self.sent, []
        return sent


class EngineBed:
    """An Engine stepped by hand: a fake clock (`now`, seconds), its own asyncio loop (never run: the test calls
    the engine's steps), a RecordingTransport (`transport.take()`), the client config's one peer at ENDPOINT.
    `close()` closes the engine and the loop."""

    def __init__(self, timers: Timers, now: float) -> None:
        self.config = client_config()
        self.now = now
        self.loop = asyncio.new_event_loop()
        self.engine = Engine(self.config, {self.config.peers[0].public_key: [ENDPOINT]}, loop=self.loop,
                             timers=timers, clock=lambda: self.now, transport=RecordingTransport)
        self.transport: RecordingTransport = self.engine.carrier.transport  # type: ignore[assignment]
        self.engine.open()

    def close(self) -> None:
        self.engine.close()
        self.loop.close()

    def __enter__(self) -> EngineBed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class MemoryNet:
    def __init__(self, loop: asyncio.AbstractEventLoop, *, download: bytes = b"") -> None:
        self.loop = loop
        self.download = download
        self.to_peer: list[bytes] = []
        self._scheduled = False
        config = client_config()
        self.engine = Engine(config, {config.peers[0].public_key: [ENDPOINT]}, loop=loop, clock=time.monotonic,
                             transport=lambda hooks, settings: RecordingTransport(hooks, settings,
                                                                                  on_send=self._send))
        self.device = peer_device()
        self.stack = Stack([ipaddress.ip_interface("198.18.0.1/24")])
        self.stack.tcp_listen(ECHO_PORT)
        self.stack.tcp_listen(DOWNLOAD_PORT)
        self.remote_conns: list = []
        self.sent_down: dict[int, int] = {}
        self.reset_next = False
        self.engine.open()

    def _send(self, datagrams: list[tuple[bytes, tuple[str, int]]]) -> None:
        """What our engine sent, for the peer's side in a later loop turn."""
        self.to_peer.extend(data for data, _ in datagrams)
        self.schedule()

    def schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self._deliver)

    def _deliver(self) -> None:
        self._scheduled = False
        now = time.monotonic()
        batch, self.to_peer = self.to_peer, []
        for data in batch:
            self.device.receive_datagram(data, HERE, now)
        self.device.handle_timers(now)
        for _ in range(8):
            for packet in self.device.packets_received():
                self.stack.receive_packet(packet, now)
            self._serve(now)
            self.stack.handle_timers(now)
            for packet in self.stack.packets_to_send(now):
                self.device.send_packet(packet, now)
        back = self.device.datagrams_to_send()
        if back:
            self.engine.receive_datagrams(back, now)
        if self.stack.next_timer() is not None:
            self.loop.call_later(0.01, self.schedule)

    def _serve(self, now: float) -> None:
        """The peer host's applications: echo on port 7, a download on port 9000."""
        for event in self.stack.events():
            if isinstance(event, TcpAccepted):
                conn = event.listener.accept()
                while conn is not None:
                    self.remote_conns.append(conn)
                    self.sent_down[id(conn)] = 0
                    self._push_download(conn, now)
                    conn = event.listener.accept()
            elif isinstance(event, TcpReadable) and event.conn.local[1] == ECHO_PORT:
                data = event.conn.recv(1 << 20)
                if data:
                    event.conn.send(data)
                if event.conn.eof and not event.conn.fin_queued:
                    event.conn.shutdown_write(now)
                self.stack.wake(event.conn)
            elif isinstance(event, TcpWritable):
                self._push_download(event.conn, now)

    def _push_download(self, conn, now: float) -> None:
        if conn.local[1] != DOWNLOAD_PORT:
            return
        sent = self.sent_down[id(conn)]
        while sent < len(self.download):
            taken = conn.send(memoryview(self.download)[sent:sent + 65536])
            if not taken:
                break
            sent += taken
        self.sent_down[id(conn)] = sent
        if sent == len(self.download) and not conn.fin_queued:
            if self.reset_next:
                conn.abort(now)
            else:
                conn.shutdown_write(now)
        self.stack.wake(conn)

    def close(self) -> None:
        self.engine.close()


async def handshake(net: MemoryNet) -> None:
    await asyncio.wait_for(net.engine.wait_handshake(), 10)
