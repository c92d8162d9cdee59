"""The handle on a tunnel a host process serves (runtime/host.py), for a process that shares a key.

Owns: `HostedTunnel`, used as a `Tunnel` is for what a notebook needs: `url`, `forward` / `close_forward` /
`forwards` (libpq parameters included), `open_connection` (a real socket, passed over the host's Unix socket),
`resolve_addresses`, `stats`, `peer_report`, `history`, `wait_handshake`, `engine`, `close` and `with`;
starting the host when none runs; `NotSharedError` (the key is held by another process's own tunnel). Never:
relaying bytes (the host's thread does it), or a key in a message (the config goes to the host on its stdin).
Which tunnel `wgmagic.connect()` returns is runtime/share.py's choice.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import TYPE_CHECKING, Any, cast

from wgmagic import errors
from wgmagic.config import WireGuardConfig, load_config
from wgmagic.errors import TunnelClosedError, TunnelConflictError, WgMagicError
from wgmagic.runtime import host, keylock, registry

if TYPE_CHECKING:
    import sqlalchemy

    from wgmagic.runtime.report import PeerRow, TunnelStats
    from wgmagic.runtime.routes import IPAddress
    from wgmagic.via import Via

SHARE_ENV = "WGMAGIC_SHARE"
START_MARGIN = 30.0  # seconds a host may take to start (a loaded machine), beyond its handshake's timeout
REQUEST_TIMEOUT = 180.0  # seconds an answer may take (every request's own wait is bounded by host.MAX_WAIT)
logger = logging.getLogger(__name__)


class NotSharedError(TunnelConflictError):
    """Another process holds this key with a tunnel of its own (not shared through a host): `owner` is its pid
    (text), `peer` the peer's base64 public key. The message says what a Python caller does; the magic words
    its own (`not_shared_text(..., notebook=True)`)."""

    def __init__(self, owner: str, peer: str) -> None:
        super().__init__(not_shared_text(owner, peer, notebook=False))
        self.owner, self.peer = owner, peer


def not_shared_text(owner: str, peer: str, *, notebook: bool) -> str:
    """Why a second process cannot use a key held by another process's own tunnel, and how to share it."""
    fix = ("run %wg connect CONFIG --share in both notebooks (that one first: %wg disconnect, then "
           "%wg connect CONFIG --share; or set WGMAGIC_SHARE=1 before starting them)" if notebook else
           "connect with wgmagic.connect(config, share=True) in both processes (that one first closes its "
           "tunnel, tunnel.close(), and connects again with share=True; or set WGMAGIC_SHARE=1 for both)")
    return (f"process {owner} already has a tunnel up with this private key to peer {peer[:8]}..., inside its "
            "own process and not shared; a WireGuard peer answers only one of two such tunnels. To use one key "
            f"from several processes, {fix}. Or give this client its own key (a [Peer] entry of its own on "
            "the server)")


class HostedForward:
    """A forward the host made for this process: `local_address` (a Unix socket's path or (host, port)),
    `libpq_params()`, `spec` (remote_host, remote_port, local_kind, socket_dir), `id` (the host's), `closed`."""

    class Spec:
        """What the forward relays to, as the in-process Forward's spec names it."""

        def __init__(self, remote: list[Any], kind: str, socket_dir: str | None) -> None:
            self.remote_host, self.remote_port, self.local_kind = str(remote[0]), int(remote[1]), kind
            self.socket_dir = socket_dir

    def __init__(self, answer: dict[str, Any]) -> None:
        self.id = int(answer["id"])
        address = answer["address"]
        self.local_address: str | tuple[str, int] = address if isinstance(address, str) else \
            (str(address[0]), int(address[1]))
        self.address = self.local_address
        self._libpq = {str(k): str(v) for k, v in dict(answer["libpq"]).items()}
        directory = answer.get("socket_dir")
        self.spec = HostedForward.Spec(answer["remote"], str(answer["kind"]), None if directory is None else
                                       str(directory))
        self.closed = False  # True once closed, or lost with a host that went away

    def libpq_params(self) -> dict[str, str]:
        """libpq parameters reaching the remote through this forward (as Forward.libpq_params)."""
        return dict(self._libpq)

    def __repr__(self) -> str:
        from wgmagic.addresses import format_address

        return (f"<HostedForward {format_address(self.local_address)} -> "
                f"{format_address((self.spec.remote_host, self.spec.remote_port))}>")


