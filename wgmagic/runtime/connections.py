"""Connections the caller's code holds: a TCP socket through the tunnel, and ICMP echo.

Owns: `open_relay` (one end of a socketpair whose other end the tunnel's loop relays to a tunnel TCP
connection, tried at each routable address RFC 8305 style), the errors a failed connect becomes, and one ICMP
echo round trip. Never: listening sockets (the services), name resolution (routes.py).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import socket
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from wgmagic import explain
from wgmagic.errors import MessageTooLongError, PeerNotRespondingError

if TYPE_CHECKING:
    from wgmagic.netstack.tcp.connection import TcpConnection
    from wgmagic.runtime.engine import Engine
    from wgmagic.runtime.loop import LoopThread
    from wgmagic.runtime.relay import SocketRelay
    from wgmagic.runtime.routes import IPAddress

# The relay behind each socket open_relay handed out, while the caller holds the socket: its byte counts and
# exchange times (wgmagic.sql.timeline) for a driver that talks through the socket itself (PyMySQL).
_RELAYS: weakref.WeakKeyDictionary[socket.socket, SocketRelay] = weakref.WeakKeyDictionary()


def relay_of(sock: socket.socket) -> SocketRelay | None:
    """The SocketRelay carrying `sock` (a socket from Tunnel.open_connection), or None (not one of ours)."""
    return _RELAYS.get(sock)


@dataclass(frozen=True)
class PingReply:
    """One ICMP echo's outcome: the address pinged, the sequence number, the payload size in bytes, and the
    round trip in seconds (None when no reply came within the timeout)."""

    host: str
    seq: int
    size: int
    rtt: float | None


def open_relay(thread: LoopThread, engine: Engine, addresses: list[IPAddress], port: int,
               timeout: float) -> tuple[socket.socket, concurrent.futures.Future[None]]:
    """Start connecting to `port` at `addresses` (in that order, RFC 8305 attempts) and return our end of a
    socketpair and a future: None once connected (the loop then relays the other end), or the error."""
    from wgmagic.runtime.relay import HappyEyeballs, SocketRelay

    ours, theirs = socket.socketpair()
    outcome: concurrent.futures.Future[None] = concurrent.futures.Future()

    def settle(error: BaseException | None) -> None:
        if not outcome.done():
            if error is None:
                outcome.set_result(None)
            else:
                outcome.set_exception(error)

    def wake_ours() -> None:
        # AF_UNIX has no RST: a byte left unread in `theirs` makes its close reach `ours` as ECONNRESET.
        ours.send(b"\0", getattr(socket, "MSG_DONTWAIT", 0))  # one byte into an empty pair never blocks

    def connected(conn: TcpConnection) -> None:
        _RELAYS[ours] = SocketRelay(engine, theirs, conn, on_connected=lambda _relay: settle(None), connected=True,
                                    wake_local_peer=wake_ours)

    def failed(error: BaseException) -> None:
        theirs.close()
        settle(error)

    def start() -> None:
        try:
            HappyEyeballs(engine, addresses, port, timeout, connected, failed)
        except BaseException:
            theirs.close()
            raise

    try:
        thread.call(start)
    except BaseException:
        ours.close()
        raise
    return ours, outcome


def open_socket(thread: LoopThread, engine: Engine, tunnel_name: str, host: str, addresses: list[IPAddress],
                port: int, timeout: float | None) -> socket.socket:
    """`Tunnel.open_connection`: a connected socket to `port` at `addresses` (`host` names them in errors);
    `timeout` bounds the connect and becomes the socket's timeout (None: up to 60 s, then blocking)."""
    connect_timeout = 60.0 if timeout is None else timeout
    ours, outcome = open_relay(thread, engine, addresses, port, connect_timeout)
    try:
        outcome.result(connect_timeout + 2.0)
    except BaseException as exc:
        ours.close()
        raise connect_failed(thread, engine, tunnel_name, host, port, connect_timeout, exc) from None
    ours.settimeout(timeout)
    return ours


