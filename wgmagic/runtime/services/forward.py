"""Local forwards: a listener on this machine whose every connection is relayed through the tunnel (ssh -L).

The default listener is a Unix socket in a fresh 0700 directory, so other users of a shared machine cannot
reach the private network through it; TCP on 127.0.0.1 is there for tools that need a port.

Where the system has no Unix sockets (WGMAGIC_PORTABLE=unix_sockets forces this), the default forward listens
on loopback TCP and keeps the same promise with a guard (wgmagic.platform.loopback_client_allowed): each
accepted connection is checked against the process that owns the connecting socket, and refused unless it is
this user's (or, for %%wgsql's own forward, this process's). The check reads the system's socket tables (psutil:
/proc on Linux, slow on a host with many sockets), so it runs in the loop's executor and hands its answer back
to the loop: the tunnel's other connections go on meanwhile. An explicit TCP forward (a port) accepts any local
client, as ssh -L does, unless asked for a guard (`clients=`).

A Unix socket's path must fit sun_path (108 bytes with its NUL, unix(7)); a long TMPDIR (HPC schedulers,
JupyterHub spawners) does not leave room for ".../wgmagic-XXXXXXXX/.s.PGSQL.5432". The default directory is
then made in $XDG_RUNTIME_DIR, else in /tmp, and if no short private directory can be had the forward listens
on loopback TCP with a warning. A directory made for a forward is removed with it, also when listening fails.

The forward carries bytes and knows no database: what it knows of its clients' protocol (the Unix socket's
name, how to refuse a client with words its driver shows) is a `wgmagic.proto.forwarding.ForwardProtocol` its
caller chooses (`ForwardSpec.protocol`): PostgreSQL's (`wgmagic.proto.postgres.POSTGRES`: ".s.PGSQL.PORT",
SSLRequest answered, an ErrorResponse) for a postgres URL or libpq, the neutral one for MySQL or anything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from wgmagic import explain, platform
from wgmagic.addresses import format_address
from wgmagic.errors import PeerNotRespondingError
from wgmagic.proto import postgres
from wgmagic.proto.forwarding import NEUTRAL, ForwardProtocol, Goodbye
from wgmagic.runtime.relay import HappyEyeballs, SocketRelay
from wgmagic.runtime.seams import EngineAPI
from wgmagic.runtime.services.listener import (
    SocketPathError,
    accept_pending,
    close_listener,
    listen_inet,
    listen_unix,
)
from wgmagic.runtime.services.listener import short_private_directory as _short_private_directory

if TYPE_CHECKING:
    from wgmagic.netstack.tcp.connection import TcpConnection

logger = logging.getLogger(__name__)

BACKLOG = 256
CONNECT_TIMEOUT = 15.0  # seconds a forwarded connection may take to reach its target through the tunnel


GOODBYE_WAIT = 5.0  # seconds a refused client has to send its next message when its Goodbye awaits one


def _read_available(client: socket.socket, limit: int = 16) -> bytes:
    """What a non-blocking socket has buffered (at most `limit` reads)."""
    data = b""
    for _ in range(limit):
        try:
            chunk = client.recv(65536)
        except OSError:
            break
        if not chunk:
            break
        data += chunk
    return data


def _send_and_close(client: socket.socket, message: bytes) -> None:
    with contextlib.suppress(OSError):
        client.send(message)
    with contextlib.suppress(OSError):
        client.close()


def default_protocol(port: int) -> ForwardProtocol:
    """The protocol of a forward whose caller named none: PostgreSQL's on its well-known ports
    (wgmagic.proto.postgres.PORTS: 5432, 6432), else the neutral one."""
    return postgres.POSTGRES if port in postgres.PORTS else NEUTRAL


@dataclass
class ForwardSpec:
    """What a forward listens on and relays to. `protocol`: what it knows of its clients (see the module)."""

    remote_host: str
    remote_port: int
    remote_address: ipaddress.IPv4Address | ipaddress.IPv6Address
    local_kind: str  # "unix" or "tcp"
    bind_host: str = "127.0.0.1"
    bind_port: int = 0
    socket_dir: str | None = None
    owns_socket_dir: bool = False  # only a directory wgmagic made itself is chmod-ed and removed
    remote_addresses: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...] = ()  # in connection order
    fallback_reason: str | None = None  # why a default Unix-socket forward listens on TCP instead
    clients: platform.ClientScope | None = None  # who may connect over TCP; None: "user" for a default
    # forward that fell back to TCP, "any" for a TCP forward asked for by port (ssh -L)
    protocol: ForwardProtocol = NEUTRAL


class Forward:
    """One local listener; created and driven on the tunnel's loop thread, used from any thread."""

    def __init__(self, engine: EngineAPI, spec: ForwardSpec) -> None:
        self.engine = engine
        self.spec = spec
        self.relays: set[SocketRelay] = set()
        self.connecting: set[HappyEyeballs] = set()
        if not spec.remote_addresses:
            spec.remote_addresses = (spec.remote_address,)
        self.accepted = 0
        self.failed = 0
        self.refused = 0  # connections the loopback guard turned away
        self.checking: dict[socket.socket, asyncio.Future[bool]] = {}  # clients whose guard check runs
        self.goodbyes: set[socket.socket] = set()  # refused clients awaited for their next message
        self.closed = False
        self.listener, self.address = self._listen()
        engine.loop.add_reader(self.listener.fileno(), self._on_accept)

    def _listen(self) -> tuple[socket.socket, Any]:
        spec = self.spec
        if spec.local_kind == "unix":
            named = spec.socket_dir is not None
            if not platform.enabled("unix_sockets"):
                if named:
                    raise SocketPathError("this system has no Unix sockets (AF_UNIX): use a TCP forward (a port)")
                spec.local_kind, spec.fallback_reason = "tcp", "this system has no Unix sockets (AF_UNIX)"
            else:
                try:
                    return self._listen_unix()
                except SocketPathError as exc:
                    if named:
                        raise  # the user chose the directory: say why it cannot be used
                    # Tunnel.forward reports it, on the caller's thread, with this reason.
                    spec.local_kind, spec.socket_dir, spec.fallback_reason = "tcp", None, str(exc)
            if spec.clients is None:
                spec.clients = "user"
        if spec.clients is None:
            spec.clients = "any"
        sock, address = listen_inet(spec.bind_host, spec.bind_port, socket.SOCK_STREAM, backlog=BACKLOG,
                                    what="a forward")
        logger.info("forward listening on TCP %s -> %s (clients: %s)", format_address(address),
                    format_address((spec.remote_host, spec.remote_port)), spec.clients)
        return sock, address

    def _listen_unix(self) -> tuple[socket.socket, Any]:
        spec = self.spec
        # The protocol names it: libpq looks for DIR/.s.PGSQL.PORT, so host=DIR port=PORT then works.
        name = spec.protocol.socket_name(spec.remote_port)
        sock, path, spec.socket_dir, spec.owns_socket_dir = listen_unix(
            name, spec.socket_dir, socket.SOCK_STREAM, backlog=BACKLOG,
            alternative="choose a shorter directory (unix:DIR) or a TCP forward",
            make_directory=_short_private_directory)  # looked up here: tests replace it
        logger.info("forward listening on %s -> %s:%s", path, spec.remote_host, spec.remote_port)
        return sock, path

    # ---- loop thread ---------------------------------------------------------------------------------
    def _on_accept(self) -> None:
        if not accept_pending(self.listener, self._on_client):
            self.failed += 1

    def _on_client(self, client: socket.socket, peer: Any) -> None:
        if self.spec.local_kind == "tcp" and self.spec.clients not in (None, "any"):
            self._check(client, peer)  # relayed, or refused, when the guard's answer comes back
            return
        self._relay(client)

    def _relay(self, client: socket.socket) -> None:
        self.accepted += 1
        if self.spec.local_kind == "tcp":
            with contextlib.suppress(OSError):
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._connect(client)

    def _check(self, client: socket.socket, peer: Any) -> None:
        """The loopback guard, run in the loop's default executor (it blocks on the system's socket tables);
        its answer comes back to the loop (`_checked`). The client waits meanwhile; what it sends stays in its
        socket's buffer."""
        scope = self.spec.clients or "any"
        future = self.engine.loop.run_in_executor(None, platform.loopback_client_allowed, peer, self.address,
                                                  scope)
        self.checking[client] = future
        future.add_done_callback(lambda done: self._checked(client, peer, scope, done))

    def _checked(self, client: socket.socket, peer: Any, scope: platform.ClientScope,
                 done: asyncio.Future[bool]) -> None:
        """The guard answered (loop thread): relay `client`, or refuse it (in the words of the forward's
        protocol, where it has any, so the driver shows why) and count it. A check that failed refuses."""
        if self.checking.pop(client, None) is None:
            return  # the forward closed meanwhile, and closed the client
        try:
            allowed = bool(done.result())
        except Exception:  # never let the check itself take the loop down
            logger.exception("the loopback guard of %r failed; the connection is refused", self)
            allowed = False
        if allowed:
            self._relay(client)
            return
        self.refused += 1
        who = "this process" if scope == "process" else "processes of this user"
        logger.warning("forward %s refused a connection from %s: it accepts %s only", format_address(self.address),
                       format_address(peer), who)
        self._goodbye(client, f"wgmagic: this forward accepts connections from {who} only")

    def _goodbye(self, client: socket.socket, reason: str) -> None:
        """Close a client we will not relay; first say why, as the forward's protocol decides (`Goodbye`).

        What the client sent is read first (unread input would turn the close into a reset that may overtake
        the message). The protocol's answer may depend on the client's opening (PostgreSQL's SSLRequest), so a
        client that has sent nothing yet (the refusal came back before its first bytes) is awaited for them;
        a Goodbye that awaits the client's next message (the StartupMessage after an SSLRequest) waits for it
        too. Each wait is at most GOODBYE_WAIT seconds.
        """
        protocol = self.spec.protocol
        if self.closed or protocol.goodbye(b"", reason) is None:  # closed, or nothing to say: close now
            with contextlib.suppress(OSError):
                client.close()
            return
        with contextlib.suppress(OSError):
            client.setblocking(False)
        opening = _read_available(client)
        if opening:
            self._answer(client, protocol.goodbye(opening, reason))
        else:
            self._await(client, lambda: self._answer(client, protocol.goodbye(_read_available(client), reason)))

    def _answer(self, client: socket.socket, goodbye: Goodbye | None) -> None:
        """Carry out `goodbye`: reply, then (after the client's next message, when it awaits one) the final
        words, and close."""
        if goodbye is None or self.closed:
            with contextlib.suppress(OSError):
                client.close()
            return
        if not goodbye.await_next:
            _send_and_close(client, goodbye.reply + goodbye.final)
            return
        try:
            client.send(goodbye.reply)
        except OSError:
            with contextlib.suppress(OSError):
                client.close()
            return

        def next_arrived() -> None:
            _read_available(client)
            _send_and_close(client, goodbye.final)

        self._await(client, next_arrived)

    def _await(self, client: socket.socket, then: Callable[[], None]) -> None:
        """Run `then` once `client` has something to read (or has closed), or after GOODBYE_WAIT seconds."""
        loop = self.engine.loop
        timer: Any = None

        def ready() -> None:
            with contextlib.suppress(Exception):
                loop.remove_reader(client.fileno())
            if timer is not None:
                timer.cancel()
            if client not in self.goodbyes:
                return  # the forward closed meanwhile and closed the client
            self.goodbyes.discard(client)
            then()

        self.goodbyes.add(client)
        loop.add_reader(client.fileno(), ready)
        timer = loop.call_later(GOODBYE_WAIT, ready)

    def _connect(self, client: socket.socket) -> None:
        attempt: HappyEyeballs | None = None

        def connected(conn: TcpConnection) -> None:
            self.connecting.discard(attempt)
            relay = SocketRelay(self.engine, client, conn, on_done=self.relays.discard, connected=True)
            if not relay.done:
                self.relays.add(relay)

        def failed(error: BaseException) -> None:
            self.connecting.discard(attempt)
            self._on_failed(client, error)

        attempt = HappyEyeballs(self.engine, self.spec.remote_addresses, self.spec.remote_port, CONNECT_TIMEOUT,
                                connected, failed)
        if not attempt.done:
            self.connecting.add(attempt)

    def _on_failed(self, client: socket.socket, error: BaseException) -> None:
        """A connection that could not reach its target; closes `client`. libpq shows a server's ErrorResponse
        to the user verbatim, so a driver behind this forward learns why instead of "server closed the
        connection unexpectedly" (where the forward's protocol has words for it)."""
        self.failed += 1
        self._goodbye(client, self._failure_reason(error))

    def _failure_reason(self, error: BaseException) -> str:
        """Why a connection could not reach the target, in wgmagic.explain's words, for the client to show."""
        host, port = self.spec.remote_host, self.spec.remote_port
        if isinstance(error, ConnectionRefusedError):
            explanation = explain.connection_refused(host, port)
        elif isinstance(error, PeerNotRespondingError):  # the liveness verdict, with its own measure of the silence
            explanation = explain.connect_failed(host, port, str(error))
        elif isinstance(error, TimeoutError):
            silent = self.engine.peer_silent_since(time.monotonic() - CONNECT_TIMEOUT)
            explanation = explain.connect_timed_out(host, port, CONNECT_TIMEOUT, peer_silent=bool(silent))
        else:
            explanation = explain.connect_failed(host, port, str(error))
        return f"wgmagic: {explanation}"

    def close_on_loop(self) -> None:
        if self.closed:
            return
        self.closed = True
        unix = self.spec.local_kind == "unix"
        close_listener(self.engine.loop, self.listener, self.address, self.spec.socket_dir if unix else None,
                       self.spec.owns_socket_dir)
        for attempt in list(self.connecting):
            attempt.close()
        self.connecting.clear()
        for relay in list(self.relays):
            relay.close()
        self.relays.clear()
        checking, self.checking = self.checking, {}
        for client, future in checking.items():  # the guard's answer, if it still comes, finds them gone
            future.cancel()  # (and, cancelled, is not handed to a loop that may be closed by then)
            with contextlib.suppress(OSError):
                client.close()
        for client in list(self.goodbyes):
            with contextlib.suppress(Exception):
                self.engine.loop.remove_reader(client.fileno())
            with contextlib.suppress(OSError):
                client.close()
        self.goodbyes.clear()

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
        target = format_address((self.spec.remote_host, self.spec.remote_port))
        return (f"<Forward {format_address(self.address)} -> {target} ({self.spec.protocol.name}, "
                f"{len(self.relays)} open)>")
