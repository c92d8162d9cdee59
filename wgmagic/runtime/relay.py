"""Relay between a local socket and a tunnel TCP connection, entirely on the loop thread.

Forwards and the SOCKS server hand each accepted local socket to a `SocketRelay`. No extra thread and no
lock: the loop reads the local socket only while the tunnel connection has send space, and pulls from the
tunnel connection only while the local socket takes the bytes, so either side's slowness closes the other's
window instead of growing a buffer.

A reset stays a reset: when the far end resets the tunnel connection (RST), the local client first gets the
bytes that arrived before it, then a reset of its own (a TCP socket closed with SO_LINGER 0; a Unix socket
closed with unread input, the only reset AF_UNIX has), never a clean end of stream that would make a
truncated transfer look complete. A local client that resets its socket makes the relay reset the tunnel
connection in turn.

`HappyEyeballs` makes the connection attempts for a name with several addresses (RFC 8305 section 5).

Downloaded bytes are not copied on their way: what the tunnel connection hands over (`TcpConnection.recv`, one
copy out of its receive buffer) is sent to the local socket as it is, and only a part the socket did not take
is kept, as a view of the same bytes (`pending`), until it is writable again.
Owns: both sockets' readiness and the endings; never the protocol (it asks the engine, `seams.EngineAPI`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence

from wgmagic import platform
from wgmagic.netstack.events import TcpClosed, TcpConnected, TcpEvent, TcpReadable, TcpWritable
from wgmagic.netstack.tcp.connection import TcpConnection
from wgmagic.netstack.tcp.state import TcpState
from wgmagic.runtime.seams import EngineAPI, IPAddress

CHUNK = 256 * 1024
CONNECTION_ATTEMPT_DELAY = 0.25  # seconds; RFC 8305 section 8's recommended default
RESET_DRAIN_PATIENCE = 10.0  # seconds without progress after which a reset no longer waits for the client
_LINGER_ZERO = struct.pack("ii", 1, 0)


_scratch = threading.local()


def _read_buffer() -> memoryview:
    """A CHUNK-byte buffer of this loop thread that local reads land in (`recv_into`): a read no longer
    allocates (and, at this size, maps and unmaps) a fresh 256 KiB bytes object; the connection's send
    buffer copies what it takes (TcpConnection.send)."""
    view: memoryview | None = getattr(_scratch, "view", None)
    if view is None:
        view = _scratch.view = memoryview(bytearray(CHUNK))
    return view


def reset_socket(sock: socket.socket, wake_peer: Callable[[], None] | None = None) -> None:
    """Close `sock` so that its peer sees ECONNRESET rather than end of stream.

    TCP: SO_LINGER with a zero timeout makes close() send RST. AF_UNIX has no RST: Linux reports
    ECONNRESET to the peer of a stream socket closed with unread input (unix_release_sock), so `wake_peer`,
    when given, writes a byte into `sock` from the other end first (a socketpair whose both ends we hold).
    """
    try:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
        elif wake_peer is not None:
            wake_peer()
    except OSError:
        pass
    with contextlib.suppress(OSError):
        sock.close()


class _Attempt:
    """Stands in engine.streams for one connection attempt until it connects or fails (a StreamHandler)."""

    def __init__(self, owner: HappyEyeballs, conn: TcpConnection, index: int) -> None:
        self.owner = owner
        self.conn = conn
        self.index = index

    def tcp_event(self, event: TcpEvent) -> None:
        self.owner._attempt_event(self, event)

    def forget_after_close(self) -> bool:
        return True

    def loop_failed(self, error: BaseException) -> None:
        self.owner._give_up(error)


class HappyEyeballs:
    """Connect to `port` at the first of `addresses` that answers (RFC 8305 section 5), on the loop thread.

    addresses: in preference order (wgmagic.runtime.addresses.select_destinations). One attempt starts now;
    the next starts after `delay` seconds (Connection Attempt Delay, 250 ms) or as soon as the previous one
    fails, whichever is first; the first to connect wins and the others are reset. `on_connected(conn)` gets
    the connected TcpConnection (its events then go to whoever registers for it, e.g. a SocketRelay made with
    connected=True); `on_failed(error)` gets the error of the most preferred address once all have failed
    (ConnectionRefusedError, TimeoutError, ConnectionResetError, OSError). `timeout` (seconds) bounds each
    attempt.
    """

    def __init__(self, engine: EngineAPI, addresses: Sequence[IPAddress], port: int, timeout: float,
                 on_connected: Callable[[TcpConnection], None], on_failed: Callable[[BaseException], None], *,
                 delay: float = CONNECTION_ATTEMPT_DELAY) -> None:
        self.engine = engine
        self.addresses = list(addresses)
        self.port = port
        self.timeout = timeout
        self.on_connected = on_connected
        self.on_failed = on_failed
        self.delay = delay
        self.attempts: list[_Attempt] = []
        self.errors: list[tuple[int, BaseException]] = []
        self.next_index = 0
        self.timer: asyncio.TimerHandle | None = None
        self.done = False
        self.winner: TcpConnection | None = None
        self._start_next()

    def _start_next(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        while not self.done and self.next_index < len(self.addresses):
            index = self.next_index
            self.next_index += 1
            now = self.engine.now()
            try:
                conn = self.engine.stack.tcp_connect(self.addresses[index], self.port, now, timeout=self.timeout)
            except OSError as exc:
                self.errors.append((index, exc))
                continue
            attempt = _Attempt(self, conn, index)
            self.attempts.append(attempt)
            self.engine.register_stream(conn, attempt)
            self.engine.pump_conn(conn, now)
            if not self.done and self.next_index < len(self.addresses) and self.timer is None:
                self.timer = self.engine.loop.call_later(self.delay, self._start_next)
            return
        if not self.done and not self.attempts:
            self._give_up(None)

    def _attempt_event(self, attempt: _Attempt, event: TcpEvent) -> None:
        if attempt not in self.attempts:
            return
        if isinstance(event, TcpConnected):
            self.done = True
            self.winner = attempt.conn
            self._cancel_others(keep=attempt)
            self.engine.forget_stream(attempt.conn)
            self.on_connected(attempt.conn)
        elif isinstance(event, TcpClosed):
            self.attempts.remove(attempt)
            error = event.error or ConnectionResetError(errno.ECONNRESET, "connection closed")
            self.errors.append((attempt.index, error))
            if not self.done:
                self._start_next()

    def _cancel_others(self, keep: _Attempt | None = None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        now = self.engine.now()
        for other in self.attempts:
            if other is keep:
                continue
            self.engine.forget_stream(other.conn)
            other.conn.abort(now)
            self.engine.stack.wake(other.conn)
        self.attempts = [keep] if keep is not None else []

    def _give_up(self, error: BaseException | None) -> None:
        if self.done:
            return
        self.done = True
        self._cancel_others()
        if error is None:
            error = min(self.errors, key=lambda item: item[0])[1] if self.errors else OSError(
                errno.ENETUNREACH, "no address to connect to")
        self.on_failed(error)

    def close(self) -> None:
        """Stop trying (the listener that asked is closing)."""
        if not self.done:
            self.done = True
            self._cancel_others()


class Exchanges:
    """When the latest request's last byte went up and its answer's first and last bytes came down
    (time.monotonic() seconds; None: not yet), for the query timeline (wgmagic.sql.timeline). A request is
    bytes up after bytes down (or the first bytes up); `starts` keeps the first 8 requests' start times."""

    __slots__ = ("count", "first_down", "last_down", "last_up", "opened", "starts")

    def __init__(self, opened: float) -> None:
        self.opened = opened
        self.count = 0
        self.last_up: float | None = None
        self.first_down: float | None = None
        self.last_down: float | None = None
        self.starts: list[float] = []

    def up(self, now: float) -> None:
        if self.last_up is None or self.first_down is not None:
            self.count += 1
            if len(self.starts) < 8:
                self.starts.append(now)
        self.last_up, self.first_down = now, None

    def down(self, now: float) -> None:
        if self.first_down is None:
            self.first_down = now
        self.last_down = now


