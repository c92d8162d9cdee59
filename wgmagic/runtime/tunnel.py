"""Tunnel: the thread-safe API of one user-mode WireGuard tunnel living in this process."""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import errno
import hashlib
import ipaddress
import itertools
import logging
import os
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Container, Coroutine, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

from wgmagic import explain, platform
from wgmagic.addresses import format_address
from wgmagic.config import WireGuardConfig, load_config
from wgmagic.errors import (
    EndpointUnresolvableError,
    HandshakeTimeoutError,
    MessageTooLongError,
    PeerNotRespondingError,
    TunnelClosedError,
    TunnelConflictError,
    import_optional,
)
from wgmagic.netstack.tcp.config import TcpConfig
from wgmagic.runtime.engine import Engine
from wgmagic.runtime.loop import LoopThread
from wgmagic.wireguard.timers import Timers

if TYPE_CHECKING:
    from wgmagic.runtime.services.capture import Capture
    from wgmagic.runtime.services.expose import Exposed
    from wgmagic.runtime.services.forward import Forward
    from wgmagic.runtime.services.socks import Socks5Server
    from wgmagic.runtime.services.udp_forward import UdpForward

T = TypeVar("T")
logger = logging.getLogger(__name__)
# Strong references: an open tunnel runs a thread and holds a socket until close(), referenced or not, so it
# stays findable (get_tunnel, the one-key check) and the atexit hook still closes it.
_open_tunnels: dict[str, Tunnel] = {}
_registry_lock = threading.Lock()


@dataclass(frozen=True)
class PingReply:
    host: str
    seq: int
    size: int
    rtt: float | None  # seconds; None when the echo timed out


