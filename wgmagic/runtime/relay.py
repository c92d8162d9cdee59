"""Relay between a local socket and a tunnel TCP connection, entirely on the loop thread.

Forwards and the SOCKS server hand each accepted local socket to a `SocketRelay`. No extra thread and no
lock: the loop reads the local socket only while the tunnel connection has send space, and pulls from the
tunnel connection only while the local socket takes the bytes, so either side's slowness closes the other's
window instead of growing a buffer.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable
from typing import Any

CHUNK = 256 * 1024


class SocketRelay:
    def __init__(self, engine: Any, local: socket.socket, conn: Any,
                 on_done: Callable[[SocketRelay], None] | None = None,
                 on_connected: Callable[[SocketRelay], None] | None = None,
                 on_failed: Callable[[SocketRelay, BaseException], None] | None = None) -> None:
        self.engine = engine
        self.loop = engine.loop
        self.local = local
        self.conn = conn
        self.on_done = on_done
        self.on_connected = on_connected
        self.on_failed = on_failed
        self.pending = bytearray()  # tunnel -> local bytes the local socket has not taken yet
        self.connected = False
        self.local_eof = False
        self.remote_eof = False
        self.reading_local = False
        self.writing_local = False
        self.done = False
        self.bytes_up = 0
        self.bytes_down = 0
        local.setblocking(False)
        engine.register_stream(conn, self)

    # ---- engine interface ------------------------------------------------------------------------------
    def tcp_event(self, kind: str, event: Any) -> None:
        if kind == "TcpConnected":
            self.connected = True
            if self.on_connected:
                self.on_connected(self)
            self._read_local(True)
        elif kind == "TcpReadable":
            self._pull_remote()
        elif kind == "TcpWritable":
            self._read_local(True)
        elif kind == "TcpClosed":
            error = getattr(event, "error", None)
            if error is not None and not self.connected and self.on_failed:
                self.on_failed(self, error)
            self._pull_remote()
            self.remote_eof = True
            if error is not None:
                self.pending.clear()
            self._maybe_finish(force=error is not None)

    def forget_after_close(self) -> bool:
        return self.done

    # ---- local socket ----------------------------------------------------------------------------------
    def _read_local(self, want: bool) -> None:
        if self.done or self.local_eof:
            want = False
        if want and not self.reading_local:
            self.loop.add_reader(self.local.fileno(), self._on_local_readable)
            self.reading_local = True
        elif not want and self.reading_local:
            self.loop.remove_reader(self.local.fileno())
            self.reading_local = False

    def _on_local_readable(self) -> None:
        space = self.conn.send_space()
        if space <= 0:
            self.conn.send(b"")  # marks the connection full, so it raises TcpWritable once acks free room
            self._read_local(False)  # resume on TcpWritable
            return
        try:
            data = self.local.recv(min(space, CHUNK))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        now = time.monotonic()
        if data:
            self.bytes_up += len(data)
            self.conn.send(data)
        else:
            self.local_eof = True
            self._read_local(False)
            if self.connected:
                self.conn.shutdown_write(now)
            self._maybe_finish()
        self.engine.pump_conn(self.conn, now)

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
            self.pending += data
            self.bytes_down += len(data)
        self._flush_local()

    def _flush_local(self) -> None:
        while self.pending:
            try:
                sent = self.local.send(self.pending)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._abort()
                return
            del self.pending[:sent]
            if not self.pending:
                more = self.conn.recv(CHUNK)
                if more:
                    self.pending += more
                    self.bytes_down += len(more)
        want_writer = bool(self.pending)
        if want_writer and not self.writing_local:
            self.loop.add_writer(self.local.fileno(), self._on_local_writable)
            self.writing_local = True
        elif not want_writer and self.writing_local:
            self.loop.remove_writer(self.local.fileno())
            self.writing_local = False
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
        if self.remote_eof and not self.pending:
            with contextlib.suppress(OSError):
                self.local.shutdown(socket.SHUT_WR)
        if force or (self.remote_eof and not self.pending and self.local_eof):
            self._finish()

    def _abort(self) -> None:
        self.conn.abort(time.monotonic())
        self._finish()

    def _finish(self) -> None:
        if self.done:
            return
        self.done = True
        self._read_local(False)
        if self.writing_local:
            self.loop.remove_writer(self.local.fileno())
            self.writing_local = False
        with contextlib.suppress(OSError):
            self.local.close()
        if self.conn.state not in ("CLOSED", "TIME_WAIT"):
            self.conn.close(time.monotonic())
        self.engine.streams.pop(id(self.conn), None)
        if self.on_done:
            self.on_done(self)

    def loop_failed(self, error: BaseException) -> None:
        """The tunnel is going away: the local side sees its connection closed."""
        self.close()

    def close(self) -> None:
        """Close both sides now (a forward is being closed)."""
        if not self.done:
            self.conn.abort(time.monotonic())
            self._finish()
