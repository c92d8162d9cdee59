"""A tunnel served from a process of its own, shared by this user's processes (design in
docs/layers.md, "One key, several processes").

`HostedTunnel.attach(config)` finds the host of `config`'s key (a Unix socket `<lock name>.host` in the private
runtime directory, keylock.runtime_dir(), 0700) or starts one (`python -m wgmagic.runtime.host`, in a session
of its own so that it outlives the process that started it), and talks to it over that socket: one JSON object a
line each way. The host runs an ordinary `Tunnel` (it holds the key lock); `url(dsn)` asks it for a forward,
so a driver connects to the host's listener and its bytes are relayed by the host's thread and GIL, never by
the asking process's: a native driver that holds its own GIL while it waits on the socket (ConnectorX's pandas
path) cannot stall it. The host closes its tunnel (ending every connection toward the server, lifecycle.py)
once no process has been attached for GRACE seconds.

Private to the user: the socket's directory is 0700 and ours, and the host drops a connection whose peer
(SO_PEERCRED) is another user. Requests: {"op": "url", "dsn": text, "local": "auto"|"tcp"|"unix"} ->
{"url": text}; {"op": "status"} -> {"name", "holders", "pid"}; an error -> {"error": type name, "message"}.
A request is at most MAX_REQUEST bytes; anything else is answered with an error, never raised in the host.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import socket
import struct
import subprocess
import sys
import tempfile
import time
from typing import TYPE_CHECKING, Any

from wgmagic.config import WireGuardConfig, load_config
from wgmagic.errors import TunnelClosedError, WgMagicError

if TYPE_CHECKING:
    from wgmagic.runtime.tunnel import Tunnel

GRACE = 2.0  # seconds without an attached process before the host closes its tunnel
START_TIMEOUT = 60.0
MAX_REQUEST = 64 * 1024


def control_path(config: WireGuardConfig) -> str | None:
    """The host's socket for `config`'s (key, first peer), or None where there is no private runtime dir."""
    from wgmagic.runtime.keylock import lock_name, private_dir
    from wgmagic.wireguard.crypto import public_key

    directory = private_dir()
    if directory is None or not config.peers:
        return None
    name = lock_name(public_key(config.interface.private_key), config.peers[0].public_key)
    return os.path.join(directory, name[: -len(".lock")] + ".host")


def _peer_uid(sock: socket.socket) -> int | None:
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None
    _pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i")))
    return int(uid)


class HostedTunnel:
    """A handle on the tunnel a host process serves; `close()` detaches (the host closes the tunnel when no
    process is attached any more)."""

    def __init__(self, sock: socket.socket, path: str) -> None:
        self._sock, self.path = sock, path
        self._reader = sock.makefile("rb")
        self.closed = False

    @classmethod
    def attach(cls, config: str | os.PathLike[str], *, timeout: float = START_TIMEOUT,
               start: bool = True) -> HostedTunnel:
        """Attach to the host of `config`'s key (wg-quick text or a path), starting it when there is none (and
        `start`). Raises TunnelClosedError when no host answers, WgMagicError with the host's own words when it
        cannot start."""
        text = _config_text(config)
        parsed = load_config(text)
        path = control_path(parsed)
        if path is None:
            raise TunnelClosedError("no private runtime directory: a shared tunnel needs one")
        deadline = time.monotonic() + timeout
        with tempfile.TemporaryFile() as errors:  # the host's stderr: its words when it cannot start
            return cls._attach(text, path, errors, deadline, start)

    @classmethod
    def _attach(cls, text: str, path: str, errors: Any, deadline: float, start: bool) -> HostedTunnel:
        started: subprocess.Popen[bytes] | None = None
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(path)
                return cls(sock, path)
            except OSError:
                sock.close()
            if not start:
                raise TunnelClosedError("no process serves this key's tunnel")
            if started is None or started.poll() is not None:
                if started is not None and started.returncode not in (0, None):
                    errors.seek(0)
                    message = errors.read().decode(errors="replace")
                    if "TunnelConflictError" not in message:  # another host won the race: attach to it
                        raise WgMagicError(f"the tunnel host did not start: {message.strip()[-500:]}")
                started = _spawn(text, errors)
            if time.monotonic() > deadline:
                raise TunnelClosedError("no tunnel host answered in time")
            time.sleep(0.05)

    def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        if self.closed:
            raise TunnelClosedError("this handle on the shared tunnel is closed")
        self._sock.sendall(json.dumps(request).encode() + b"\n")
        line = self._reader.readline(MAX_REQUEST)
        if not line:
            raise TunnelClosedError("the tunnel host went away")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise WgMagicError(f"{answer['error']}: {answer.get('message', '')}")
        return answer

    def url(self, url_or_dsn: str, *, local: str = "auto") -> str:
        """As `Tunnel.url`, with the forward in the host process."""
        return str(self._ask({"op": "url", "dsn": url_or_dsn, "local": local})["url"])

    def status(self) -> dict[str, Any]:
        """{"name", "holders", "pid"} of the host's tunnel."""
        return self._ask({"op": "status"})

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            with contextlib.suppress(OSError):
                self._reader.close()
                self._sock.close()

    def __enter__(self) -> HostedTunnel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _config_text(config: str | os.PathLike[str]) -> str:
    text = os.fspath(config)
    if "\n" not in text and os.path.exists(text):
        with open(text, encoding="utf-8") as fh:
            return fh.read()
    return text