def _resolve_endpoint(host: str, port: int) -> list[tuple[str, int]]:
    """The peer Endpoint's addresses in the order the system's resolver gives them (getaddrinfo applies
    RFC 6724 and /etc/gai.conf), each once; the engine tries the next when handshakes to one go unanswered."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        raise EndpointUnresolvableError(str(explain.endpoint_unresolvable(host, port, str(exc.strerror)))) from None
    addresses: list[tuple[str, int]] = []
    for family, _type, _proto, _name, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        candidate = (str(sockaddr[0]).partition("%")[0] if family == socket.AF_INET6 else str(sockaddr[0]), port)
        if candidate not in addresses:
            addresses.append(candidate)
    if not addresses:
        raise EndpointUnresolvableError(f"the peer's Endpoint {host}:{port} has no IPv4 or IPv6 address")
    return addresses


def default_name(source: str, taken: Container[str] = ()) -> str:
    """A tunnel's name when none is given, one rule for `wgmagic.connect`, `wgmagic up` and `%wg connect`: the
    config file's stem, as wg-quick names the interface (/etc/wireguard/wg0.conf -> wg0); "$var" (text from a
    notebook variable) -> var; other text -> wg0. A name an open tunnel of this process (or `taken`) already
    has gets a suffix: wg0-2, wg0-3, ... (text: wg1, wg2, ...)."""
    with _registry_lock:
        return _free_name(source, taken)


def _free_name(source: str, taken: Container[str]) -> str:
    import re

    if source.startswith("<"):  # text given directly: wg0, wg1, ... as wg-quick users number interfaces
        candidates: Iterator[str] = (f"wg{index}" for index in itertools.count())
    else:
        base = source[1:] if source.startswith("$") else os.path.splitext(os.path.basename(source))[0]
        base = re.sub(r"[^\w.-]", "_", base) or "wg"
        candidates = itertools.chain([base], (f"{base}-{index}" for index in itertools.count(2)))
    return next(n for n in candidates if n not in taken and not (n in _open_tunnels and not _open_tunnels[n]._closed))


def find_twin(config: WireGuardConfig) -> Tunnel | None:
    """The open tunnel of this process with the same private key to one of the same peers, if any."""
    with _registry_lock:
        return _twin_of(config)


def _twin_of(config: WireGuardConfig) -> Tunnel | None:
    peers = {p.public_key for p in config.peers}
    for other in _open_tunnels.values():
        if other._closed or other.config.interface.private_key != config.interface.private_key:
            continue
        if peers & {p.public_key for p in other.config.peers}:
            return other
    return None


def _refuse_twin(config: WireGuardConfig) -> None:
    """Two tunnels with one key to one peer take each other's traffic: refuse the second (registry lock held).

    A WireGuard peer knows one endpoint per public key and moves it to whichever sender it last authenticated
    (roaming), so the older tunnel's next keepalive or handshake silently steals the newer one's replies.
    """
    other = _twin_of(config)
    if other is not None:
        raise TunnelConflictError(
            f"tunnel {other.name!r} is already up with this private key to the same peer; a WireGuard peer "
            "answers only the one of two such tunnels that spoke last, so both would lose traffic. "
            f"Use that tunnel (wgmagic.get_tunnel({other.name!r})), or close it first "
            f"(%wg disconnect {other.name}, or tunnel.close())")


def _claim_key(config: WireGuardConfig) -> list[int]:
    """The same refusal across this user's processes (two notebooks, a notebook and `wgmagic up`): an advisory
    lock per (our public key, peer) in a private directory, released by close() or by the process dying."""
    if not platform.enabled("flock"):  # no flock here: only the in-process check applies
        logger.debug("no flock on this system: the one-key check covers this process only")
        return []
    import fcntl

    from wgmagic.wireguard.crypto import public_key

    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    directory = os.path.join(base, f"wgmagic-{os.getuid()}")
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        info = os.lstat(directory)
    except OSError:
        return []
    # In a shared /tmp the directory may be someone else's (planted to hold our locks or to point a lock file at
    # a file of ours): use it only if it is a real directory, ours, and closed to others.
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        return []
    ours = public_key(config.interface.private_key)
    held: list[int] = []
    for peer in config.peers:
        name = hashlib.blake2s(ours + peer.public_key, digest_size=12).hexdigest()
        try:
            fd = os.open(os.path.join(directory, f"{name}.lock"), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            for other in held:
                os.close(other)
            raise TunnelConflictError(
                f"process {owner} already has a tunnel up with this private key to peer "
                f"{peer.public_key_b64[:8]}... (another notebook, or `wgmagic up`); a WireGuard peer answers only "
                "the one that spoke last, so both would lose traffic. Close that one, or give this client its "
                "own key (a [Peer] entry of its own on the server)") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        held.append(fd)
    return held


class Tunnel:
    """One tunnel: its own loop thread, UDP socket, WireGuard device and IP stack."""

    def __init__(self, config: WireGuardConfig, *, name: str | None = None, timers: Timers | None = None,
                 endpoint_resolver: Callable[[str, int], list[tuple[str, int]]] | None = None,
                 reresolve_interval: float = 120.0, via: Any = None, tcp: TcpConfig | None = None) -> None:
        """endpoint_resolver(host, port) -> [(address, port), ...]: how a peer's Endpoint name is resolved, at
        start and again every `reresolve_interval` seconds (default: the system's getaddrinfo); see
        runtime/endpoints.py."""
        self.config = config
        self.via = via  # runtime.websocket.Via when the datagrams go over a WebSocket; None: UDP
        self._tcp = tcp  # the TCP knobs of its connections (None: TUNNEL_CONFIG, see netstack/tcp/config.py)
        self._endpoint_resolver = endpoint_resolver or _resolve_endpoint
        self._reresolve_interval = reresolve_interval
        self._closed = False
        self._key_locks: list[int] = []
        with _registry_lock:
            self.name = name or _free_name(config.source, ())
            if self.name in _open_tunnels:
                raise TunnelConflictError(f"a tunnel named {self.name!r} is already open: close it, or choose "
                                          "another name")
            _refuse_twin(config)
            _open_tunnels[self.name] = self  # reserved now, so a concurrent connect sees it
        try:
            self._key_locks = _claim_key(config)
            self._start(config, timers)
        except BaseException:
            self._closed = True
            self._unregister()
            raise

    def _start(self, config: WireGuardConfig, timers: Timers | None) -> None:
        resolver = self._endpoint_resolver
        over_websocket = self.via is not None and self.via.mode == "websocket"
        if over_websocket:
            # Over a WebSocket the Endpoint is never dialled (the relay knows the peer): no need to resolve it,
            # which matters where only the proxy resolves names.
            endpoints: dict[bytes, Any] = {p.public_key: p.endpoint for p in config.peers}
        else:
            endpoints = {p.public_key: resolver(*p.endpoint) if p.endpoint else [] for p in config.peers}
        self._thread = LoopThread(self.name)
        self._engine = Engine(config, endpoints, loop=self._thread.loop, timers=timers, via=self.via,
                              tcp_config=self._tcp)
        self._ident = os.getpid() & 0xFFFF
        self._seq = itertools.count(1)
        self._forwards: list[Forward | UdpForward] = []
        self._socks_servers: list[Socks5Server] = []
        self._exposes: list[Exposed] = []
        self._captures: list[Capture] = []
        from wgmagic.runtime.endpoints import EndpointFollower

        self._follower = EndpointFollower(self._engine, resolver, interval=self._reresolve_interval)
        self._thread.start()
        try:
            self._thread.call(self._engine.open)
            if not over_websocket:
                self._thread.call(self._follower.start)
        except BaseException:
            self._thread.stop()
            raise

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        peers = ", ".join(format_address(p.endpoint) for p in self.config.peers if p.endpoint)
        return f"<Tunnel {self.name!r} {state} peers=[{peers}]>"

    # ---- lifecycle --------------------------------------------------------------------------------------
    def wait_handshake(self, timeout: float = 10.0) -> float | None:
        """Start a handshake (if none is current) and wait for it; returns the handshake RTT in seconds."""
        self._check_open()

        async def wait() -> float | None:
            return await self._engine.wait_handshake()

        try:
            return self._thread.run(wait(), timeout=timeout)
        except TimeoutError as exc:
            if isinstance(exc, HandshakeTimeoutError):
                raise
            explanation = self._thread.call(self._describe_no_handshake)
            raise HandshakeTimeoutError(f"{explanation} (gave up after {timeout:g} s)",
                                        explanation=explanation) from None

    def switch_to_websocket(self, via: Any) -> None:
        """Carry the datagrams over the WebSocket at via.url from now on (what --via auto does)."""
        self._check_open()
        self._thread.call(self._engine.switch_to_websocket, via)
        self.via = self._engine.via

    @property
    def transport_description(self) -> str:
        """'UDP' or 'WebSocket wss://... (open)', for status lines (never a password)."""
        return self._engine.transport.describe()

    def _describe_no_handshake(self) -> explain.Explanation:
        peer = next(iter(self._engine.peers.values()))
        return self._engine.describe_no_handshake(peer)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._thread.running:
            try:
                self._thread.call(self._follower.close, timeout=5.0)
                for capture in self._captures:
                    self._thread.call(capture.close_on_loop, timeout=5.0)
                for exposed in self._exposes:
                    self._thread.call(exposed.listener.close_on_loop, timeout=5.0)
                listeners: list[Any] = [*self._forwards, *self._socks_servers]
                for listener in listeners:
                    self._thread.call(listener.close_on_loop, timeout=5.0)
                self._forwards.clear()
                self._socks_servers.clear()
                self._exposes.clear()
                self._thread.call(self._engine.close, timeout=5.0)
            except (TimeoutError, TunnelClosedError):
                pass
        self._thread.stop()
        self._unregister()
        logger.info("tunnel %r closed", self.name)

    def _unregister(self) -> None:
        for fd in self._key_locks:
            os.close(fd)  # releases the flock
        self._key_locks = []
        with _registry_lock:
            if _open_tunnels.get(self.name) is self:
                del _open_tunnels[self.name]

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Tunnel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed or not self._thread.running:
            raise TunnelClosedError(f"tunnel {self.name!r} is closed")

    # ---- ICMP -------------------------------------------------------------------------------------------
    def _route_check(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
        self._engine.check_route(address)

    def ping_iter(self, host: str, count: int = 4, *, interval: float = 1.0, timeout: float = 2.0,
                  size: int = 56) -> Iterator[PingReply]:
        """Send `count` ICMP echo requests through the tunnel, yielding one PingReply per request.

        host: an address, or a name resolved through the tunnel (the first address the tunnel can route).
        size: payload bytes (ping's -s). Raises NoRouteError when the tunnel cannot reach the host, and
        MessageTooLongError (an OSError, EMSGSIZE) when the echo would not fit the tunnel's MTU: nothing here
        fragments (as `ping -M do` refuses with "message too long").
        """
        self._check_open()
        address = self.resolve_addresses(host)[0]
        header = 20 if address.version == 4 else 40
        mtu = self.config.mtu
        if size < 0 or header + 8 + size > mtu:
            raise MessageTooLongError(errno.EMSGSIZE, f"message too long: a ping with {size} data bytes is a "
                          f"{header + 8 + size}-byte IPv{address.version} packet and the tunnel's MTU is {mtu} "
                          f"(wgmagic does not fragment); use a size of at most {mtu - header - 8}")
        payload = bytes(i & 0xFF for i in range(size))
        for index in range(count):
            started = time.monotonic()
            seq = next(self._seq) & 0xFFFF
            answered_at = self._thread.run(self._echo(address, seq, payload, timeout), timeout=timeout + 5)
            rtt = None if answered_at is None else answered_at - started
            yield PingReply(str(address), seq, size, rtt)
            if index + 1 < count:
                spent = time.monotonic() - started
                if spent < interval:
                    time.sleep(interval - spent)

    def ping(self, host: str, count: int = 4, **kwargs: float) -> list[PingReply]:
        return list(self.ping_iter(host, count, **kwargs))  # type: ignore[arg-type]

    async def _echo(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address, seq: int, payload: bytes,
                    timeout: float) -> float | None:
        future = self._engine.send_echo(address, self._ident, seq, payload)
        try:
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            return None

    # ---- TCP ----------------------------------------------------------------------------------------------
    def open_connection(self, host: str, port: int, timeout: float | None = 15.0) -> socket.socket:
        """A connected TCP socket to host:port through the tunnel, for drivers that take a socket.

        It is a real socket (one end of a socketpair whose other end the tunnel's loop relays), so `ssl`
        can wrap it, `select` can watch it and pg8000's `sock=` takes it. `timeout` bounds the connect and
        becomes the socket's timeout (None: connect waits up to 60 s and the socket blocks).
        """
        connect_timeout = 60.0 if timeout is None else timeout
        ours, outcome = self._start_relay(host, port, connect_timeout)
        try:
            try:
                outcome.result(connect_timeout + 2.0)
            except concurrent.futures.TimeoutError:
                raise self._connect_timeout(host, port, connect_timeout) from None
            except BaseException as exc:
                raise self._connect_error(host, port, connect_timeout, exc) from None
        except BaseException:
            ours.close()
            raise
        ours.settimeout(timeout)
        return ours

    async def open_connection_async(self, host: str, port: int, timeout: float = 15.0, *,
                                    limit: int = 2**16) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """asyncio streams to host:port through the tunnel, for the caller's own event loop."""
        ours, outcome = await asyncio.to_thread(self._start_relay, host, port, timeout)
        try:
            try:
                await asyncio.wait_for(asyncio.wrap_future(outcome), timeout + 2.0)
            except TimeoutError:
                raise self._connect_timeout(host, port, timeout) from None
            except BaseException as exc:
                raise self._connect_error(host, port, timeout, exc) from None
            return await asyncio.open_connection(sock=ours, limit=limit)
        except BaseException:
            ours.close()
            raise

    def _start_relay(self, host: str, port: int,
                     timeout: float) -> tuple[socket.socket, concurrent.futures.Future[None]]:
        """Start connecting; the tunnel's loop relays the far end of a socketpair once connected.

        A name is tried at each address the tunnel can route, RFC 8305 style (see resolve_addresses).
        """
        from wgmagic.runtime.relay import HappyEyeballs, SocketRelay

        self._check_open()
        addresses = self.resolve_addresses(host)
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

        def connected(conn: Any) -> None:  # a TcpConnection
            SocketRelay(self._engine, theirs, conn, on_connected=lambda _relay: settle(None), connected=True,
                        wake_local_peer=wake_ours)

        def failed(error: BaseException) -> None:
            theirs.close()
            settle(error)

        def start() -> None:
            try:
                HappyEyeballs(self._engine, addresses, port, timeout, connected, failed)
            except BaseException:
                theirs.close()
                raise

        try:
            self._thread.call(start)
        except BaseException:
            ours.close()
            raise
        return ours, outcome

    def _connect_error(self, host: str, port: int, timeout: float, error: BaseException) -> BaseException:
        if isinstance(error, ConnectionRefusedError):
            return ConnectionRefusedError(str(explain.connection_refused(host, port, through=f"tunnel {self.name!r}")))
        if isinstance(error, TimeoutError):
            return self._connect_timeout(host, port, timeout)
        return error

    def forward(self, target: str, local: str | int | None = None, *, idle_timeout: float | None = None,
                max_flows: int | None = None, clients: platform.ClientScope | None = None) -> Forward | UdpForward:
        """Listen locally and relay each connection to `target` ("db.internal:5432") through the tunnel.

        local=None: a Unix socket in a fresh 0700 directory (see Forward.libpq_params()); local=PORT or
        "HOST:PORT" or "unix:/dir": TCP on that loopback address and port (0: any free port), or that directory.
        When TMPDIR is too long for a socket path (sun_path: 107 bytes), the default directory is made in
        $XDG_RUNTIME_DIR or /tmp, and failing those the forward listens on 127.0.0.1 with a warning; a named
        directory that is too long raises services.forward.SocketPathError. Each connection tries the target's
        routable addresses in turn (resolve_addresses, RFC 8305); NoRouteError when it has none.

        target "udp:HOST:PORT": a UDP forward (services.udp_forward.UdpForward): one flow per client address,
        ended after `idle_timeout` seconds idle (default 120, RFC 4787), at most `max_flows` (default 1024);
        local as above, the default a Unix datagram socket in a fresh 0700 directory.
        Where there are no Unix sockets (or WGMAGIC_PORTABLE=unix_sockets), the default forward listens on
        127.0.0.1 and admits only connections from this user's processes. `clients` sets who a TCP listener
        admits: "any" (the default for local=PORT, like ssh -L), "user", or "process" (only this process's
        sockets: for a driver in this process, as %%wgsql uses it); see wgmagic.platform.loopback_client_allowed.
        """
        from wgmagic.addresses import is_udp_target, parse_local, split_host_port
        from wgmagic.runtime.services.forward import Forward, ForwardSpec

        self._check_open()
        if is_udp_target(target):
            return self._udp_forward(target, local, idle_timeout, max_flows)
        host, port = split_host_port(target)
        where = parse_local(local)
        addresses = self.resolve_addresses(host)
        spec = ForwardSpec(host, port, addresses[0], "unix", remote_addresses=tuple(addresses), clients=clients)
        if where.kind == "unix":
            spec.socket_dir = where.socket_dir
        else:
            spec.local_kind, spec.bind_host, spec.bind_port = "tcp", where.bind_host, where.bind_port
        forward = self._thread.call(Forward, self._engine, spec)
        self._forwards.append(forward)
        if spec.fallback_reason:
            # A degraded mode, not a hole: the loopback guard still keeps other users out.
            guard = "this process" if spec.clients == "process" else "this user's processes"
            logger.warning("%s; this forward listens on TCP %s instead, and admits connections from %s only",
                           spec.fallback_reason, spec.bind_host, guard)
        return forward

    def _udp_forward(self, target: str, local: str | int | None, idle_timeout: float | None,
                     max_flows: int | None) -> UdpForward:
        from wgmagic.addresses import parse_udp_target
        from wgmagic.runtime.services.udp_forward import UdpForward, make_spec

        host, _port = parse_udp_target(target)
        spec = make_spec(target, local, self.resolve_addresses(host), idle_timeout=idle_timeout,
                         max_flows=max_flows)
        forward = self._thread.call(UdpForward, self._engine, spec)
        self._forwards.append(forward)
        return forward

    def close_forward(self, forward: Forward | UdpForward) -> None:
        """Close one forward (TCP or UDP: its listener, connections or flows, and private directory)."""
        self._close_service(self._forwards, forward, forward.close_on_loop)

    def _close_service(self, services: list[Any], service: Any, close_on_loop: Callable[[], None]) -> None:
        """Take `service` off its list (forwards, SOCKS proxies, exposes) and run its `close_on_loop` on the
        loop thread; once that thread has stopped, the tunnel's close has closed it already."""
        if service in services:
            services.remove(service)
        if self._thread.running:
            self._thread.call(close_on_loop)

    @property
    def forwards(self) -> list[Forward | UdpForward]:
        return list(self._forwards)

    def socks(self, port: int | None = None, host: str = "127.0.0.1",
              credentials: tuple[str, str] | None = None, *, unix: str | None = None,
              no_auth: bool = False) -> Socks5Server:
        """A SOCKS5 proxy into this tunnel (RFC 1928: CONNECT and UDP ASSOCIATE; names resolved through the
        tunnel's DNS), private to this user by default.

        port None: a Unix socket in a fresh 0700 directory (unix="DIR": in that directory), `server.address`
        its path; curl >= 7.84 takes it as `--proxy socks5h://localhost/PATH` (server.proxy_url()), Python
        code through services.socks.socks5_connect(PATH, host, port). port given (0: any free port): TCP on
        `host`, asking for RFC 1929 username/password: `credentials`, or a pair generated for this proxy
        (server.credentials, server.proxy_url(reveal=True)), never shown by repr or status. no_auth=True: TCP
        without credentials, with a warning, since every local user can then use the tunnel through it.
        Raises ValueError for no_auth with credentials or a Unix socket, OSError when the bind fails.
        """
        from wgmagic.runtime.services.socks import Socks5Server, generate_credentials

        self._check_open()
        if port is None and host != "127.0.0.1" and unix is None:
            port = 0
        if port is None:
            if no_auth or credentials is not None:
                raise ValueError("a Unix-socket SOCKS proxy is private by its 0700 directory: credentials and "
                                 "no_auth are for a TCP port")
            server = self._thread.call(lambda: Socks5Server(self._engine, self._resolve_routable_async, unix=True,
                                                            unix_dir=unix))
        else:
            if no_auth and credentials is not None:
                raise ValueError("no_auth=True and credentials contradict each other")
            if no_auth:
                logger.warning("the SOCKS5 proxy on %s asks for no credentials: every user of this machine "
                               "can reach the private network through it", format_address((host, port)))
            elif credentials is None:
                credentials = generate_credentials()
            server = self._thread.call(Socks5Server, self._engine, self._resolve_routable_async, host, port,
                                       None if no_auth else credentials)
        self._socks_servers.append(server)
        return server

    # ---- reverse forwards and captures ---------------------------------------------------------------------
    def expose(self, spec: str | int, target: str | None = None, *, allow: Any = None,
               connect_timeout: float = 10.0) -> Exposed:
        """A reverse forward (like `ssh -R`): listen on this tunnel's address(es) at a TCP port, inside this
        process's stack, and relay each peer's connection to a port on this machine.

        spec: "[ADDR:]PORT=HOST:PORT" ("8080=127.0.0.1:8000"), or the tunnel PORT with `target` "HOST:PORT".
        allow: networks (CIDR strings or ip_network) a connecting peer address must be in, besides the peers'
        AllowedIPs (which always apply); others are refused with a reset. A peer's SYN is answered only once
        the local connect succeeded (a reset when it is refused or takes longer than `connect_timeout` s).
        Raises ValueError (a bad spec, a target that does not resolve), OSError (EADDRINUSE: the tunnel port
        already listens). Closed by `Exposed.close()` or with the tunnel; listed in `exposes`.
        """
        from wgmagic.addresses import parse_expose
        from wgmagic.runtime.services.expose import Exposed, ExposeListener, resolve_target

        self._check_open()
        text = spec if target is None else f"{spec}={target}"
        parsed = parse_expose(str(text), option="expose")
        networks = None if allow is None else [ipaddress.ip_network(n, strict=False) for n in (
            [allow] if isinstance(allow, str) else allow)]
        targets = resolve_target(parsed)
        listener = self._thread.call(lambda: ExposeListener(self._engine, parsed, targets,
                                                            connect_timeout=connect_timeout, allow=networks))
        exposed = Exposed(self, listener, self._close_exposed)
        self._exposes.append(exposed)
        return exposed

    def _close_exposed(self, exposed: Exposed) -> None:
        self._close_service(self._exposes, exposed, exposed.listener.close_on_loop)

    @property
    def exposes(self) -> list[Exposed]:
        return list(self._exposes)

    def capture(self, file: str | os.PathLike[str] | None = None, *, seconds: float | None = None,
                max_packets: int = 100_000, max_bytes: int = 64 * 1024 * 1024, payload: bool = False,
                outer: bool = False) -> Capture:
        """Start a packet capture of this tunnel into a pcapng file (Wireshark, tshark); returns at once.

        The inner IP packets both ways (LINKTYPE_RAW, direction in each block), and with `outer` the WireGuard
        UDP datagrams as a second interface. Without `payload` each packet is cut after its TCP/UDP/ICMP
        header (no query data in the file). Stops by itself after `seconds`, `max_packets` packets or
        `max_bytes` captured bytes, at `Capture.stop()`, or when the tunnel closes; then the file is written
        (mode 0600; default `wgmagic-NAME-YYYYmmdd-HHMMSS.pcapng` here). One capture at a time per tunnel:
        RuntimeError while another runs; OSError when the file cannot be created. See services/capture.py.
        """
        from wgmagic.runtime.services.capture import Capture

        self._check_open()
        path = file or f"wgmagic-{self.name}-{time.strftime('%Y%m%d-%H%M%S')}.pcapng"
        capture = Capture(self, path, seconds=seconds, max_packets=max_packets, max_bytes=max_bytes,
                          payload=payload, outer=outer)
        self._captures = [c for c in self._captures if c.stopped_by is None] + [capture]
        return capture

    @property
    def captures(self) -> list[Capture]:
        return list(self._captures)

    def close_socks(self, server: Socks5Server) -> None:
        """Close one SOCKS5 proxy (its connections, UDP associations and private directory)."""
        self._close_service(self._socks_servers, server, server.close_on_loop)

    @property
    def socks_servers(self) -> list[Socks5Server]:
        return list(self._socks_servers)

    def _connect_timeout(self, host: str, port: int, timeout: float) -> TimeoutError:
        peer_silent = bool(self._thread.call(self._engine.peer_silent_since, time.monotonic() - timeout))
        message = str(explain.connect_timed_out(host, port, timeout, peer_silent=peer_silent))
        return PeerNotRespondingError(message) if peer_silent else TimeoutError(message)

    def resolve_address(self, host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        """The address a connection to `host` tries first (see resolve_addresses)."""
        return self.resolve_addresses(host)[0]

    def resolve_addresses(self, host: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        """The addresses of `host` (a literal, or a name resolved through the tunnel's DNS) that this tunnel can
        reach -- inside a peer's AllowedIPs, of a family the [Interface] has an Address of -- in the order
        connections try them: RFC 6724 section 6 destination order, families interleaved (RFC 8305 section 4).

        Raises NoRouteError ("no route to ...", with each address's reason) when none is usable, and the
        resolver's NameNotFoundError / DNSTimeoutError.
        """
        try:
            addresses = [ipaddress.ip_address(host.strip("[]"))]
        except ValueError:
            addresses = self.resolve(host)
        usable = self._engine.select_addresses(addresses)
        if not usable:
            raise self._engine.no_route(host.strip("[]"), addresses)
        return usable

    async def _resolve_routable_async(self, host: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        """resolve_addresses on the loop thread (for the SOCKS5 server's domain-name CONNECTs)."""
        addresses = await self._engine.resolve_async(host)
        usable = self._engine.select_addresses(addresses)
        if not usable:
            raise self._engine.no_route(host, addresses)
        return usable

    def resolve(self, name: str, timeout: float = 5.0) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        """Resolve a name through the tunnel's DNS servers (never the host's resolver): the A answers, then
        the AAAA answers. What a connection tries, and in which order, is resolve_addresses'.

        timeout: seconds for the whole resolution (search domains, retries and a TCP retry included; each
        query waits up to 2 s, then the next server is asked, RFC 1035 4.2.1 / resolv.conf's rotation).
        Raises NameNotFoundError (NXDOMAIN or no A/AAAA records), DNSTimeoutError (no answer within
        `timeout`), TunnelClosedError."""
        self._check_open()
        return self._thread.run(self._engine.resolve_async(name, lifetime=timeout), timeout=timeout + 5)

    # ---- introspection ------------------------------------------------------------------------------------
    def stats(self) -> dict[str, object]:
        """A snapshot of the tunnel, taken on its loop thread: a new plain dict (JSON-serialisable but for the
        `endpoint` tuples), safe to keep. Raises TunnelClosedError once closed.

        Times are seconds: durations are floats, points in time (`last_*`, `session_created`) are
        `time.monotonic()` readings. Byte and packet counts are ints since the tunnel started.

        - "name": str, the tunnel's name; "local_port": int, the UDP port its WireGuard socket is bound to.
        - "totals": dict[str, int | float | None | dict], the counters `history()` samples
          (`wgmagic.runtime.metrics.totals`): "udp_rx_bytes", "udp_tx_bytes", "udp_rx_datagrams",
          "udp_tx_datagrams" (the outer UDP socket); "wg_rx_bytes", "wg_tx_bytes", "wg_rx_packets",
          "wg_tx_packets" (WireGuard transport data, all peers); "handshakes", "rekeys",
          "handshake_initiations_sent", "keepalives_sent"; "ip_packets_in", "ip_packets_out" (inner IP);
          "tcp_bytes_in", "tcp_bytes_out", "tcp_retransmits" (closed connections included);
          "tcp_connections", "tcp_established" (live now); "tcp_srtt" (float seconds, mean over established
          connections, or None); "drops" (int, all reasons) and "drops_by_reason" (dict[str, int], keys
          "wireguard.<reason>" and "ip.<reason>").
        - "counters": dict[str, int], the runtime's own counters (e.g. "udp_rx_bytes", "no_route",
          "event_<ClassName>" per device event, "dns_mismatched", "dns_unexpected_source",
          "dns_tcp_fallbacks"); a key appears once its count is non-zero.
        - "device": the WireGuard device's `Device.stats()`: {"peers": {public key base64: {"endpoint":
          (host, port) | None, "last_handshake", "last_receive", "last_send": float | None, "rx_bytes",
          "tx_bytes", "rx_packets", "tx_packets", "handshakes", "rekeys", "handshake_initiations_sent",
          "keepalives_sent", "staged": int, "session_age": None, "session_created": float (only while a
          session exists)}}, "drops": dict[str, int], "cookie_replies_sent": int}.
        - "device_drops", "stack_drops": dict[str, int], packets dropped by reason (WireGuard; inner IP/TCP).
        - "connections": int, tunnel TCP connections the runtime is relaying or opening now.
        - "tcp": {"connections": int (live in the stack), "buffered_bytes": int (in TCP buffers and relays),
          "retransmits": int (closed connections included)}.
        - "tcp_connections": list of dicts, one per live connection: "remote" ("ip:port"), "state" (a
          `TcpState`, a str: "ESTABLISHED", ...), "srtt", "rto" (float seconds | None), "cwnd", "send_window",
          "buffered" (bytes), "bytes_sent", "bytes_received", "retransmits" (int).
        - "handshake_age": float seconds since the newest handshake with any peer, or None.
        - "handshake_rtt": float seconds of the newest handshake we initiated, or None.
        - "icmp_rtt": float seconds of the newest answered ping, or None.
        """
        self._check_open()
        return self._thread.call(self._snapshot)

    def peer_report(self) -> list[dict[str, object]]:
        """Per peer: key fingerprint (public), endpoint, handshake age, seconds to the next rekey, traffic, and
        "not_answering": a sentence when the peer stopped answering traffic (whitepaper 6 timers), else None."""
        self._check_open()
        return self._thread.call(self._peer_report)

    def _peer_report(self) -> list[dict[str, object]]:
        from wgmagic.runtime.endpoints import is_name

        now = time.monotonic()
        device = self._engine.device
        report = []
        for key in self._engine.peers:
            peer = device.peer(key)
            stats = peer.stats()
            last = cast("float | None", stats["last_handshake"])
            current = getattr(peer, "current", None)
            rekey = None
            if current is not None and getattr(current, "initiator", False):
                rekey = max(0.0, device.timers.rekey_after_time - (now - current.created))
            endpoint = cast("tuple[str, int] | None", stats["endpoint"])
            runtime = self._engine.peers[key]
            configured = runtime.configured_endpoint
            report.append({
                "fingerprint": peer.public_key_b64[:8] + "...",
                "endpoint": format_address(endpoint) if endpoint else "(none)",
                # the Endpoint as configured when it is a name (followed: runtime/endpoints.py), else None
                "endpoint_name": (format_address(configured) if configured and is_name(configured[0]) else None),
                "allowed_ips": [str(net) for net in peer.allowed_ips],
                "has_session": peer.has_session(now),
                "handshakes": runtime.handshakes,
                "handshake_age": None if last is None else now - last,
                "next_rekey_in": rekey,
                "rx_bytes": stats["rx_bytes"], "tx_bytes": stats["tx_bytes"],
                "rx_packets": stats["rx_packets"], "tx_packets": stats["tx_packets"],
                # why the peer counts as not answering (Engine.peer_not_answering_since), or None
                "not_answering": self._engine.peer_not_answering_reason(key, now),
            })
        return report

    def history(self, window: float | None = None) -> list[dict[str, object]]:
        """Samples taken about 10 times a second (the last 10 minutes at most; `window` seconds if given):
        flat records, so `pandas.DataFrame(tunnel.history())` gives one column per measure."""
        self._check_open()
        return self._thread.call(self._engine.metrics.history, window)

    def _snapshot(self) -> dict[str, object]:
        from wgmagic.runtime.metrics import totals

        engine = self._engine
        return {
            "name": self.name,
            "local_port": engine.local_port,
            "totals": totals(engine),
            "counters": dict(engine.counters),
            "device": engine.device.stats(),
            "device_drops": dict(engine.device.drops),
            "stack_drops": dict(engine.stack.drops),
            "connections": len(engine.streams),
            "tcp": engine.tcp_stats(),
            "tcp_connections": [{"remote": format_address(c.remote), "state": c.state, **c.stats()}
                                for c in engine.stack.tcp.values()],
            "handshake_age": engine.handshake_age(),
            "handshake_rtt": engine.last_handshake_rtt(),
            "icmp_rtt": engine.last_echo[1] if engine.last_echo else None,
        }

    # ---- services on the loop: the public way for wgmagic's own services (the gateway...) to run here -------
    def call_on_loop(self, fn: Callable[..., T], *args: Any, timeout: float | None = 10.0) -> T:
        """Run `fn(*args)` on this tunnel's loop thread and return its result, or raise its exception.

        The thread that owns every socket and timer of the tunnel runs `fn`, so `fn` may use `self.engine`;
        called on that thread itself, it runs `fn` at once. `timeout` is in seconds (None: no limit).
        Raises TunnelClosedError when the tunnel is closed, TimeoutError when the loop did not run `fn`
        within `timeout` (it is then cancelled if it had not started).
        """
        self._check_open()
        return self._thread.call(fn, *args, timeout=timeout)

    def run_on_loop(self, coroutine: Coroutine[Any, Any, T], *, timeout: float | None = 10.0) -> T:
        """Run a coroutine on this tunnel's asyncio loop and wait for its result (seconds; None: no limit).

        For services whose setup or teardown awaits (a WebSocket relay's server). Raises what the coroutine
        raises, TunnelClosedError when the tunnel is closed, TimeoutError when it did not finish in time.
        """
        self._check_open()
        return self._thread.run(coroutine, timeout=timeout)

    @property
    def runtime_engine(self) -> Engine:
        """The tunnel's Engine (WireGuard device, IP stack, UDP socket, event and UDP hooks, `loop`).

        For services that run on the tunnel's loop: touch it only from that thread, inside `call_on_loop` or
        in a callback the loop runs (`engine.loop.add_reader`, `call_later`...), never from another thread.
        (`tunnel.engine(url)` is the SQLAlchemy engine through the tunnel, below.)
        """
        return self._engine

    # ---- every data tool through the tunnel (wgmagic/runtime/services/routing.py, http.py) ----------------
    def url(self, url_or_dsn: str, *, local: str = "auto") -> str:
        """`url_or_dsn` rewritten so that its host is a private forward of this tunnel (made once per target,
        reused, closed with the tunnel): a postgresql:// or SQLAlchemy URL of any dialect and driver, or libpq
        keywords. A Unix socket where the form's drivers take one (libpq keywords, +psycopg), else loopback TCP
        on an ephemeral port; `local="unix"|"tcp"` chooses. With sslmode=verify-ca/verify-full a libpq form keeps
        `host=<real name>` and connects to `hostaddr=127.0.0.1`. The name is resolved by the tunnel's DNS.

        The result holds the password given (for the driver; wgmagic never shows it). Raises DsnError (a
        ValueError) for text that is not a connection string or has no host, NameNotFoundError, NoRouteError.
        """
        from wgmagic.runtime.services.routing import route_url

        self._check_open()
        return route_url(self, url_or_dsn, local=local)

    def engine(self, url: str, **kwargs: Any) -> Any:
        """A sqlalchemy.Engine whose pooled connections all go through this tunnel, with pool_pre_ping=True
        (a connection broken by a tunnel flap or a server restart is replaced before use); kwargs go to
        sqlalchemy.create_engine. `pandas.read_sql(sql, engine)` and JupySQL's `%sql engine` take it."""
        from wgmagic.runtime.services.routing import create_engine

        self._check_open()
        return create_engine(self, url, **kwargs)

    def http_client(self, **kwargs: Any) -> Any:
        """An httpx.Client whose connections go through this tunnel: names resolved by the tunnel's DNS, TLS
        verified against the URL's real host (verify= a CA file or SSLContext for a private CA). kwargs are
        httpx.Client's (timeout, headers, verify, http2...); transport/proxy/mounts are refused (TypeError)."""
        for module in ("httpx", "httpcore", "anyio"):
            import_optional(module, "tools", "tunnel.http_client()")
        from wgmagic.runtime.services.http import http_client

        self._check_open()
        return http_client(self, **kwargs)

    def async_http_client(self, **kwargs: Any) -> Any:
        """The httpx.AsyncClient counterpart of http_client (asyncio; connects in a worker thread)."""
        for module in ("httpx", "httpcore", "anyio"):
            import_optional(module, "tools", "tunnel.async_http_client()")
        from wgmagic.runtime.services.http import async_http_client

        self._check_open()
        return async_http_client(self, **kwargs)


def connect(config: str | os.PathLike[str] | WireGuardConfig, *, name: str | None = None,
            timeout: float = 10.0, timers: Timers | None = None, tcp: TcpConfig | None = None,
            endpoint_resolver: Callable[[str, int], list[tuple[str, int]]] | None = None,
            reresolve_interval: float = 120.0, via: str | None = None, via_ca: str | None = None,
            note: Callable[[str], None] | None = None) -> Tunnel:
    """Bring up a tunnel and return once the first handshake has completed.

    via: "udp", a ws:// or wss:// URL (the WireGuard datagrams travel as WebSocket messages to a `wgmagic
    relay`), or "auto" / "auto URL" (UDP first; no handshake answer within 3 s and a URL known: the
    WebSocket, and `note` says so). Unset: $WGMAGIC_VIA, else the config's `#@wgmagic Via = ...`, else UDP.
    via_ca: a CA file for wss:// (default $WGMAGIC_VIA_CA, else the system trust store).
    tcp: the TCP knobs of the tunnel's connections (default `wgmagic.netstack.tcp.config.TUNNEL_CONFIG`: a 30 s
    user timeout and 15/5/3 keep-alives; `tunnel_config(user_timeout=...)` builds others), so a peer that dies
    fails calls with ETIMEDOUT in bounded time.
    Raises ConfigError, EndpointUnresolvableError, HandshakeTimeoutError, or TransportError (the
    WebSocket, its TLS or an HTTP proxy refused) with what was tried.
    """
    from wgmagic.runtime.websocket import AUTO_UDP_WAIT
    from wgmagic.via import choose_via, mask_url

    parsed = load_config(config)
    _check_peer_keys(parsed)
    config_via = next((p.via for p in parsed.peers if getattr(p, "via", None)), None)
    choice = choose_via(via, config_via, ca_file=via_ca)
    if choice.mode == "websocket" and len(parsed.peers) != 1:
        from wgmagic.errors import ConfigError

        raise ConfigError(f"a WebSocket carries the datagrams of one peer; this config has {len(parsed.peers)}",
                          source=parsed.source)
    tunnel = Tunnel(parsed, name=name, timers=timers, tcp=tcp, endpoint_resolver=endpoint_resolver,
                    reresolve_interval=reresolve_interval, via=choice if choice.mode == "websocket" else None)
    try:
        if choice.mode == "auto" and choice.url:
            try:
                rtt = tunnel.wait_handshake(timeout=min(AUTO_UDP_WAIT, timeout))
            except HandshakeTimeoutError:
                message = (f"no answer over UDP within {min(AUTO_UDP_WAIT, timeout):g} s (UDP may be blocked on "
                           f"this network): switching to the WebSocket {mask_url(choice.url)}")
                logger.warning("tunnel %r: %s", tunnel.name, message)
                if note is not None:
                    note(message)
                tunnel.switch_to_websocket(choice)
                rtt = tunnel.wait_handshake(timeout=timeout)
        elif choice.mode == "auto":
            try:
                rtt = tunnel.wait_handshake(timeout=timeout)
            except HandshakeTimeoutError as exc:
                raise HandshakeTimeoutError(
                    f"{exc} (via auto: only UDP was tried, since no WebSocket URL was given: none after auto, "
                    "in $WGMAGIC_VIA, or in the config's `#@wgmagic Via = wss://...` under [Peer])") from None
        else:
            rtt = tunnel.wait_handshake(timeout=timeout)
    except BaseException as exc:
        logger.info("tunnel %r: no handshake: %s", tunnel.name, type(exc).__name__)
        tunnel.close()
        raise
    logger.info("tunnel %r is up (handshake %s)", tunnel.name,
                f"{rtt * 1000:.1f} ms" if isinstance(rtt, float) else "done")
    return tunnel


def _check_peer_keys(config: WireGuardConfig) -> None:
    """A WireGuardConfig built in code skips the parser's check: a peer key of small order (all zeros...) would
    fail deep in the handshake as "Error computing shared key" (RFC 7748 6.1; whitepaper 5.4.2)."""
    from wgmagic.config import is_small_order_point
    from wgmagic.errors import ConfigError

    for peer in config.peers:
        if is_small_order_point(peer.public_key):
            raise ConfigError("is not a usable Curve25519 key (a point of small order such as all zeros: every "
                              "key exchange with it gives zero, which WireGuard rejects); copy the peer's real "
                              "public key", source=config.source, key="PublicKey")


def open_tunnels() -> list[Tunnel]:
    with _registry_lock:
        return list(_open_tunnels.values())


@atexit.register
def _close_all() -> None:
    for tunnel in open_tunnels():
        tunnel.close()
