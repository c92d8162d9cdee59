"""Tunnel: the thread-safe API of one user-mode WireGuard tunnel living in this process."""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import errno
import hashlib
import ipaddress
import itertools
import os
import socket
import stat
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from wgmagic import platform
from wgmagic.config import WireGuardConfig, load_config
from wgmagic.errors import (
    EndpointUnresolvableError,
    HandshakeTimeoutError,
    MessageTooLongError,
    PeerNotRespondingError,
    TunnelClosedError,
    TunnelConflictError,
)
from wgmagic.runtime.engine import Engine
from wgmagic.runtime.loop import LoopThread
from wgmagic.wireguard.timers import Timers

if TYPE_CHECKING:
    from wgmagic.runtime.services.forward import Forward
    from wgmagic.runtime.services.socks import Socks5Server

T = TypeVar("T")
_names = itertools.count(1)
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
        raise EndpointUnresolvableError(
            f"the peer's Endpoint {host}:{port} does not resolve on this machine ({exc.strerror}); "
            "check the host name, or use an IP address") from None
    addresses: list[tuple[str, int]] = []
    for family, _type, _proto, _name, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        candidate = (str(sockaddr[0]).partition("%")[0] if family == socket.AF_INET6 else sockaddr[0], port)
        if candidate not in addresses:
            addresses.append(candidate)
    if not addresses:
        raise EndpointUnresolvableError(f"the peer's Endpoint {host}:{port} has no IPv4 or IPv6 address")
    return addresses


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

    def __init__(self, config: WireGuardConfig, *, name: str | None = None, timers: Timers | None = None) -> None:
        self.config = config
        self.name = name or f"wg{next(_names)}"
        self._closed = False
        self._key_locks: list[int] = []
        with _registry_lock:
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
        endpoints = {p.public_key: _resolve_endpoint(*p.endpoint) if p.endpoint else [] for p in config.peers}
        self._thread = LoopThread(self.name)
        self._engine = Engine(config, endpoints, loop=self._thread.loop, timers=timers)
        self._ident = os.getpid() & 0xFFFF
        self._seq = itertools.count(1)
        self._forwards: list[Forward] = []
        self._socks_servers: list[Socks5Server] = []
        self._thread.start()
        try:
            self._thread.call(self._engine.open)
        except BaseException:
            self._thread.stop()
            raise

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        peers = ", ".join(f"{p.endpoint[0]}:{p.endpoint[1]}" for p in self.config.peers if p.endpoint)
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
            message = self._thread.call(self._describe_no_handshake)
            raise HandshakeTimeoutError(f"{message} (gave up after {timeout:g} s)") from None

    def _describe_no_handshake(self) -> str:
        peer = next(iter(self._engine.peers.values()))
        return self._engine.describe_no_handshake(peer)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._thread.running:
            try:
                for listener in [*self._forwards, *self._socks_servers]:
                    self._thread.call(listener.close_on_loop, timeout=5.0)
                self._forwards.clear()
                self._socks_servers.clear()
                self._thread.call(self._engine.close, timeout=5.0)
            except (TimeoutError, TunnelClosedError):
                pass
        self._thread.stop()
        self._unregister()

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
            ours.send(b"\0", socket.MSG_DONTWAIT)

        def connected(conn: object) -> None:
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
            return ConnectionRefusedError(
                f"{host}:{port} refused the connection (reached through tunnel {self.name!r}): "
                "nothing listens on that port, or a firewall rejects it")
        if isinstance(error, TimeoutError):
            return self._connect_timeout(host, port, timeout)
        return error

    def forward(self, target: str, local: str | int | None = None) -> Forward:
        """Listen locally and relay each connection to `target` ("db.internal:5432") through the tunnel.

        local=None: a Unix socket in a fresh 0700 directory (see Forward.libpq_params()); local=PORT or
        "HOST:PORT" or "unix:/dir": TCP on that loopback address and port (0: any free port), or that directory.
        When TMPDIR is too long for a socket path (sun_path: 107 bytes), the default directory is made in
        $XDG_RUNTIME_DIR or /tmp, and failing those the forward listens on 127.0.0.1 with a warning; a named
        directory that is too long raises services.forward.SocketPathError. Each connection tries the target's
        routable addresses in turn (resolve_addresses, RFC 8305); NoRouteError when it has none.
        """
        from wgmagic.runtime.services.forward import Forward, ForwardSpec, parse_target

        self._check_open()
        host, port = parse_target(target)
        addresses = self.resolve_addresses(host)
        spec = ForwardSpec(host, port, addresses[0], "unix", remote_addresses=tuple(addresses))
        if isinstance(local, int):
            spec.local_kind, spec.bind_port = "tcp", local
        elif isinstance(local, str) and local.startswith("unix:"):
            spec.socket_dir = local[5:] or None
        elif isinstance(local, str):
            bind_host, sep, bind_port = local.rpartition(":")
            spec.local_kind = "tcp"
            spec.bind_host = (bind_host.strip("[]") if sep else "127.0.0.1") or "127.0.0.1"
            spec.bind_port = int(bind_port or 0)
        forward = self._thread.call(Forward, self._engine, spec)
        self._forwards.append(forward)
        if spec.fallback_reason:
            warnings.warn(f"{spec.fallback_reason}; this forward listens on TCP {spec.bind_host} instead, where "
                          "other local users can connect to it too", stacklevel=2)
        return forward

    def close_forward(self, forward: Forward) -> None:
        if forward in self._forwards:
            self._forwards.remove(forward)
        if self._thread.running:
            self._thread.call(forward.close_on_loop)

    @property
    def forwards(self) -> list[Forward]:
        return list(self._forwards)

    def socks(self, port: int = 1080, host: str = "127.0.0.1",
              credentials: tuple[str, str] | None = None) -> Socks5Server:
        """A SOCKS5 proxy on loopback whose CONNECTs (names resolved through the tunnel) use this tunnel."""
        from wgmagic.runtime.services.socks import Socks5Server

        self._check_open()
        server = self._thread.call(Socks5Server, self._engine, self._resolve_routable_async, host, port, credentials)
        self._socks_servers.append(server)
        return server

    def _connect_timeout(self, host: str, port: int, timeout: float) -> TimeoutError:
        since = time.monotonic() - timeout
        if self._thread.call(self._engine.peer_silent_since, since):
            return PeerNotRespondingError(
                f"connecting to {host}:{port} timed out after {timeout:g} s: the WireGuard peer is not "
                f"answering (no handshake or data from it recently); it may be down or unreachable")
        return TimeoutError(
            f"connecting to {host}:{port} timed out after {timeout:g} s: the tunnel is up but nothing answered; "
            "the host may be down, or a firewall drops the connection")

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
        the AAAA answers. What a connection tries, and in which order, is resolve_addresses'."""
        self._check_open()
        return self._thread.run(self._engine.resolve_async(name), timeout=timeout * 4 + 5)

    # ---- introspection ------------------------------------------------------------------------------------
    def stats(self) -> dict[str, object]:
        self._check_open()
        return self._thread.call(self._snapshot)

    def peer_report(self) -> list[dict[str, object]]:
        """Per peer: key fingerprint (public), endpoint, handshake age, seconds to the next rekey, traffic."""
        self._check_open()
        return self._thread.call(self._peer_report)

    def _peer_report(self) -> list[dict[str, object]]:
        now = time.monotonic()
        device = self._engine.device
        report = []
        for key in self._engine.peers:
            peer = device.peer(key)
            stats = peer.stats()
            last = stats["last_handshake"]
            current = getattr(peer, "current", None)
            rekey = None
            if current is not None and getattr(current, "initiator", False):
                rekey = max(0.0, device.timers.rekey_after_time - (now - current.created))
            endpoint = stats["endpoint"]
            report.append({
                "fingerprint": peer.public_key_b64[:8] + "...",
                "endpoint": f"{endpoint[0]}:{endpoint[1]}" if endpoint else "(none)",
                "handshake_age": None if last is None else now - last,
                "next_rekey_in": rekey,
                "rx_bytes": stats["rx_bytes"], "tx_bytes": stats["tx_bytes"],
                "rx_packets": stats["rx_packets"], "tx_packets": stats["tx_packets"],
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
            "tcp_connections": [{"remote": f"{c.remote[0]}:{c.remote[1]}", "state": c.state, **c.stats()}
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
        from wgmagic.runtime.services.http import http_client

        self._check_open()
        return http_client(self, **kwargs)

    def async_http_client(self, **kwargs: Any) -> Any:
        """The httpx.AsyncClient counterpart of http_client (asyncio; connects in a worker thread)."""
        from wgmagic.runtime.services.http import async_http_client

        self._check_open()
        return async_http_client(self, **kwargs)


def connect(config: str | os.PathLike[str] | WireGuardConfig, *, name: str | None = None,
            timeout: float = 10.0, timers: Timers | None = None) -> Tunnel:
    """Bring up a tunnel and return once the first handshake has completed.

    Raises ConfigError, EndpointUnresolvableError or HandshakeTimeoutError with what was tried.
    """
    parsed = load_config(config)
    tunnel = Tunnel(parsed, name=name, timers=timers)
    try:
        tunnel.wait_handshake(timeout=timeout)
    except BaseException:
        tunnel.close()
        raise
    return tunnel


def open_tunnels() -> list[Tunnel]:
    with _registry_lock:
        return list(_open_tunnels.values())


@atexit.register
def _close_all() -> None:
    for tunnel in open_tunnels():
        tunnel.close()