def _spawn(config_text: str, errors: Any) -> subprocess.Popen[bytes]:
    process = subprocess.Popen([sys.executable, "-m", "wgmagic.runtime.host"], stdin=subprocess.PIPE,
                               stdout=subprocess.DEVNULL, stderr=errors, start_new_session=True, close_fds=True)
    assert process.stdin is not None
    process.stdin.write(config_text.encode())
    process.stdin.close()
    return process


# ---- the host process ------------------------------------------------------------------------------------
def serve(config_text: str) -> int:
    """Run the host for `config_text` until no process has been attached for GRACE seconds; 0 on a clean end."""
    from wgmagic.runtime.tunnel import connect

    config = load_config(config_text)
    path = control_path(config)
    if path is None:
        print("no private runtime directory", file=sys.stderr)
        return 2
    tunnel = connect(config)  # TunnelConflictError when another process holds the key
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # we hold the key lock: a socket there is a dead host's
    old_umask = os.umask(0o177)
    try:
        listener.bind(path)
    finally:
        os.umask(old_umask)
    listener.listen(16)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    buffers: dict[socket.socket, bytearray] = {}
    alone_since: float | None = time.monotonic()
    try:
        while True:
            if not buffers and alone_since is not None and time.monotonic() - alone_since > GRACE:
                return 0
            for key, _events in selector.select(timeout=0.2):
                if key.fileobj is listener:
                    client, _ = listener.accept()
                    if _peer_uid(client) not in (None, os.getuid()):
                        client.close()  # another local user: never served
                        continue
                    buffers[client] = bytearray()
                    selector.register(client, selectors.EVENT_READ)
                    alone_since = None
                    continue
                client = key.fileobj  # type: ignore[assignment]
                try:
                    data = client.recv(65536)
                except OSError:
                    data = b""
                if not data or len(buffers[client]) + len(data) > MAX_REQUEST:
                    selector.unregister(client)
                    client.close()
                    del buffers[client]
                    if not buffers:
                        alone_since = time.monotonic()
                    continue
                buffers[client] += data
                while b"\n" in buffers[client]:
                    line, _, rest = bytes(buffers[client]).partition(b"\n")
                    buffers[client] = bytearray(rest)
                    with contextlib.suppress(OSError):
                        client.sendall(json.dumps(_answer(tunnel, line)).encode() + b"\n")
    finally:
        selector.close()
        listener.close()
        with contextlib.suppress(OSError):
            os.unlink(path)
        tunnel.close(force=True)


def _answer(tunnel: Tunnel, line: bytes) -> dict[str, Any]:
    try:
        request = json.loads(line)
        if not isinstance(request, dict):
            raise ValueError("a request is a JSON object")
        if request.get("op") == "url":
            return {"url": tunnel.url(str(request["dsn"]), local=str(request.get("local", "auto")))}
        if request.get("op") == "status":
            return {"name": tunnel.name, "holders": tunnel.holders, "pid": os.getpid()}
        raise ValueError("unknown op")
    except Exception as exc:
        return {"error": type(exc).__name__, "message": str(exc)[:500]}


if __name__ == "__main__":
    sys.exit(serve(sys.stdin.read()))
