"""Socket-like objects over a tunnel TCP connection.

A `TunnelSocket` is used from any thread (a driver's, the notebook's); its TCP connection lives on the loop
thread. They meet in a `StreamBuffers`: two bounded byte buffers under one lock. Bytes cross without a
round trip to the loop per call: the reader takes what the loop has already pulled in, and only wakes the loop
when it has freed enough room for the connection to open its window again. That keeps a Python `recv` loop
fast, while the bounds (here and in the TCP receive buffer) keep a slow reader from growing memory.
"""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from wgmagic.errors import TunnelClosedError
from wgmagic.netstack.events import TcpClosed, TcpConnected, TcpEvent, TcpReadable, TcpWritable

READ_BUFFER = 512 * 1024
WRITE_BUFFER = 512 * 1024


class StreamBuffers:
    """State shared between the loop thread (which owns `conn`) and the application's threads."""

    def __init__(self, conn: Any, post: Callable[..., None], label: str) -> None:
        self.conn = conn
        self.post = post  # schedules a call on the loop thread
        self.label = label
        self.lock = threading.Lock()
        self.readable = threading.Condition(self.lock)
        self.writable = threading.Condition(self.lock)
        self.connected = threading.Event()
        self.rbuf = bytearray()
        self.wbuf = bytearray()
        self.eof = False
        self.error: BaseException | None = None
        self.pull_posted = False
        self.conn_has_more = False  # the connection holds bytes rbuf had no room for: reading should pull
        self.push_posted = False
        self.close_requested = False
        self.write_shut = False
        self.finished = False
        self.on_update: Callable[[], None] | None = None  # the engine pumps after loop-side changes

    # ---- loop side ----------------------------------------------------------------------------------
    def loop_pull(self) -> None:
        """Move bytes the connection holds into rbuf, as far as rbuf has room (loop thread)."""
        conn = self.conn
        with self.lock:
            self.pull_posted = False
            room = READ_BUFFER - len(self.rbuf)
            moved = False
            if room > 0:
                data = conn.recv(room)
                if data:
                    self.rbuf += data
                    moved = True
            self.conn_has_more = conn.recv_available() > 0
            if conn.eof and not self.conn_has_more and not self.eof:
                self.eof = True
                moved = True
            if moved:
                self.readable.notify_all()

    def loop_push(self) -> None:
        """Move bytes from wbuf into the connection's send buffer, as far as it has room (loop thread)."""
        conn = self.conn
        with self.lock:
            self.push_posted = False
            if self.wbuf and self.error is None:
                accepted = conn.send(memoryview(self.wbuf))
                if accepted:
                    del self.wbuf[:accepted]
                    self.writable.notify_all()
            flush_done = not self.wbuf
            close_now = self.close_requested and flush_done
            shut_now = self.write_shut and flush_done and not self.close_requested
        now = time.monotonic()
        if close_now:
            conn.close(now)
        elif shut_now:
            conn.shutdown_write(now)

    def tcp_event(self, event: TcpEvent) -> None:
        """An event of the stack for this connection (loop thread)."""
        if isinstance(event, TcpReadable):
            self.loop_pull()
        elif isinstance(event, TcpWritable):
            self.loop_push()
        elif isinstance(event, TcpConnected):
            self.loop_connected()
        elif isinstance(event, TcpClosed):
            error = event.error
            if error is not None:
                self.loop_failed(error)
            else:
                self.loop_pull()

    def forget_after_close(self) -> bool:
        return self.error is not None or self.close_requested or not self.conn.recv_available()

    def loop_connected(self) -> None:
        self.connected.set()

    def loop_failed(self, error: BaseException) -> None:
        with self.lock:
            if self.error is None:
                self.error = error
            self.eof = True
            self.finished = True
            self.readable.notify_all()
            self.writable.notify_all()
        self.connected.set()

    # ---- application side ---------------------------------------------------------------------------
    def _wait(self, cond: threading.Condition, ready: Callable[[], bool], deadline: float | None) -> None:
        while not ready():
            if deadline is None:
                cond.wait(0.5)  # short slices so Ctrl-C in the main thread is seen promptly
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"timed out waiting on {self.label}")
            cond.wait(min(remaining, 0.5))

    def read_into(self, target: memoryview, deadline: float | None) -> int:
        with self.lock:
            self._wait(self.readable, lambda: bool(self.rbuf) or self.eof or self.error is not None, deadline)
            if not self.rbuf:
                if self.error is not None and not isinstance(self.error, EOFError):
                    raise self.error
                return 0
            n = min(len(target), len(self.rbuf))
            target[:n] = self.rbuf[:n]
            del self.rbuf[:n]
            # Only a connection holding back bytes needs the loop: otherwise the window is already open and
            # a wake-up per read would cost a thread hand-off for nothing.
            wake = (self.conn_has_more and not self.pull_posted and not self.eof
                    and len(self.rbuf) < READ_BUFFER // 2)
            if wake:
                self.pull_posted = True
        if wake:
            self.post(self._pull_and_update)
        return n

    def write(self, data: memoryview, deadline: float | None) -> int:
        with self.lock:
            if self.error is not None:
                raise self.error
            if self.write_shut or self.close_requested:
                raise BrokenPipeError(f"{self.label}: the socket was shut down for writing")
            self._wait(self.writable, lambda: len(self.wbuf) < WRITE_BUFFER or self.error is not None, deadline)
            if self.error is not None:
                raise self.error
            n = min(len(data), WRITE_BUFFER - len(self.wbuf))
            self.wbuf += data[:n]
            wake = not self.push_posted
            if wake:
                self.push_posted = True
        if wake:
            self.post(self._push_and_update)
        return n

    def _pull_and_update(self) -> None:
        self.loop_pull()
        if self.on_update:
            self.on_update()

    def _push_and_update(self) -> None:
        self.loop_push()
        if self.on_update:
            self.on_update()

    def request_shutdown_write(self) -> None:
        with self.lock:
            self.write_shut = True
        self.post(self._push_and_update)

    def request_close(self) -> None:
        with self.lock:
            if self.close_requested:
                return
            self.close_requested = True
            if self.error is None:
                self.error = OSError(9, f"{self.label}: the socket is closed")
            self.readable.notify_all()
            self.writable.notify_all()
        self.post(self._push_and_update)


class TunnelSocket:
    """A blocking, socket-like TCP connection through a tunnel (what pg8000's `sock=` and friends take)."""

    family = socket.AF_INET
    type = socket.SOCK_STREAM
    proto = 0

    def __init__(self, buffers: StreamBuffers, peername: tuple[str, int], sockname: tuple[str, int],
                 timeout: float | None = None) -> None:
        self._buffers = buffers
        self._peer = peername
        self._sockname = sockname
        self._timeout = timeout
        self._closed = False
        if ":" in peername[0]:
            self.family = socket.AF_INET6

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<TunnelSocket {state} {self._sockname[0]}:{self._sockname[1]} -> {self._peer[0]}:{self._peer[1]}>"

    # socket API -------------------------------------------------------------------------------------
    def settimeout(self, timeout: float | None) -> None:
        self._timeout = timeout

    def gettimeout(self) -> float | None:
        return self._timeout

    def setblocking(self, flag: bool) -> None:
        self._timeout = None if flag else 0.0

    def setsockopt(self, *args: Any) -> None:
        """Accepted and ignored: options such as TCP_NODELAY are the stack's defaults already."""

    def getsockopt(self, *args: Any) -> int:
        return 0

    def getpeername(self) -> tuple[str, int]:
        return self._peer

    def getsockname(self) -> tuple[str, int]:
        return self._sockname

    def _deadline(self) -> float | None:
        return None if self._timeout is None else time.monotonic() + self._timeout

    def _timed_out(self) -> OSError:
        # A non-blocking socket says "would block"; one with a timeout says "timed out", as socket does.
        if self._timeout == 0:
            return BlockingIOError(11, "Resource temporarily unavailable")
        return TimeoutError("timed out")

    def _check(self) -> None:
        if self._closed:
            raise OSError(9, "Bad file descriptor: the tunnel socket is closed")

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        self._check()
        view = memoryview(buffer).cast("B")
        if nbytes:
            view = view[:nbytes]
        if not len(view):
            return 0
        try:
            return self._buffers.read_into(view, self._deadline())
        except TimeoutError:
            raise self._timed_out() from None

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        buffer = bytearray(bufsize)
        n = self.recv_into(buffer)
        del buffer[n:]
        return bytes(buffer)

    def send(self, data: Any, flags: int = 0) -> int:
        self._check()
        try:
            return self._buffers.write(memoryview(data).cast("B"), self._deadline())
        except TimeoutError:
            raise self._timed_out() from None

    def sendall(self, data: Any, flags: int = 0) -> None:
        self._check()
        view = memoryview(data).cast("B")
        deadline = self._deadline()
        while len(view):
            try:
                n = self._buffers.write(view, deadline)
            except TimeoutError:
                raise self._timed_out() from None
            view = view[n:]

    def shutdown(self, how: int) -> None:
        self._check()
        if how in (socket.SHUT_WR, socket.SHUT_RDWR):
            self._buffers.request_shutdown_write()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._buffers.request_close()

    def detach(self) -> None:
        raise OSError("a tunnel socket has no file descriptor to detach")

    def fileno(self) -> int:
        return -1

    def makefile(self, mode: str = "r", buffering: int | None = None, *, encoding: str | None = None,
                 errors: str | None = None, newline: str | None = None) -> Any:
        raw = _SocketRawIO(self, mode)
        reading, writing = "r" in mode, "w" in mode
        size = io.DEFAULT_BUFFER_SIZE if buffering in (None, -1) else buffering
        if buffering == 0:
            return raw
        buffered: io.BufferedIOBase
        if reading and writing:
            buffered = io.BufferedRWPair(raw, raw, size)
        elif reading:
            buffered = io.BufferedReader(raw, size)
        else:
            buffered = io.BufferedWriter(raw, size)
        if "b" in mode:
            return buffered
        return io.TextIOWrapper(buffered, encoding, errors, newline)

    def __enter__(self) -> TunnelSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if not self._closed:
            try:
                self.close()
            except (TunnelClosedError, RuntimeError):
                pass


class _SocketRawIO(io.RawIOBase):
    def __init__(self, sock: TunnelSocket, mode: str) -> None:
        super().__init__()
        self._sock = sock
        self._mode = mode

    def readable(self) -> bool:
        return "r" in self._mode

    def writable(self) -> bool:
        return "w" in self._mode

    def readinto(self, b: Any) -> int:
        return self._sock.recv_into(b)

    def write(self, b: Any) -> int:
        self._sock.sendall(b)
        return len(memoryview(b))
