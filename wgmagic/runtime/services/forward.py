"""Local forwards: a listener on this machine whose every connection is relayed through the tunnel (ssh -L).

The default listener is a Unix socket in a fresh 0700 directory, so other users of a shared machine cannot
reach the private network through it; TCP on 127.0.0.1 is there for tools that need a port.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import socket
import tempfile
import time
import warnings
from dataclasses import dataclass
from typing import Any

from wgmagic.runtime.relay import SocketRelay

BACKLOG = 256
POSTGRES_PORTS = frozenset({5432, 6432})
CONNECT_TIMEOUT = 15.0  # seconds a forwarded connection may take to reach its target through the tunnel


def postgres_error_response(message: str) -> bytes:
    """A protocol-3 ErrorResponse (FATAL, SQLSTATE 08001) that libpq reports as the connection's error."""
    fields = b"SFATAL\x00VFATAL\x00C08001\x00M" + message.encode("utf-8", "replace") + b"\x00\x00"
    return b"E" + (len(fields) + 4).to_bytes(4, "big") + fields


@dataclass
class ForwardSpec:
    remote_host: str
    remote_port: int
    remote_address: ipaddress.IPv4Address | ipaddress.IPv6Address
    local_kind: str  # "unix" or "tcp"
    bind_host: str = "127.0.0.1"
    bind_port: int = 0
    socket_dir: str | None = None
    owns_socket_dir: bool = False  # only a directory wgmagic made itself is chmod-ed and removed


def warn_if_exposed(host: str, what: str) -> None:
    """Binding beyond loopback opens the private network to this machine's neighbours: say so."""
    try:
        loopback = ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        warnings.warn(f"{what} listens on {host}, not loopback: anyone who can reach this machine can use the "
                      "tunnel through it", stacklevel=3)


def parse_target(target: str) -> tuple[str, int]:
    """'db.internal:5432', '198.18.0.1:5432' or '[fd00::1]:5432' -> (host, port)."""
    text = target.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"{target!r}: an IPv6 target is written [address]:port")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise ValueError(f"{target!r}: expected HOST:PORT")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"{target!r}: the port must be a number") from None
    if not 0 < port < 65536:
        raise ValueError(f"{target!r}: the port must be 1..65535")
    return host, port


class Forward:
    """One local listener; created and driven on the tunnel's loop thread, used from any thread."""

    def __init__(self, engine: Any, spec: ForwardSpec) -> None:
        self.engine = engine
        self.spec = spec
        self.relays: set[SocketRelay] = set()
        self.accepted = 0
        self.failed = 0
        self.closed = False
        self.listener, self.address = self._listen()
        engine.loop.add_reader(self.listener.fileno(), self._on_accept)

    def _listen(self) -> tuple[socket.socket, Any]:
        spec = self.spec
        if spec.local_kind == "unix":
            if spec.socket_dir is None:
                spec.socket_dir = tempfile.mkdtemp(prefix="wgmagic-")  # created 0700
                spec.owns_socket_dir = True
            directory = spec.socket_dir
            # libpq looks for DIR/.s.PGSQL.PORT, so name the socket that way: host=DIR port=PORT then works.
            path = os.path.join(directory, f".s.PGSQL.{spec.remote_port}")
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            sock.bind(path)
            os.chmod(path, 0o600)
            address: Any = path
        else:
            warn_if_exposed(spec.bind_host, "a forward")
            family = socket.AF_INET6 if ":" in spec.bind_host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((spec.bind_host, spec.bind_port))
            address = sock.getsockname()[:2]
        sock.listen(BACKLOG)
        sock.setblocking(False)
        return sock, address

    # ---- loop thread ---------------------------------------------------------------------------------
    def _on_accept(self) -> None:
        for _ in range(64):
            try:
                client, _addr = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.failed += 1
                return
            self.accepted += 1
            if self.spec.local_kind == "tcp":
                with contextlib.suppress(OSError):
                    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            now = time.monotonic()
            try:
                conn = self.engine.stack.tcp_connect(self.spec.remote_address, self.spec.remote_port, now,
                                                     timeout=CONNECT_TIMEOUT)
            except OSError:
                self.failed += 1
                client.close()
                continue
            relay = SocketRelay(self.engine, client, conn, on_done=self.relays.discard,
                                on_failed=self._on_failed)
            self.relays.add(relay)
            self.engine.pump_conn(conn, now)

    def _on_failed(self, relay: SocketRelay, error: BaseException) -> None:
        self.failed += 1
        if self.spec.remote_port in POSTGRES_PORTS:
            # libpq shows a server's ErrorResponse to the user verbatim, so a driver behind this forward
            # learns why instead of "server closed the connection unexpectedly".
            reason = self._failure_reason(error)
            with contextlib.suppress(OSError):
                for _ in range(16):  # unread input would turn our close into a reset
                    if not relay.local.recv(65536):
                        break
            with contextlib.suppress(OSError):
                relay.local.send(postgres_error_response(reason))

    def _failure_reason(self, error: BaseException) -> str:
        target = f"{self.spec.remote_host}:{self.spec.remote_port}"
        if isinstance(error, ConnectionRefusedError):
            return f"wgmagic: {target} refused the connection (reached through the tunnel): nothing listens there"
        if isinstance(error, TimeoutError) and self.engine.peer_silent_since(time.monotonic() - CONNECT_TIMEOUT):
            return (f"wgmagic: could not reach {target}: the WireGuard peer is not answering (nothing came back "
                    "from it while connecting); it may be down or unreachable, and the tunnel keeps retrying")
        if isinstance(error, TimeoutError):
            return f"wgmagic: connecting to {target} through the tunnel timed out: the host did not answer"
        return f"wgmagic: connecting to {target} through the tunnel failed: {error}"

    def close_on_loop(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            self.engine.loop.remove_reader(self.listener.fileno())
        self.listener.close()
        for relay in list(self.relays):
            relay.close()
        self.relays.clear()
        if self.spec.local_kind == "unix" and self.spec.socket_dir:
            if self.spec.owns_socket_dir:
                shutil.rmtree(self.spec.socket_dir, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(self.address)

    # ---- any thread ----------------------------------------------------------------------------------
    @property
    def local_address(self) -> Any:
        return self.address

    def libpq_params(self) -> dict[str, str]:
        """Connection parameters for libpq (psycopg, psql) that reach the remote through this forward.

        Over TCP, `host` stays the real name so sslmode=verify-full checks the server's certificate against
        it, while `hostaddr` makes libpq connect to the local listener instead. libpq never uses TLS over a
        Unix socket, so use a TCP forward when the server requires TLS.
        """
        if self.spec.local_kind == "unix":
            return {"host": str(self.spec.socket_dir), "port": str(self.spec.remote_port)}
        host, port = self.address
        return {"host": self.spec.remote_host, "hostaddr": host, "port": str(port)}

    def __repr__(self) -> str:
        target = f"{self.spec.remote_host}:{self.spec.remote_port}"
        return f"<Forward {self.address} -> {target} ({len(self.relays)} open)>"
