"""The local end of a service (forward, SOCKS5 proxy, UDP forward): a Unix socket (mode 0600) in a fresh 0700
directory or a named one, or a loopback TCP/UDP socket (with the platform's listener options), and its removal.

Private by default: a Unix socket in a directory only this user can enter. The path must fit sun_path (108
bytes on Linux, unix(7)); when TMPDIR is too long, the fresh directory is made in $XDG_RUNTIME_DIR or /tmp.
Sockets are returned non-blocking; everything here runs on the tunnel's loop thread.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Callable
from typing import Any

from wgmagic import platform

logger = logging.getLogger(__name__)

SUN_PATH_MAX = 107  # bytes of a Unix socket path, without the terminating NUL (Linux sun_path is 108)
ACCEPT_BATCH = 64  # connections taken per readiness callback, so that one busy listener cannot starve the loop


class SocketPathError(OSError):
    """No directory short enough for a Unix socket (the sun_path limit) could be made."""


def short_private_directory(socket_name: str) -> str | None:
    """A fresh 0700 directory in which `socket_name` fits sun_path: under tempfile's directory (TMPDIR),
    else $XDG_RUNTIME_DIR, else /tmp; None when none fits or can be made. Directories tried and not used are
    removed."""
    bases: list[str] = []
    for base in (tempfile.gettempdir(), os.environ.get("XDG_RUNTIME_DIR") or "", "/tmp"):
        if base and base not in bases:
            bases.append(base)
    for base in bases:
        # mkdtemp's name is prefix + 8 characters; check before making anything.
        if len(os.fsencode(os.path.join(base, "wgmagic-XXXXXXXX", socket_name))) > SUN_PATH_MAX:
            continue
        try:
            return tempfile.mkdtemp(prefix="wgmagic-", dir=base)  # created 0700
        except OSError:
            continue
    return None


def warn_if_exposed(host: str, what: str) -> None:
    """Binding beyond loopback opens the private network to this machine's neighbours: say so."""
    try:
        loopback = ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        # A log record, not warnings.warn: the user sees one plain line ("wgmagic: warning: ..."), not a
        # UserWarning with this file's name and line.
        logger.warning("%s listens on %s, not loopback: anyone who can reach this machine can use the tunnel "
                       "through it", what, host)


def listen_unix(name: str, directory: str | None, kind: int, *, backlog: int, alternative: str,
                make_directory: Callable[[str], str | None] | None = None) -> tuple[socket.socket, str, str, bool]:
    """A Unix socket `name` (mode 0600) in `directory`, or in a fresh 0700 one (make_directory, default
    short_private_directory) when None; kind SOCK_STREAM (listening with `backlog`) or SOCK_DGRAM.

    Returns (socket, path, directory, owns_directory): only a directory made here is ours to remove. Raises
    SocketPathError when no directory fits sun_path or the path is too long (the message ends with
    `alternative`, what the user can do instead), OSError when bind fails; nothing is left behind then.
    """
    owns = False
    if directory is None:
        directory = (make_directory or short_private_directory)(name)
        if directory is None:
            raise SocketPathError(
                f"no directory short enough for a Unix socket: TMPDIR ({tempfile.gettempdir()}) is "
                f"{len(os.fsencode(tempfile.gettempdir()))} bytes long, and a socket path may have at most "
                f"{SUN_PATH_MAX} (sun_path); $XDG_RUNTIME_DIR and /tmp were not usable either")
        owns = True
    path = os.path.join(directory, name)
    if len(os.fsencode(path)) > SUN_PATH_MAX:
        if owns:
            shutil.rmtree(directory, ignore_errors=True)
        raise SocketPathError(f"the Unix socket path {path} is {len(os.fsencode(path))} bytes long, more than "
                              f"the {SUN_PATH_MAX} a socket path may have (sun_path): {alternative}")
    sock = socket.socket(socket.AF_UNIX, kind)
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        try:
            sock.bind(path)
        except OSError as exc:
            raise bind_error(exc, f"the Unix socket {path}", "") from None
        os.chmod(path, 0o600)
        if kind == socket.SOCK_STREAM:
            sock.listen(backlog)
    except BaseException:
        sock.close()
        if owns:
            shutil.rmtree(directory, ignore_errors=True)
        raise
    sock.setblocking(False)
    return sock, path, directory, owns


def listen_inet(host: str, port: int, kind: int, *, backlog: int, what: str) -> tuple[socket.socket, Any]:
    """A TCP (kind SOCK_STREAM, listening with `backlog`, platform.prepare_listener's options) or UDP socket
    bound to (host, port), IPv6 when host has a colon; port 0: the kernel chooses. Warns when host is not
    loopback (`what` names the service). Returns (socket, (address, port)); OSError when bind fails."""
    warn_if_exposed(host, what)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, kind)
    try:
        if kind == socket.SOCK_STREAM:
            platform.prepare_listener(sock)
        sock.bind((host, port))
        if kind == socket.SOCK_STREAM:
            sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise bind_error(exc, f"[{host}]:{port}" if ":" in host else f"{host}:{port}", what) from None
    except BaseException:
        sock.close()
        raise
    sock.setblocking(False)
    return sock, sock.getsockname()[:2]


_BIND_HINTS = {
    errno.EADDRINUSE: "another program, or another listener of this process, has it; choose another port, or 0 "
                      "for any free one",
    errno.EACCES: "ports below 1024 need privileges; choose one of 1024 or more",
    errno.EADDRNOTAVAIL: "that address is not one of this machine's",
}


def bind_error(exc: OSError, where: str, what: str) -> OSError:
    """An OSError (same errno) whose message is a sentence naming the listener's address and service, and what
    to do for the common errnos: "cannot listen on 127.0.0.1:5432 for a forward: Address already in use (...)"."""
    reason = os.strerror(exc.errno) if exc.errno else exc.strerror or str(exc)  # asyncio's own wording repeats
    hint = _BIND_HINTS.get(exc.errno or 0)
    service = f" for {what}" if what else ""
    return OSError(exc.errno, f"cannot listen on {where}{service}: {reason}" + (f" ({hint})" if hint else ""))


def close_listener(loop: Any, sock: socket.socket, address: Any, socket_dir: str | None, owns_dir: bool) -> None:
    """Stop watching `sock` on `loop`, close it, and remove a Unix socket: its whole directory when it is ours
    (owns_dir), else only the socket file `address`. socket_dir None: a TCP/UDP listener, nothing to remove."""
    with contextlib.suppress(Exception):
        loop.remove_reader(sock.fileno())
    sock.close()
    if socket_dir is None:
        return
    if owns_dir:
        shutil.rmtree(socket_dir, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            os.unlink(address)


def accept_pending(listener: socket.socket, on_client: Callable[[socket.socket, Any], object]) -> bool:
    """Accept what waits on a non-blocking listening socket (at most ACCEPT_BATCH connections; the loop calls
    again while more wait) and hand each to on_client(client socket, peer address).

    Returns False when accept failed with an error other than "nothing waiting" (EMFILE, ENFILE, ENOBUFS,
    ECONNABORTED...: the service counts it; the rest waits for the next call), True otherwise."""
    for _ in range(ACCEPT_BATCH):
        try:
            client, peer = listener.accept()
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            return False
        on_client(client, peer)
    return True


def receive(sock: socket.socket, size: int = 4096) -> bytes | None:
    """One non-blocking recv from a local client: None when nothing is there yet, b"" when the client is gone
    (end of stream or an error), else up to `size` bytes."""
    try:
        return sock.recv(size)
    except (BlockingIOError, InterruptedError):
        return None
    except OSError:
        return b""
