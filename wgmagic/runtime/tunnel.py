"""Tunnel: the thread-safe API of one user-mode WireGuard tunnel living in this process, and `connect()`.

Owns: a tunnel's life (start, handshake, transport switch, close and its holders), and the public methods, each
a thin call into the module that does the job: registry.py (open tunnels, names, holders) and keylock.py (the
key across processes); endpoint_lookup.py (the peer's Endpoint); routes.py (DNS and routable addresses);
connections.py (TCP sockets, ICMP echo); tunnel_services.py (forwards, SOCKS5, exposes, captures);
report.py (stats, peer rows); integrations.py (URLs, SQLAlchemy, httpx); fallback.py (which transport
`connect()` tries). Never: touching the engine from a caller's thread (every engine call goes through the loop
thread), or holding a lock while waiting on the network.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from wgmagic import platform
from wgmagic.addresses import format_address
from wgmagic.config import WireGuardConfig, check_peer_keys, load_config
from wgmagic.errors import HandshakeTimeoutError, TunnelClosedError
from wgmagic.netstack.tcp.config import TcpConfig
from wgmagic.runtime import connections, endpoint_lookup, fallback, integrations, lifecycle, registry, report, routes
from wgmagic.runtime.connections import PingReply
from wgmagic.runtime.endpoints import EndpointFollower
from wgmagic.runtime.engine import Engine
from wgmagic.runtime.keylock import KeyLock
from wgmagic.runtime.loop import LoopThread
from wgmagic.runtime.registry import default_name, find_twin, open_tunnels
from wgmagic.runtime.tunnel_services import TunnelServices
from wgmagic.via import Via, ViaMode
from wgmagic.wireguard.timers import Timers

if TYPE_CHECKING:
    import httpx
    import sqlalchemy

    from wgmagic.proto.forwarding import ForwardProtocol
    from wgmagic.runtime.routes import IPAddress
    from wgmagic.runtime.services.capture import Capture
    from wgmagic.runtime.services.expose import Exposed
    from wgmagic.runtime.services.forward import Forward
    from wgmagic.runtime.services.socks import Socks5Server
    from wgmagic.runtime.services.udp_forward import UdpForward

__all__ = ["PingReply", "Tunnel", "connect", "default_name", "find_twin", "open_tunnels"]

T = TypeVar("T")
logger = logging.getLogger(__name__)


class Tunnel:
    """One tunnel: its own loop thread, UDP socket (or WebSocket), WireGuard device and IP stack.

    Thread-safe: every method may be called from any thread but the tunnel's own loop thread. `connect()`
    builds one and waits for the first handshake; a second `connect()` for the same config in this process
    hands the same tunnel back, and `close()` closes it once every such holder has closed it.
    Attributes: `name`, `config` (the WireGuardConfig), `via` (the WebSocket's Via, None over UDP; read only).
    """

    def __init__(self, config: WireGuardConfig, *, name: str | None = None, timers: Timers | None = None,
                 endpoint_resolver: endpoint_lookup.EndpointResolver | None = None,
                 reresolve_interval: float = 120.0, via: Via | None = None, tcp: TcpConfig | None = None) -> None:
        """endpoint_resolver(host, port) -> [(address, port), ...]: how a peer's Endpoint name is resolved, at
        start and again every `reresolve_interval` seconds (default: the system's getaddrinfo); see
        runtime/endpoints.py. via: a Via of mode "websocket" to carry the datagrams over a WebSocket; None: UDP.
        Raises TunnelConflictError (the name is taken, or this key and peer are up here or in another
        process), EndpointUnresolvableError, OSError."""
        self.config, self.name, self._via = config, name or "", via
        self._tcp = tcp  # the TCP knobs of its connections (None: TUNNEL_CONFIG, see netstack/tcp/config.py)
        self._endpoint_resolver = endpoint_resolver or endpoint_lookup.resolve_endpoint
        self._reresolve_interval = reresolve_interval
        self._closed = False
        self._key_lock = KeyLock()
        registry.register(self, name)  # sets self.name
        try:
            self._key_lock = KeyLock.claim(config)
            self._start(config, timers)
        except BaseException:
            self._closed = True
            self._unregister()
            raise

    def _start(self, config: WireGuardConfig, timers: Timers | None) -> None:
        over_websocket = self.via is not None and self.via.mode is ViaMode.WEBSOCKET
        endpoints = endpoint_lookup.initial_endpoints(config, self._endpoint_resolver, over_websocket=over_websocket)
        self._thread = LoopThread(self.name)
        self._engine = Engine(config, dict(endpoints), loop=self._thread.loop, timers=timers, via=self.via,
                              tcp_config=self._tcp)
        self._ident = os.getpid() & 0xFFFF
        self._seq = itertools.count(1)
        self._services = TunnelServices(self, self._thread, self._engine)
        self._follower = EndpointFollower(self._engine, self._endpoint_resolver, interval=self._reresolve_interval)
        self._leftovers = lifecycle.LeftoverRecord.beside(self._key_lock)  # nothing left on the server
        self._thread.start()
        try:
            self._thread.call(self._engine.open)
            if self._leftovers is not None:
                self._thread.call(self._leftovers.start, self._engine)
            lifecycle.install_sigterm()
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
        """Start a handshake (if none is current) and wait up to `timeout` s for it; returns the handshake RTT
        in seconds (None when a session was already up). Raises HandshakeTimeoutError saying why."""
        self._check_open()

        async def wait() -> float | None:
            return await self._engine.wait_handshake()

        time.sleep(self._key_lock.initiation_wait(time.monotonic()))  # not into the peer's flood check
        try:
            return self._thread.run(wait(), timeout=timeout)
        except TimeoutError as exc:
            if isinstance(exc, HandshakeTimeoutError):
                raise
            raise self._thread.call(self._engine.no_handshake_error, next(iter(self._engine.peers.values())),
                                    timeout) from None

    def switch_to_websocket(self, via: Via) -> None:
        """Carry the datagrams over the WebSocket at via.url from now on (what --via auto does)."""
        self._check_open()
        self._thread.call(self._engine.carrier.carry, via)

    @property
    def via(self) -> Via | None:
        """The WebSocket's Via while the datagrams travel over one, None over UDP (follows `--via auto`)."""
        engine = getattr(self, "_engine", None)
        return engine.via if engine is not None else self._via

    @property
    def transport_description(self) -> str:
        """'UDP' or 'WebSocket wss://... (open)', for status lines (never a password)."""
        return self._engine.carrier.transport.describe()

    @property
    def holders(self) -> int:
        """How many `connect()` calls hold this tunnel now (0 once closed)."""
        return registry.holders(self)

    def close(self, *, force: bool = False) -> None:
        """Let go of this tunnel; it closes (forwards, proxies, captures, its thread and socket, the key lock)
        when no other `connect()` of this process holds it, or at once with `force=True`. Idempotent."""
        if self._closed or not (registry.release(self) or force):
            return
        self._closed = True
        if self._thread.running:
            try:
                self._thread.call(self._follower.close, timeout=5.0)
                self._key_lock.handshaken(self._thread.call(lifecycle.last_handshake, self._engine, timeout=5.0))
                lifecycle.end_connections(self._thread, self._engine)  # FIN (or RST) toward the server first
                if self._leftovers is not None:
                    self._thread.call(self._leftovers.stop, timeout=5.0)
                self._services.close_all(timeout=5.0)
                self._thread.call(self._engine.close, timeout=5.0)
            except (TimeoutError, TunnelClosedError):
                pass
        self._thread.stop()
        self._unregister()
        logger.info("tunnel %r closed", self.name)

    def _unregister(self) -> None:
        self._key_lock.release()
        registry.unregister(self)

    @property
    def closed(self) -> bool:
        """True once the tunnel has closed (its last holder closed it, or it failed to start)."""
        return self._closed

    def __enter__(self) -> Tunnel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed or not self._thread.running:
            raise TunnelClosedError(f"tunnel {self.name!r} is closed: wgmagic.connect(config) (or %wg connect) "
                                    "brings it up again")

    # ---- ICMP and TCP (connections.py) ------------------------------------------------------------------
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
        yield from connections.ping(self._thread, self._engine, address, self.config.mtu, count,
                                    ident=self._ident, seq=self._seq, interval=interval, timeout=timeout, size=size)

    def ping(self, host: str, count: int = 4, *, interval: float = 1.0, timeout: float = 2.0,
             size: int = 56) -> list[PingReply]:
        """`ping_iter` run to the end: one PingReply per request."""
        return list(self.ping_iter(host, count, interval=interval, timeout=timeout, size=size))

    def open_connection(self, host: str, port: int, timeout: float | None = 15.0, *,
                        addresses: list[IPAddress] | None = None) -> socket.socket:
        """A connected TCP socket to host:port through the tunnel, for drivers that take a socket.

        It is a real socket (one end of a socketpair whose other end the tunnel's loop relays), so `ssl`
        can wrap it, `select` can watch it and pg8000's `sock=` takes it. `timeout` bounds the connect and
        becomes the socket's timeout (None: connect waits up to 60 s and the socket blocks). `addresses`: as
        `forward`'s."""
        self._check_open()
        addresses = addresses or self.resolve_addresses(host)
        return connections.open_socket(self._thread, self._engine, self.name, host, addresses, port, timeout)

    async def open_connection_async(self, host: str, port: int, timeout: float = 15.0, *,
                                    limit: int = 2**16) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """asyncio streams to host:port through the tunnel, for the caller's own event loop."""
        self._check_open()
        addresses = await asyncio.to_thread(self.resolve_addresses, host)
        return await connections.open_streams(self._thread, self._engine, self.name, host, addresses, port, timeout,
                                              limit=limit)

    # ---- services: forwards, SOCKS5, reverse forwards, captures (tunnel_services.py) -----------------------
    def forward(self, target: str, local: str | int | None = None, *, idle_timeout: float | None = None,
                max_flows: int | None = None, clients: platform.ClientScope | None = None,
                protocol: ForwardProtocol | None = None,
                addresses: list[IPAddress] | None = None) -> Forward | UdpForward:
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
        protocol: what the forward knows of its clients' protocol (wgmagic.proto.forwarding.ForwardProtocol): the
        Unix socket's name and how a refused client is told why. None: wgmagic.proto.postgres.POSTGRES
        (".s.PGSQL.PORT", an ErrorResponse libpq shows) for ports 5432 and 6432, else the neutral NEUTRAL
        ("PORT.sock", closed without a word); tunnel.url() and %%wgsql choose by the URL's scheme.
        addresses: the TCP target's routable addresses when the caller has them (`resolve_addresses`), else
        the name is resolved here.
        """
        self._check_open()
        return self._services.forward(target, local, idle_timeout=idle_timeout, max_flows=max_flows,
                                      clients=clients, protocol=protocol, addresses=addresses)

    def close_forward(self, forward: Forward | UdpForward) -> None:
        """Close one forward (TCP or UDP: its listener, connections or flows, and private directory)."""
        self._services.close_forward(forward)

    @property
    def forwards(self) -> list[Forward | UdpForward]:
        """The open forwards, TCP and UDP (a copy)."""
        return self._services.forwards

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
        self._check_open()
        return self._services.socks(port, host, credentials, unix=unix, no_auth=no_auth)

    def close_socks(self, server: Socks5Server) -> None:
        """Close one SOCKS5 proxy (its connections, UDP associations and private directory)."""
        self._services.close_socks(server)

    @property
    def socks_servers(self) -> list[Socks5Server]:
        """The open SOCKS5 proxies (a copy)."""
        return self._services.socks_servers

    def expose(self, spec: str | int, target: str | None = None, *, allow: str | Iterable[str] | None = None,
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
        self._check_open()
        return self._services.expose(spec, target, allow=allow, connect_timeout=connect_timeout)

    @property
    def exposes(self) -> list[Exposed]:
        """The open reverse forwards (a copy)."""
        return self._services.exposes

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
        self._check_open()
        return self._services.capture(file, seconds=seconds, max_packets=max_packets, max_bytes=max_bytes,
                                      payload=payload, outer=outer)

    @property
    def captures(self) -> list[Capture]:
        """The captures started on this tunnel, the running one last (a copy)."""
        return self._services.captures

    # ---- names and routes (routes.py), introspection (report.py) ---------------------------------------------
    def resolve_address(self, host: str) -> IPAddress:
        """The address a connection to `host` tries first (see resolve_addresses)."""
        return self.resolve_addresses(host)[0]

    def resolve_addresses(self, host: str) -> list[IPAddress]:
        """The addresses of `host` (a literal, or a name resolved through the tunnel's DNS) that this tunnel can
        reach -- inside a peer's AllowedIPs, of a family the [Interface] has an Address of -- in the order
        connections try them: RFC 6724 section 6 destination order, families interleaved (RFC 8305 section 4).

        Raises NoRouteError ("no route to ...", with each address's reason) when none is usable, and the
        resolver's NameNotFoundError / DNSTimeoutError.
        """
        self._check_open()
        return routes.resolve_addresses(self._thread, self._engine, host)

    def resolve(self, name: str, timeout: float = 5.0) -> list[IPAddress]:
        """Resolve a name through the tunnel's DNS servers (never the host's resolver): the A answers, then
        the AAAA answers. What a connection tries, and in which order, is resolve_addresses'.

        timeout: seconds for the whole resolution (search domains, retries and a TCP retry included; each
        query waits up to 2 s, then the next server is asked, RFC 1035 4.2.1 / resolv.conf's rotation).
        Raises NameNotFoundError (NXDOMAIN or no A/AAAA records), DNSTimeoutError (no answer within
        `timeout`), TunnelClosedError."""
        self._check_open()
        return routes.resolve(self._thread, self._engine, name, timeout)

    def stats(self) -> report.TunnelStats:
        """A snapshot of the tunnel, taken on its loop thread: a new plain dict (JSON-serialisable but for the
        `endpoint` tuples), safe to keep; its keys, types and units are listed at wgmagic.runtime.report.snapshot.
        Raises TunnelClosedError once closed."""
        self._check_open()
        return self._thread.call(report.snapshot, self.name, self._engine)

    def peer_report(self) -> list[report.PeerRow]:
        """Per peer: key fingerprint (public), endpoint, handshake age, seconds to the next rekey, traffic, and
        "not_answering": a sentence when the peer stopped answering traffic (whitepaper 6 timers), else None."""
        self._check_open()
        return self._thread.call(report.peer_rows, self._engine)

    def history(self, window: float | None = None) -> list[dict[str, object]]:
        """Samples taken about 10 times a second (the last 10 minutes at most; `window` seconds if given):
        flat records, so `pandas.DataFrame(tunnel.history())` gives one column per measure."""
        self._check_open()
        return self._thread.call(self._engine.metrics.history, window)

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

    # ---- every data tool through the tunnel (integrations.py) ------------------------------------------------
    def url(self, url_or_dsn: str, *, local: str = "auto") -> str:
        """`url_or_dsn` rewritten so that its host is a private forward of this tunnel (made once per target,
        reused, closed with the tunnel): a postgresql:// or SQLAlchemy URL of any dialect and driver, or libpq
        keywords. A Unix socket where the form's drivers take one (libpq keywords, +psycopg), else loopback TCP
        on an ephemeral port; `local="unix"|"tcp"` chooses. With sslmode=verify-ca/verify-full a libpq form keeps
        `host=<real name>` and connects to `hostaddr=127.0.0.1`. The name is resolved by the tunnel's DNS.

        The result holds the password given (for the driver; wgmagic never shows it). Raises DsnError (a
        ValueError) for text that is not a connection string or has no host, NameNotFoundError, NoRouteError.
        """
        self._check_open()
        return integrations.routed_url(self, url_or_dsn, local=local)

    def engine(self, url: str, **kwargs: Any) -> sqlalchemy.engine.Engine:
        """A sqlalchemy.Engine whose pooled connections all go through this tunnel, with pool_pre_ping=True
        (a connection broken by a tunnel flap or a server restart is replaced before use); kwargs go to
        sqlalchemy.create_engine. `pandas.read_sql(sql, engine)` and JupySQL's `%sql engine` take it."""
        self._check_open()
        return integrations.sqlalchemy_engine(self, url, **kwargs)

    def http_client(self, **kwargs: Any) -> httpx.Client:
        """An httpx.Client whose connections go through this tunnel: names resolved by the tunnel's DNS, TLS
        verified against the URL's real host (verify= a CA file or SSLContext for a private CA). kwargs are
        httpx.Client's (timeout, headers, verify, http2...); transport/proxy/mounts are refused (TypeError)."""
        integrations.require_httpx("tunnel.http_client()")  # named before the tunnel's state
        self._check_open()
        return integrations.http_client(self, **kwargs)

    def async_http_client(self, **kwargs: Any) -> httpx.AsyncClient:
        """The httpx.AsyncClient counterpart of http_client (asyncio; connects in a worker thread)."""
        integrations.require_httpx("tunnel.async_http_client()")  # named before the tunnel's state
        self._check_open()
        return integrations.async_http_client(self, **kwargs)


def connect(config: str | os.PathLike[str] | WireGuardConfig, *, name: str | None = None,
            timeout: float = 10.0, timers: Timers | None = None, tcp: TcpConfig | None = None,
            endpoint_resolver: endpoint_lookup.EndpointResolver | None = None,
            reresolve_interval: float = 120.0, via: str | Via | None = None, via_ca: str | None = None,
            note: Callable[[str], None] | None = None) -> Tunnel:
    """Bring up a tunnel in this process once its first handshake completed (wgmagic.connect, share.py, adds share=).

    Connecting again is not an error: when this process already has a tunnel up with the same config (same
    key, peers, addresses), that tunnel is handed back (after its handshake, within `timeout`) with one more
    holder, whatever `name`, `via` or `tcp` say; each holder's `close()` (or `with` block) lets go of it, and the
    last one closes it. The same key and peer with another config is a TunnelConflictError.
    via: "udp", a ws:// or wss:// URL (to a `wgmagic relay`), "fly" or fly+wss:// (Fly.io's gateway framing), or
    "auto" / "auto URL" (UDP first, then the WebSocket, at connect and for the whole session; `note` hears each
    switch). Unset: $WGMAGIC_VIA, else the config's `#@wgmagic Via = ...`, else UDP. via_ca: a CA file for
    wss:// (default $WGMAGIC_VIA_CA, else the system trust store).
    tcp: the TCP knobs of the tunnel's connections (default `wgmagic.netstack.tcp.config.TUNNEL_CONFIG`: a 30 s
    user timeout and 15/5/3 keep-alives; `tunnel_config(user_timeout=...)` builds others), so a peer that dies
    fails calls with ETIMEDOUT in bounded time.
    Raises ConfigError, EndpointUnresolvableError, HandshakeTimeoutError, TunnelConflictError, or TransportError
    (the WebSocket, its TLS or an HTTP proxy refused) with what was tried.
    """
    parsed = load_config(config)
    check_peer_keys(parsed)
    running = registry.share(parsed)
    if running is not None:  # this key and peer are up here already: hand that tunnel back, one holder more
        return registry.handed_back(running, timeout)
    choice = fallback.choose(parsed, via, ca_file=via_ca)
    ladder = fallback.plan(choice, timeout)
    first = ladder.first
    tunnel = Tunnel(parsed, name=name, timers=timers, tcp=tcp, endpoint_resolver=endpoint_resolver,
                    reresolve_interval=reresolve_interval,
                    via=first.via if first.via.mode is ViaMode.WEBSOCKET else None)
    try:
        rtt = fallback.climb(tunnel, ladder, note)
        tunnel._thread.call(tunnel._engine.paths.follow, choice)  # auto: for the whole session (path_policy.py)
    except BaseException as exc:
        logger.info("tunnel %r: no handshake: %s", tunnel.name, type(exc).__name__)
        tunnel.close(force=True)
        raise
    logger.info("tunnel %r is up (handshake %s)", tunnel.name,
                f"{rtt * 1000:.1f} ms" if isinstance(rtt, float) else "done")
    return tunnel
