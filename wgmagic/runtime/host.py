"""The tunnel host: a process of its own that runs one key's tunnel for every process of this user (design in
docs/layers.md, "One key, several processes"); `python -m wgmagic.runtime.host`, started by
runtime/hosted.py's `HostedTunnel.attach` in a session of its own so that it outlives the process that
started it.

Start: stdin carries one JSON line {"timeout": s, "via": text | null, "via_ca": path | null, "source": text}
then the wg-quick text (the private key included: a pipe is private). The host takes `<lock name>.hostlock`
(keylock.host_lock) for its life, then the key's own lock by bringing up an ordinary `Tunnel`; it exits with
EXIT_RACED when another host holds the host lock (the starter attaches to that one), EXIT_NOT_SHARED when
another process's own tunnel holds the key, else 1 with one JSON line {"error", "message"} on stderr.

Then it listens on `<lock name>.host`, a Unix socket in the private runtime directory (keylock.private_dir():
0700, ours; the socket 0600), drops a connection whose peer (SO_PEERCRED) is another user, serves each attached
process on a thread of its own, and closes its tunnel (ending every connection toward the server,
lifecycle.py) once no process has been attached for GRACE seconds. Forwards a process made with "forward"
close when it detaches; url() forwards are the tunnel's (one per target) and close with it.

Protocol: one JSON object a line each way, one answer per request, in order. A request is at most MAX_REQUEST
bytes (a longer line closes the connection); an answer is at most MAX_REPLY bytes. Every failure is an answer
{"error": exception type name, "message": text}, never raised in the host.

    {"op": "hello"} / {"op": "status"} -> {"name", "pid", "holders", "config": digest, "transport"}
    {"op": "url", "dsn": text, "local": "auto"|"tcp"|"unix"} -> {"url": text}
    {"op": "forward", "target": "host:port", "local": null|port|"HOST:PORT"|"unix:DIR",
     "protocol": "postgresql"|"neutral"|null, "clients": "user"|"any"|null}
        -> {"id": int, "kind": "unix"|"tcp", "address": path | [host, port], "libpq": {...},
            "remote": [host, port], "socket_dir": path | null}
    {"op": "close_forward", "id": int} -> {}
    {"op": "open", "host": text, "port": int, "timeout": s} -> {"open": true}, with the socket's descriptor
        passed alongside (SCM_RIGHTS): one end of a socketpair the host's loop relays (Tunnel.open_connection)
    {"op": "resolve", "host": text} -> {"addresses": [text, ...]}       (Tunnel.resolve_addresses)
    {"op": "stats"} -> Tunnel.stats();  {"op": "peers"} -> {"peers": Tunnel.peer_report()}
    {"op": "history", "window": s | null} -> {"history": [...]}
    {"op": "handshake", "timeout": s} -> {"rtt": s | null}             (Tunnel.wait_handshake)

"process" clients (a %%wgsql forward for its own driver) become "user": the host cannot tell the attached
process's sockets from another process of the same user's.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import struct
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from wgmagic.config import WireGuardConfig, parse_config

if TYPE_CHECKING:
    from wgmagic.runtime.services.forward import Forward
    from wgmagic.runtime.tunnel import Tunnel

GRACE = 2.0  # seconds without an attached process before the host closes its tunnel
MAX_REQUEST = 64 * 1024
MAX_REPLY = 32 * 1024 * 1024
MAX_CLIENTS = 64  # attached processes at once; beyond, a connection is closed at once
MAX_FORWARDS = 256  # forwards one attached process may hold
MAX_WAIT = 120.0  # seconds any one request may ask the host to wait (open, handshake)
EXIT_RACED = 3  # another host holds the host lock: attach to it
EXIT_NOT_SHARED = 4  # another process's own (unshared) tunnel holds the key


def control_path(config: WireGuardConfig, suffix: str = ".host") -> str | None:
    """The host's socket for `config`'s (key, first peer), or None where there is no private runtime dir."""
    from wgmagic.runtime.keylock import lock_name, private_dir
    from wgmagic.wireguard.crypto import public_key

    directory = private_dir()
    if directory is None or not config.peers:
        return None
    name = lock_name(public_key(config.interface.private_key), config.peers[0].public_key)
    return os.path.join(directory, name[: -len(".lock")] + suffix)


def config_text(config: WireGuardConfig) -> str:
    """`config` as wg-quick text (the keys included: for the host's stdin only, never shown)."""
    import base64

    def b64(key: bytes) -> str:
        return base64.b64encode(key).decode()

    i = config.interface
    lines = ["[Interface]", f"PrivateKey = {b64(i.private_key)}"]
    if i.addresses:
        lines.append("Address = " + ", ".join(str(a) for a in i.addresses))
    if i.dns_servers or i.dns_search:
        lines.append("DNS = " + ", ".join([str(a) for a in i.dns_servers] + list(i.dns_search)))
    if i.mtu is not None:
        lines.append(f"MTU = {i.mtu}")
    if i.listen_port is not None:
        lines.append(f"ListenPort = {i.listen_port}")
    for peer in config.peers:
        lines += ["", "[Peer]", f"PublicKey = {b64(peer.public_key)}"]
        if peer.preshared_key:
            lines.append(f"PresharedKey = {b64(peer.preshared_key)}")
        if peer.endpoint is not None:
            host, port = peer.endpoint
            lines.append(f"Endpoint = {f'[{host}]' if ':' in host else host}:{port}")
        if peer.allowed_ips:
            lines.append("AllowedIPs = " + ", ".join(str(n) for n in peer.allowed_ips))
        if peer.persistent_keepalive is not None:
            lines.append(f"PersistentKeepalive = {peer.persistent_keepalive}")
        if peer.via:
            lines.append(f"#@wgmagic Via = {peer.via}")
    return "\n".join(lines) + "\n"


def config_digest(config: WireGuardConfig) -> str:
    """A digest of everything in `config` but the private key (the lock name already stands for the key), so
    two processes can tell whether they asked for the same tunnel."""
    text = config_text(config).split("\n", 2)[2]  # without [Interface] and PrivateKey
    return hashlib.blake2s(text.encode(), digest_size=12).hexdigest()


def peer_uid(sock: socket.socket) -> int | None:
    """The uid of the process at the other end of a Unix socket (SO_PEERCRED), None where it cannot be asked."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None
    _pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i")))
    return int(uid)


# ---- the host process ------------------------------------------------------------------------------------
class Host:
    """The serving side: the tunnel, the listener, the attached processes (one thread each)."""

    def __init__(self, tunnel: Tunnel, config: WireGuardConfig, listener: socket.socket) -> None:
        self.tunnel, self.listener = tunnel, listener
        self.digest = config_digest(config)
        self._lock = threading.Lock()
        self._clients = 0
        self._alone_since: float | None = time.monotonic()
        self._ids = iter(range(1, 2**62))

    def run(self) -> None:
        """Accept attached processes until nobody has been attached for GRACE seconds."""
        self.listener.settimeout(0.2)
        while True:
            with self._lock:
                if self._clients == 0 and self._alone_since is not None and \
                        time.monotonic() - self._alone_since > GRACE:
                    return
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            if peer_uid(client) not in (None, os.getuid()):
                client.close()  # another local user: never served
                continue
            with self._lock:
                if self._clients >= MAX_CLIENTS:
                    client.close()
                    continue
                self._clients += 1
                self._alone_since = None
            threading.Thread(target=self._serve, args=(client,), name="wgmagic-host-client", daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        forwards: dict[int, Forward] = {}
        try:
            client.settimeout(None)
            buffer = b""
            while True:
                while b"\n" not in buffer:
                    data = client.recv(65536)
                    if not data or len(buffer) + len(data) > MAX_REQUEST:
                        return
                    buffer += data
                line, _, buffer = buffer.partition(b"\n")
                answer, fds = self.answer(line, forwards)
                try:
                    payload = json.dumps(answer, default=str).encode() + b"\n"
                    if len(payload) > MAX_REPLY:
                        payload = json.dumps({"error": "ValueError", "message": "the answer is too long"}).encode()
                        payload += b"\n"
                        fds = []
                    if fds:
                        socket.send_fds(client, [payload], fds)
                    else:
                        client.sendall(payload)
                finally:
                    for fd in fds:
                        os.close(fd)
        except OSError:
            return
        finally:
            client.close()
            for forward in forwards.values():
                with contextlib.suppress(Exception):
                    self.tunnel.close_forward(forward)
            with self._lock:
                self._clients -= 1
                if self._clients == 0:
                    self._alone_since = time.monotonic()

    def answer(self, line: bytes, forwards: dict[int, Forward]) -> tuple[dict[str, Any], list[int]]:
        """One request's answer (and descriptors to pass with it); every failure is an error answer."""
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("a request is a JSON object")
            op = request.get("op")
            if op == "open":
                sock = self.tunnel.open_connection(_text(request, "host"), _int(request, "port", 1, 65535),
                                                   timeout=_seconds(request, "timeout", 15.0))
                fd = os.dup(sock.fileno())
                sock.close()
                return {"open": True}, [fd]
            return self._plain(op, request, forwards), []
        except Exception as exc:
            return {"error": type(exc).__name__, "message": str(exc)[:2000]}, []

    def _plain(self, op: object, request: dict[str, Any], forwards: dict[int, Forward]) -> dict[str, Any]:
        tunnel = self.tunnel
        if op in ("hello", "status"):
            with self._lock:
                holders = self._clients
            return {"name": tunnel.name, "pid": os.getpid(), "holders": holders, "config": self.digest,
                    "transport": tunnel.transport_description}
        if op == "url":
            local = request.get("local", "auto")
            if local not in ("auto", "tcp", "unix"):
                raise ValueError("local is auto, tcp or unix")
            return {"url": tunnel.url(_text(request, "dsn"), local=local)}
        if op == "forward":
            return self._forward(request, forwards)
        if op == "close_forward":
            forward = forwards.pop(_int(request, "id", 0, 2**62), None)
            if forward is not None:
                tunnel.close_forward(forward)
            return {}
        if op == "resolve":
            return {"addresses": [str(a) for a in tunnel.resolve_addresses(_text(request, "host"))]}
        if op == "stats":
            return dict(tunnel.stats())
        if op == "peers":
            return {"peers": tunnel.peer_report()}
        if op == "history":
            window = request.get("window")
            return {"history": tunnel.history(None if window is None else _seconds(request, "window", 0.0))}
        if op == "handshake":
            return {"rtt": tunnel.wait_handshake(timeout=_seconds(request, "timeout", 10.0))}
        raise ValueError("unknown op")

    def _forward(self, request: dict[str, Any], forwards: dict[int, Forward]) -> dict[str, Any]:
        from wgmagic.proto.forwarding import NEUTRAL
        from wgmagic.proto.postgres import POSTGRES
        from wgmagic.runtime.services.forward import Forward

        if len(forwards) >= MAX_FORWARDS:
            raise ValueError(f"at most {MAX_FORWARDS} forwards per process")
        target = _text(request, "target")
        if target.startswith("udp:"):
            raise ValueError("a shared tunnel serves TCP forwards only")
        local = request.get("local")
        if (local is not None and not isinstance(local, (int, str))) or isinstance(local, bool):
            raise ValueError("local is null, a port or text")
        protocols = {None: None, "postgresql": POSTGRES, "neutral": NEUTRAL}
        clients = request.get("clients")
        if request.get("protocol") not in protocols or clients not in (None, "user", "any", "process"):
            raise ValueError("unknown protocol or clients")
        forward = self.tunnel.forward(target, local, clients="user" if clients == "process" else clients,
                                      protocol=protocols[request.get("protocol")])
        assert isinstance(forward, Forward)
        ident = next(self._ids)
        forwards[ident] = forward
        address = forward.local_address
        return {"id": ident, "kind": forward.spec.local_kind, "libpq": forward.libpq_params(),
                "socket_dir": forward.spec.socket_dir if forward.spec.local_kind == "unix" else None,
                "address": address if isinstance(address, str) else list(address),
                "remote": [forward.spec.remote_host, forward.spec.remote_port]}


def _text(request: dict[str, Any], key: str) -> str:
    value = request.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{key} must be text")
    return value


def _int(request: dict[str, Any], key: str, low: int, high: int) -> int:
    value = request.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(f"{key} must be an integer from {low} to {high}")
    return value


def _seconds(request: dict[str, Any], key: str, default: float) -> float:
    value = request.get(key, default)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= MAX_WAIT:
        raise ValueError(f"{key} must be 0 to {MAX_WAIT:g} seconds")
    return float(value)


def serve(stdin: Any) -> int:
    """Run the host (see the module docstring) from its start-up input; the exit status."""
    from wgmagic.runtime.keylock import KeyInUseError, host_lock
    from wgmagic.runtime.tunnel import connect

    try:
        options = json.loads(stdin.readline())
        config = parse_config(stdin.read(), source=str(options.get("source") or "<shared>"))
    except Exception as exc:
        return _failed(exc)
    path = control_path(config)
    lock = host_lock(config)
    if lock is None:
        return EXIT_RACED
    if path is None:
        lock.release()
        return _failed(OSError("no private runtime directory: a shared tunnel needs one"))
    try:
        tunnel = connect(config, timeout=float(options.get("timeout") or 10.0), via=options.get("via"),
                         via_ca=options.get("via_ca"))
    except KeyInUseError as exc:
        lock.release()
        print(json.dumps({"error": "KeyInUseError", "owner": exc.owner}), file=sys.stderr, flush=True)
        return EXIT_NOT_SHARED
    except Exception as exc:
        lock.release()
        return _failed(exc)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # we hold the host lock: a socket there is a dead host's
        old_umask = os.umask(0o177)
        try:
            listener.bind(path)
        finally:
            os.umask(old_umask)
        listener.listen(16)
        with open(os.devnull, "wb") as devnull:  # the starter stopped reading our stderr
            os.dup2(devnull.fileno(), 2)
        Host(tunnel, config, listener).run()
        return 0
    finally:
        listener.close()
        with contextlib.suppress(OSError):
            os.unlink(path)
        tunnel.close(force=True)
        lock.release()


def _failed(exc: BaseException) -> int:
    print(json.dumps({"error": type(exc).__name__, "message": str(exc)[:2000]}), file=sys.stderr, flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(serve(sys.stdin))