async def open_streams(thread: LoopThread, engine: Engine, tunnel_name: str, host: str, addresses: list[IPAddress],
                       port: int, timeout: float, *, limit: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """`Tunnel.open_connection_async`: asyncio streams on the caller's loop (the connect waits there too)."""
    ours, outcome = await asyncio.to_thread(open_relay, thread, engine, addresses, port, timeout)
    try:
        try:
            await asyncio.wait_for(asyncio.wrap_future(outcome), timeout + 2.0)
        except BaseException as exc:
            raise connect_failed(thread, engine, tunnel_name, host, port, timeout, exc) from None
        return await asyncio.open_connection(sock=ours, limit=limit)
    except BaseException:
        ours.close()
        raise


def connect_timed_out(thread: LoopThread, engine: Engine, host: str, port: int, timeout: float) -> TimeoutError:
    """The error of a connect that did not finish in `timeout` s: PeerNotRespondingError when the peer has
    been silent that long (the tunnel is the cause), else a TimeoutError (the target is)."""
    peer_silent = bool(thread.call(engine.peer_silent_since, time.monotonic() - timeout))
    message = str(explain.connect_timed_out(host, port, timeout, peer_silent=peer_silent))
    return PeerNotRespondingError(message) if peer_silent else TimeoutError(message)


def connect_failed(thread: LoopThread, engine: Engine, tunnel_name: str, host: str, port: int, timeout: float,
                   error: BaseException) -> BaseException:
    """What a failed connect raises: a refusal or timeout in plain words, any other error as it is."""
    if isinstance(error, ConnectionRefusedError):
        return ConnectionRefusedError(str(explain.connection_refused(host, port, through=f"tunnel {tunnel_name!r}")))
    if isinstance(error, PeerNotRespondingError):  # the liveness verdict, with its own measure of the silence
        return PeerNotRespondingError(str(explain.connect_failed(host, port, str(error))))
    if isinstance(error, (TimeoutError, asyncio.TimeoutError, concurrent.futures.TimeoutError)):
        return connect_timed_out(thread, engine, host, port, timeout)
    return error


def ping(thread: LoopThread, engine: Engine, address: IPAddress, mtu: int, count: int, *, ident: int,
         seq: Iterator[int], interval: float, timeout: float, size: int) -> Iterator[PingReply]:
    """`count` ICMP echo requests of `size` payload bytes to `address`, `interval` s apart, each waiting up to
    `timeout` s: one PingReply each. MessageTooLongError (EMSGSIZE) when the echo would not fit `mtu` (nothing
    here fragments, as `ping -M do`)."""
    header = 20 if address.version == 4 else 40
    if size < 0 or header + 8 + size > mtu:
        raise MessageTooLongError(errno.EMSGSIZE, f"message too long: a ping with {size} data bytes is a "
                                  f"{header + 8 + size}-byte IPv{address.version} packet and the tunnel's MTU is "
                                  f"{mtu} (wgmagic does not fragment); use a size of at most {mtu - header - 8}")
    payload = bytes(i & 0xFF for i in range(size))
    for index in range(count):
        started = time.monotonic()
        number = next(seq) & 0xFFFF
        answered_at = thread.run(echo(engine, address, ident, number, payload, timeout), timeout=timeout + 5)
        yield PingReply(str(address), number, size, None if answered_at is None else answered_at - started)
        if index + 1 < count:
            spent = time.monotonic() - started
            if spent < interval:
                time.sleep(interval - spent)


async def echo(engine: Engine, address: IPAddress, ident: int, seq: int, payload: bytes,
               timeout: float) -> float | None:
    """One ICMP echo (loop thread): the time.monotonic() reading its reply arrived at, or None after
    `timeout` seconds."""
    future = engine.send_echo(address, ident, seq, payload)
    try:
        answered: float = await asyncio.wait_for(future, timeout)
    except asyncio.TimeoutError:
        return None
    return answered