class HostedTunnel:
    """A handle on the tunnel of this key's host process (runtime/host.py), used like a `Tunnel`.

    Thread-safe (one request at a time over the host's socket). `close()` lets go of this handle (the last
    holder in this process detaches; the host closes its tunnel once no process is attached). If the host
    went away, the next request attaches again (starting a host), so a cell after a host restart works;
    forwards made before are gone then. Attributes: `name`, `config`, `path` (the host's socket)."""

    hosted = True

    def __init__(self, sock: socket.socket, path: str, config: WireGuardConfig, hello: dict[str, Any]) -> None:
        self._sock, self.path, self.config = sock, path, config
        self.name = ""
        self._hello = hello
        self._io = threading.Lock()
        self._closed = False
        self._forwards: dict[int, HostedForward] = {}
        self._restart: dict[str, Any] = {}

    # ---- attaching -------------------------------------------------------------------------------------
    @classmethod
    def attach(cls, config: str | os.PathLike[str] | WireGuardConfig, *, name: str | None = None,
               timeout: float = 10.0, start: bool = True, via: str | Via | None = None,
               via_ca: str | None = None) -> HostedTunnel:
        """Attach to the host of `config`'s key, starting it when there is none (and `start`: its handshake
        waits up to `timeout` s, via/via_ca as wgmagic.connect's); the handle is registered in this process
        under `name` (default: as wgmagic.connect names tunnels).

        Raises WgMagicError where sharing cannot work (no flock, Unix sockets or descriptor passing, e.g.
        WGMAGIC_PORTABLE), TunnelClosedError when no host answers in time, NotSharedError when another process holds the
        key with its own tunnel, TunnelConflictError when the host runs another configuration of this key,
        and what the host's start raised (HandshakeTimeoutError, ...) with its own words."""
        from wgmagic import platform

        missing = [feature for feature in ("flock", "unix_sockets") if not platform.enabled(feature)]
        if missing or not hasattr(socket, "send_fds"):
            raise WgMagicError("sharing a tunnel between processes needs flock, Unix sockets and descriptor passing"
                               f" (off here: {', '.join(missing) or 'descriptor passing'}); connect without share")
        parsed = load_config(config)
        path = host.control_path(parsed)
        if path is None:
            raise TunnelClosedError("no private runtime directory (see keylock.runtime_dir): a shared tunnel "
                                    "needs one")
        if via is not None and not isinstance(via, str):  # a Via: its words (str() would mask a password)
            via_ca = via_ca or via.ca_file
            via = via.mode.value if via.url is None else \
                via.url if via.mode.value == "websocket" else f"{via.mode.value} {via.url}"
        restart = {"timeout": timeout, "via": via, "via_ca": via_ca, "source": parsed.source}
        sock, hello = _reach(parsed, path, restart, time.monotonic() + timeout + START_MARGIN, start)
        handle = cls(sock, path, parsed, hello)
        handle._restart = restart
        try:
            registry.register(handle, name)
        except BaseException:
            handle._hang_up()
            raise
        logger.info("tunnel %r: attached to the host process %s", handle.name, hello.get("pid"))
        return handle

    # ---- the protocol ----------------------------------------------------------------------------------
    def _ask(self, request: dict[str, Any], *, fds: bool = False) -> tuple[dict[str, Any], list[int]]:
        self._check_open()
        with self._io:
            answer, received = self._exchange_again(request)
        if "error" in answer:
            for fd in received:
                os.close(fd)
            raise _error(str(answer["error"]), str(answer.get("message", "")))
        if not fds:
            for fd in received:
                os.close(fd)
            received = []
        return answer, received

    def _exchange_again(self, request: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
        for attempt in (1, 2):
            try:
                return self._exchange(request)
            except (OSError, EOFError, ValueError) as exc:  # the host went away: once more with a (new) host
                self._sock.close()
                self._drop_forwards()
                if attempt == 2 or isinstance(exc, TimeoutError):
                    raise TunnelClosedError(f"tunnel {self.name!r}: the tunnel host went away") from None
                logger.info("tunnel %r: the host went away, attaching again", self.name)
                deadline = time.monotonic() + float(self._restart.get("timeout") or 10.0) + START_MARGIN
                self._sock, self._hello = _reach(self.config, self.path, self._restart, deadline, True)
            except BaseException:  # interrupted mid-answer: the stream is out of step, start afresh next time
                self._sock.close()
                self._drop_forwards()
                raise
        raise AssertionError("unreachable")

    def _exchange(self, request: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
        self._sock.sendall(json.dumps(request).encode() + b"\n")
        buffer, received = bytearray(), []
        try:
            while not buffer.endswith(b"\n"):
                data, got, _flags, _address = socket.recv_fds(self._sock, 65536, 4)
                received += got
                if not data:
                    raise EOFError
                buffer += data
                if len(buffer) > host.MAX_REPLY + 1:
                    raise EOFError
            answer = json.loads(buffer)
            if not isinstance(answer, dict):
                raise ValueError("not an answer")
        except BaseException:
            for fd in received:
                os.close(fd)
            raise
        return answer, received

    def _request(self, op: str, **fields: Any) -> dict[str, Any]:
        return self._ask({"op": op, **fields})[0]

    # ---- what a notebook uses ------------------------------------------------------------------------------
    def url(self, url_or_dsn: str, *, local: str = "auto") -> str:
        """As `Tunnel.url`, the forward in the host process (relayed by its thread, not this process's)."""
        return str(self._request("url", dsn=url_or_dsn, local=local)["url"])

    def forward(self, target: str, local: str | int | None = None, *, clients: str | None = None,
                protocol: Any = None, **_ignored: Any) -> HostedForward:
        """As `Tunnel.forward` for TCP targets, the listener in the host process. clients "process" is "user"
        there (the host cannot tell this process's sockets from another of this user's)."""
        answer = self._request("forward", target=target, local=local, clients=clients,
                               protocol=None if protocol is None else protocol.name)
        forward = HostedForward(answer)
        self._forwards[forward.id] = forward
        return forward

    def close_forward(self, forward: Any) -> None:
        """Close one forward this handle made."""
        if self._forwards.pop(getattr(forward, "id", -1), None) is not None and not self._closed:
            forward.closed = True
            with contextlib.suppress(WgMagicError):
                self._request("close_forward", id=forward.id)

    def _drop_forwards(self) -> None:
        for forward in self._forwards.values():
            forward.closed = True
        self._forwards.clear()

    @property
    def forwards(self) -> list[HostedForward]:
        """The forwards this handle made (a copy)."""
        return list(self._forwards.values())

    @property
    def socks_servers(self) -> list[Any]:
        """[]: a shared tunnel serves no SOCKS5 proxy to its processes yet."""
        return []

    @property
    def exposes(self) -> list[Any]:
        """[]: no reverse forwards through a shared tunnel yet."""
        return []

    def socks(self, *args: Any, **kwargs: Any) -> Any:
        """Not served through a shared tunnel yet: WgMagicError saying so."""
        raise _not_served("SOCKS5 proxies (socks)")

    def expose(self, *args: Any, **kwargs: Any) -> Any:
        """Not served through a shared tunnel yet: WgMagicError saying so."""
        raise _not_served("reverse forwards (expose)")

    def capture(self, *args: Any, **kwargs: Any) -> Any:
        """Not served through a shared tunnel yet: WgMagicError saying so."""
        raise _not_served("packet captures (capture)")

    def ping_iter(self, *args: Any, **kwargs: Any) -> Any:
        """Not served through a shared tunnel yet: WgMagicError saying so."""
        raise _not_served("ICMP echo (ping)")

    ping = ping_iter

    def open_connection(self, host_name: str, port: int, timeout: float | None = 15.0,
                        **_ignored: Any) -> socket.socket:
        """As `Tunnel.open_connection`: a connected socket, one end of a pair the host relays (`addresses` are
        not sent: the host resolves the name through its own tunnel)."""
        wait = min(60.0 if timeout is None else timeout, host.MAX_WAIT)
        _answer, fds = self._ask({"op": "open", "host": host_name, "port": port, "timeout": wait}, fds=True)
        for extra in fds[1:]:
            os.close(extra)
        if not fds:
            raise TunnelClosedError("the tunnel host sent no socket")
        sock = socket.socket(fileno=fds[0])
        sock.settimeout(timeout)
        return sock

    def resolve_addresses(self, host_name: str) -> list[IPAddress]:
        """As `Tunnel.resolve_addresses` (the host's DNS and routes)."""
        return [ipaddress.ip_address(a) for a in self._request("resolve", host=host_name)["addresses"]]

    def resolve_address(self, host_name: str) -> IPAddress:
        """The address a connection to `host_name` tries first."""
        return self.resolve_addresses(host_name)[0]

    def stats(self) -> TunnelStats:
        """As `Tunnel.stats` (the host's tunnel, through JSON: endpoints as lists)."""
        return cast("TunnelStats", self._request("stats"))

    def peer_report(self) -> list[PeerRow]:
        """As `Tunnel.peer_report`."""
        return cast("list[PeerRow]", list(self._request("peers")["peers"]))

    def history(self, window: float | None = None) -> list[dict[str, object]]:
        """As `Tunnel.history`."""
        return list(self._request("history", window=window)["history"])

    def wait_handshake(self, timeout: float = 10.0) -> float | None:
        """As `Tunnel.wait_handshake`, on the host's tunnel."""
        rtt = self._request("handshake", timeout=min(timeout, host.MAX_WAIT))["rtt"]
        return None if rtt is None else float(rtt)

    def status(self) -> dict[str, Any]:
        """{"name" (the host's), "pid", "holders" (attached processes), "config" (digest), "transport"}."""
        return self._request("status")

    @property
    def host_pid(self) -> int:
        """The host process's pid."""
        return int(self._hello.get("pid", 0))

    @property
    def transport_description(self) -> str:
        """The host's transport ('UDP' or its WebSocket), and that it is shared."""
        return f"{self._hello.get('transport', 'UDP')}, shared (host process {self.host_pid})"

    @property
    def via(self) -> None:
        """None: the transport is the host's (see transport_description)."""
        return None

    def engine(self, url: str, **kwargs: Any) -> sqlalchemy.engine.Engine:
        """As `Tunnel.engine`: a SQLAlchemy engine whose connections go through the host's tunnel."""
        from wgmagic.runtime import integrations

        return integrations.sqlalchemy_engine(self, url, **kwargs)  # type: ignore[arg-type]

    # ---- life ------------------------------------------------------------------------------------------
    @property
    def holders(self) -> int:
        """How many `connect()` calls of this process hold this handle (0 once closed)."""
        return registry.holders(self)

    @property
    def closed(self) -> bool:
        """True once this handle is closed."""
        return self._closed

    def close(self, *, force: bool = False) -> None:
        """Let go of this handle; the last holder (or force) detaches from the host. Idempotent."""
        if self._closed or not (registry.release(self) or force):
            return
        self._closed = True
        self._drop_forwards()
        self._hang_up()
        registry.unregister(self)
        logger.info("tunnel %r: detached from the host", self.name)

    def _hang_up(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()

    def _check_open(self) -> None:
        if self._closed:
            raise TunnelClosedError(f"tunnel {self.name!r} is closed: wgmagic.connect(config, share=True) (or "
                                    "%wg connect --share) attaches again")

    def __enter__(self) -> HostedTunnel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<HostedTunnel {self.name!r} {state} host pid {self.host_pid}>"


def _not_served(what: str) -> WgMagicError:
    return WgMagicError(f"a tunnel shared through its key's host process does not serve {what} yet; a tunnel "
                        "of this process alone does (connect without share, with the key free)")


def _reach(config: WireGuardConfig, path: str, options: dict[str, Any], deadline: float,
           start: bool) -> tuple[socket.socket, dict[str, Any]]:
    """A connected, greeted socket to the key's host, starting one when none answers (and `start`)."""
    started: subprocess.Popen[bytes] | None = None
    with tempfile.TemporaryFile() as stderr:  # the host's words when it cannot start
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(max(1.0, deadline - time.monotonic()))
                sock.connect(path)
                sock.sendall(b'{"op": "hello"}\n')
                with sock.makefile("rb") as reader:
                    line = reader.readline(host.MAX_REQUEST)
                hello = json.loads(line) if line else None
                if isinstance(hello, dict) and "pid" in hello:
                    sock.settimeout(REQUEST_TIMEOUT)
                    if hello.get("config") != host.config_digest(config):
                        sock.close()
                        raise TunnelConflictError(
                            f"process {hello['pid']} serves this key's shared tunnel with another configuration "
                            "(addresses, peers, AllowedIPs or DNS): connect with the same config to use it, or "
                            "close it in every process that uses it first")
                    return sock, hello
                sock.close()  # a host closing as we came: try again
            except (OSError, ValueError):
                sock.close()
            if started is not None and started.poll() is not None:
                if started.returncode == host.EXIT_NOT_SHARED:
                    owner = json.loads(_last_line(stderr) or "{}").get("owner", "?")
                    raise NotSharedError(str(owner), config.peers[0].public_key_b64)
                if started.returncode not in (0, host.EXIT_RACED):
                    failure = json.loads(_last_line(stderr) or "{}")
                    raise _error(str(failure.get("error", "WgMagicError")),
                                 f"the tunnel host did not start: {failure.get('message', '')}")
                started = None  # raced or closed at once: another host serves, or start again
            if not start and not keylock.host_running(config):
                raise TunnelClosedError("no process serves this key's tunnel")
            if start and started is None and not keylock.host_running(config):
                started = _spawn(config, options, stderr)
            if time.monotonic() > deadline:
                raise TunnelClosedError("no tunnel host answered in time")
            time.sleep(0.05)


def _last_line(stderr: Any) -> str:
    stderr.seek(0)
    lines = stderr.read()[-4000:].decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else ""


def _spawn(config: WireGuardConfig, options: dict[str, Any], stderr: Any) -> subprocess.Popen[bytes]:
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # wgmagic's
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    env.pop(SHARE_ENV, None)
    process = subprocess.Popen([sys.executable, "-m", "wgmagic.runtime.host"], stdin=subprocess.PIPE,
                               stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True, close_fds=True,
                               env=env)
    assert process.stdin is not None
    process.stdin.write(json.dumps(options).encode() + b"\n" + host.config_text(config).encode())
    process.stdin.close()
    # The host is our child until it ends (it outlives us if we go first): reaped when it does, never a zombie.
    threading.Thread(target=process.wait, name="wgmagic-host-reaper", daemon=True).start()
    return process


def _error(kind: str, message: str) -> Exception:
    """The host's error as the exception class it names (wgmagic's, or a built-in OSError/ValueError/...)."""
    import builtins

    cls = getattr(errors, kind, None) or getattr(keylock, kind, None)
    if not (isinstance(cls, type) and issubclass(cls, Exception)):
        builtin = getattr(builtins, kind, None)
        cls = builtin if isinstance(builtin, type) and issubclass(builtin, (OSError, ValueError, LookupError,
                                                                            RuntimeError)) else None
    if cls is None:
        cls = ValueError if kind.endswith("DsnError") else WgMagicError
    try:
        return cls(message)
    except TypeError:
        return WgMagicError(f"{kind}: {message}")