class SocketRelay:
    """Relays bytes between a local socket (`local`: a connected TCP or Unix stream socket; made non-blocking)
    and a tunnel TCP connection (`conn`), on the engine's loop, until both directions ended.

    on_connected(relay) once `conn` is established (immediately with connected=True: HappyEyeballs saw it);
    on_failed(relay, error) when it never was; on_done(relay) once both sockets are finished. A reset either
    way is passed on as a reset (see the module). bytes_up / bytes_down: bytes relayed each way. A StreamHandler.
    """

    def __init__(self, engine: EngineAPI, local: socket.socket, conn: TcpConnection,
                 on_done: Callable[[SocketRelay], None] | None = None,
                 on_connected: Callable[[SocketRelay], None] | None = None,
                 on_failed: Callable[[SocketRelay, BaseException], None] | None = None, *,
                 connected: bool = False, wake_local_peer: Callable[[], None] | None = None) -> None:
        self.engine = engine
        self.loop = engine.loop
        self.local = local
        self.conn = conn
        self.on_done = on_done
        self.on_connected = on_connected
        self.on_failed = on_failed
        self.pending: memoryview | bytes = b""  # tunnel -> local bytes the local socket has not taken yet
        self.connected = False
        self.local_eof = False
        self.remote_eof = False
        self.reading_local = False
        self.writing_local = False
        self.done = False
        self.bytes_up = 0
        self.bytes_down = 0
        self.wake_local_peer = wake_local_peer  # see reset_socket
        self.resetting = False
        self.reset_waited_since = 0.0
        self.reset_unsent = -1
        self.exchanges = Exchanges(time.monotonic())
        local.setblocking(False)
        engine.register_stream(conn, self)
        if connected:  # HappyEyeballs already saw TcpConnected
            self.tcp_event(TcpConnected(conn))

    # ---- engine interface ------------------------------------------------------------------------------
    def tcp_event(self, event: TcpEvent) -> None:
        """An event of the stack for this relay's connection (loop thread)."""
        if isinstance(event, TcpReadable):
            self._pull_remote()
        elif isinstance(event, TcpWritable):
            self._read_local(True)
        elif isinstance(event, TcpConnected):
            self.connected = True
            if self.on_connected:
                self.on_connected(self)
            self._read_local(True)
        elif isinstance(event, TcpClosed):
            error = event.error
            if error is not None and not self.connected and self.on_failed:
                self.on_failed(self, error)
            if error is not None and self.connected:
                # Deliver what arrived before the reset, then reset the local side.
                self.resetting = True
            self._pull_remote()
            self.remote_eof = True
            if error is not None and not self.connected:
                self.pending = b""
            if self.resetting:
                self._flush_local()
            else:
                self._maybe_finish(force=error is not None)

    def forget_after_close(self) -> bool:
        return self.done

    # ---- local socket ----------------------------------------------------------------------------------
    def _read_local(self, want: bool) -> None:
        """Watch the local socket for reading while `want` (and it has more to give), else stop watching."""
        want = want and not (self.done or self.local_eof)
        if want != self.reading_local:
            if want:
                self.loop.add_reader(self.local.fileno(), self._on_local_readable)
            else:
                self.loop.remove_reader(self.local.fileno())
            self.reading_local = want

    def _write_local(self, want: bool) -> None:
        """Watch the local socket for room to write while `want` (bytes are pending), else stop watching."""
        if want != self.writing_local:
            if want:
                self.loop.add_writer(self.local.fileno(), self._on_local_writable)
            else:
                self.loop.remove_writer(self.local.fileno())
            self.writing_local = want

    def _on_local_readable(self) -> None:
        space = self.conn.send_space()
        if space <= 0:
            self.conn.send(b"")  # marks the connection full, so it raises TcpWritable once acks free room
            self._read_local(False)  # resume on TcpWritable
            return
        buffer = _read_buffer()
        try:
            size = self.local.recv_into(buffer, min(space, CHUNK))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._abort()  # the local client reset its connection: reset the tunnel's, too
            return
        now = self.engine.now()
        if size:
            self.bytes_up += size
            self.exchanges.up(now)
            self.conn.send(buffer[:size])
        else:
            self.local_eof = True
            self._read_local(False)
            if self.connected:
                self.conn.shutdown_write(now)
            self._maybe_finish()
        self.engine.send_now(self.conn, now)

    def _pull_remote(self) -> None:
        if self.done:
            return
        if not self.pending:
            data = self.conn.recv(CHUNK)
            if not data:
                if self.conn.eof:
                    self.remote_eof = True
                    self._maybe_finish()
                return
            self.pending = data
            self.bytes_down += len(data)
            self.exchanges.down(time.monotonic())
        self._flush_local()

    def _flush_local(self) -> None:
        """Send what is pending, then what the connection has, until the local socket is full (then wait for it
        to be writable). A partial send keeps a view of the rest, not a copy."""
        if self.done:
            return
        pending = self.pending
        while pending:
            try:
                sent = self.local.send(pending)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.pending = b""
                self._abort()
                return
            if sent < len(pending):
                pending = memoryview(pending)[sent:]
                continue
            pending = self.conn.recv(CHUNK)
            if pending:
                self.bytes_down += len(pending)
                self.exchanges.down(time.monotonic())
        self.pending = pending
        self._write_local(bool(self.pending))
        if not self.pending:
            if self.conn.eof and not self.conn.recv_available():
                self.remote_eof = True
            self._maybe_finish()
        self.engine.pump_conn(self.conn)

    def _on_local_writable(self) -> None:
        self._flush_local()

    # ---- endings ---------------------------------------------------------------------------------------
    def _maybe_finish(self, force: bool = False) -> None:
        if self.done:
            return
        if self.resetting:
            if not self.pending:
                self._reset_local()
            return
        if self.remote_eof and not self.pending:
            with contextlib.suppress(OSError):
                self.local.shutdown(socket.SHUT_WR)
        if force or (self.remote_eof and not self.pending and self.local_eof):
            self._finish()

    def _abort(self) -> None:
        self.conn.abort(self.engine.now())
        self._finish()
        self.engine.pump_conn(self.conn)  # the RST leaves now

    def _reset_local(self) -> None:
        """Reset the local side once the client has taken what we already sent it (a TCP reset discards the
        sender's unacknowledged bytes); give up waiting after RESET_DRAIN_PATIENCE seconds without progress."""
        if self.done:
            return
        self._read_local(False)
        unsent = platform.unsent_bytes(self.local) if self.local.family != getattr(socket, "AF_UNIX", -1) else 0
        now = self.engine.now()
        if unsent:
            if unsent != self.reset_unsent:
                self.reset_unsent, self.reset_waited_since = unsent, now
            if now - self.reset_waited_since < RESET_DRAIN_PATIENCE:
                self.loop.call_later(0.02, self._reset_local)
                return
        self._finish(reset=True)

    def _finish(self, reset: bool = False) -> None:
        if self.done:
            return
        self._read_local(False)
        self.done = True
        self._write_local(False)
        if reset:
            reset_socket(self.local, self.wake_local_peer)
        else:
            with contextlib.suppress(OSError):
                self.local.close()
        if self.conn.state not in (TcpState.CLOSED, TcpState.TIME_WAIT):
            self.conn.close(self.engine.now())
        self.engine.forget_stream(self.conn)
        if self.on_done:
            self.on_done(self)

    def loop_failed(self, error: BaseException) -> None:
        """The tunnel is going away: the local side sees its connection reset (whatever was in flight is
        lost, so a clean end of stream would be a lie)."""
        self.close()

    def close(self) -> None:
        """End both sides now (a forward is being closed): a local client that already wrote its last bytes
        and closed (a driver's goodbye: libpq's Terminate) has them passed on with a FIN; otherwise both sides
        are reset. The segments leave now."""
        if self.done:
            return
        if self.connected and self._local_said_goodbye():
            self._finish()
        else:
            self.conn.abort(self.engine.now())
            self._finish(reset=True)
        self.engine.pump_conn(self.conn)

    def _local_said_goodbye(self) -> bool:
        """Pass on what the local socket still holds; True when it ends in its EOF (the client closed) and all
        of it fitted in the connection's send buffer."""
        if self.local_eof:
            return True
        while True:
            space = self.conn.send_space()
            try:
                data = self.local.recv(min(max(space, 1), CHUNK))
            except OSError:  # BlockingIOError: the client is still there; others: it reset
                return False
            if not data:
                self.local_eof = True
                return True
            if len(data) > space:
                return False
            self.bytes_up += len(data)
            self.conn.send(data)
