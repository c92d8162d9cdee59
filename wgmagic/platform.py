"""What this operating system offers beyond portable sockets, found by trying, with a fallback for each.

Every Linux-only (or POSIX-only) piece wgmagic uses is asked for here and nowhere else:

| feature        | what it gives                                              | fallback                           |
| -------------- | ---------------------------------------------------------- | ---------------------------------- |
| `udp_gso`      | UDP_SEGMENT (Linux 4.18+): a run of datagrams in one call  | one `sendto` per datagram          |
| `recverr`      | IP_RECVERR: ICMP "port unreachable" reaches a UDP socket   | silence: a wrong port looks |
|                |                                                            | like a wrong key                   |
| `force_buffers`| SO_RCVBUFFORCE/SO_SNDBUFFORCE past rmem_max (root only)    | SO_RCVBUF/SO_SNDBUF up to the limit |
| `flock`        | fcntl.flock: the one-key lock shared across processes      | a lock in this process only        |
| `unix_sockets` | AF_UNIX listeners in a 0700 directory for private forwards | loopback TCP, guarded (below)      |
| `outq`         | SIOCOUTQ: bytes a socket has not yet delivered             | 0: a reset may overtake the tail   |

Detection is by feature, not by platform name. `WGMAGIC_PORTABLE=1` (or a comma list of feature names,
`WGMAGIC_PORTABLE=udp_gso,flock`) turns features off, so the fallbacks can be tested on Linux.

The loopback guard (`loopback_client_allowed`): a forward that would have been a Unix socket in a 0700
directory listens on loopback TCP instead, where every local user can connect. It keeps the promise by asking,
for each accepted connection, which process owns the connecting socket (psutil: /proc on Linux, the kernel's
socket tables on macOS and Windows): a forward for this process's own driver (%%wgsql) accepts only sockets of
this process; a forward for the user's tools accepts sockets of processes that run as this user. When the
owner cannot be found out (macOS lists other processes' sockets only to root), the connection is refused. The
question blocks (it reads every socket of the system), so its caller asks it off the event loop: the forward
runs it in the loop's executor.
"""

from __future__ import annotations

import array
import logging
import os
import socket
from typing import Literal

FEATURES = ("udp_gso", "recverr", "force_buffers", "flock", "unix_sockets", "outq")
ClientScope = Literal["any", "user", "process"]
logger = logging.getLogger(__name__)

# Linux's numbers, where Python's socket module does not name them.
UDP_SEGMENT = 103
SO_RCVBUFFORCE, SO_SNDBUFFORCE = 33, 32
IP_RECVERR = getattr(socket, "IP_RECVERR", 11)
IPV6_RECVERR = getattr(socket, "IPV6_RECVERR", 25)
MSG_ERRQUEUE = getattr(socket, "MSG_ERRQUEUE", 0x2000)


def disabled() -> frozenset[str]:
    """The features turned off by WGMAGIC_PORTABLE (read on each call: tests set it per test)."""
    value = os.environ.get("WGMAGIC_PORTABLE", "").strip().lower()
    if value in ("", "0", "no", "false"):
        return frozenset()
    if value in ("1", "yes", "true", "all"):
        return frozenset(FEATURES)
    return frozenset(part.strip() for part in value.split(",") if part.strip())


def enabled(feature: str) -> bool:
    """Whether `feature` (one of FEATURES) may be tried here."""
    if feature not in FEATURES:
        raise ValueError(f"unknown platform feature {feature!r}; known: {', '.join(FEATURES)}")
    if feature in disabled():
        return False
    if feature == "udp_gso":
        return hasattr(socket, "SOL_UDP") and hasattr(socket.socket, "sendmsg")
    if feature == "flock":
        try:
            import fcntl  # noqa: F401
        except ImportError:
            return False
        return True
    if feature == "unix_sockets":
        return hasattr(socket, "AF_UNIX")
    if feature == "outq":
        return hasattr(socket, "AF_NETLINK")  # SIOCOUTQ is a Linux ioctl number: asked only where Linux is
    return True


def tune_udp_socket(sock: socket.socket, buffer_bytes: int) -> dict[str, bool]:
    """Large buffers and ICMP error reporting on a UDP socket, as far as this system allows.

    Returns which of `force_buffers` and `recverr` took effect. Never raises for a refused option.
    """
    took = {"force_buffers": False, "recverr": False}
    for option, forced in ((socket.SO_RCVBUF, SO_RCVBUFFORCE), (socket.SO_SNDBUF, SO_SNDBUFFORCE)):
        if enabled("force_buffers"):
            try:
                sock.setsockopt(socket.SOL_SOCKET, forced, buffer_bytes)  # past rmem_max; needs CAP_NET_ADMIN
                took["force_buffers"] = True
                continue
            except OSError:
                pass
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, buffer_bytes)
        except OSError:
            pass
    if enabled("recverr"):
        for level, option in ((socket.IPPROTO_IP, IP_RECVERR), (socket.IPPROTO_IPV6, IPV6_RECVERR)):
            try:
                sock.setsockopt(level, option, 1)
                took["recverr"] = True
            except OSError:
                pass
    return took


def drain_error_queue(sock: socket.socket, limit: int = 64) -> None:
    """Empty a socket's queue of ICMP errors (IP_RECVERR); bounded, like the queue itself."""
    if not enabled("recverr"):
        return
    for _ in range(limit):
        try:
            sock.recvmsg(1, 1024, MSG_ERRQUEUE)
        except OSError:
            return


def prepare_listener(sock: socket.socket) -> None:
    """Socket options for a TCP listener before bind(). Where SO_EXCLUSIVEADDRUSE exists (Windows), that: there
    SO_REUSEADDR would let another process bind the same port and take our connections. Elsewhere SO_REUSEADDR
    (a restarted listener may reuse its port while old connections sit in TIME_WAIT; no second listener)."""
    exclusive = getattr(socket, "SO_EXCLUSIVEADDRUSE", None)
    option = exclusive if exclusive is not None else socket.SO_REUSEADDR
    try:
        sock.setsockopt(socket.SOL_SOCKET, option, 1)
    except OSError:
        pass


SIOCOUTQ = 0x5411  # Linux's TIOCOUTQ: a socket's bytes not yet acknowledged (TCP) or read (Unix)


def unsent_bytes(sock: socket.socket) -> int:
    """Bytes written to `sock` that its peer has not yet acknowledged or read; 0 where this cannot be asked."""
    if not enabled("outq"):
        return 0
    try:
        import fcntl

        out = array.array("i", [0])
        fcntl.ioctl(sock.fileno(), SIOCOUTQ, out)
        return out[0]
    except (ImportError, OSError):
        return 0


def _endpoint(address: object) -> tuple[str, int] | None:
    if not address:
        return None
    host, port = address[0], address[1]  # type: ignore[index]
    return str(host).partition("%")[0], int(port)


def loopback_client_allowed(peer: tuple[str, int], listener: tuple[str, int], scope: ClientScope) -> bool:
    """Whether the TCP connection from `peer` to our listening address `listener` (both (host, port), as
    accept() and getsockname() give them) may use a forward that accepts `scope`'s clients:
    "any" -> always; "process" -> the connecting socket is this process's; "user" -> it belongs to this
    process or to a process running as this process's user. False whenever the owner cannot be found out.

    Blocking (it reads the system's socket tables: a few ms, more on a host with very many sockets): never
    call it on an event loop's thread (runtime/services/forward.py runs it in the loop's executor).
    """
    if scope == "any":
        return True
    try:
        import psutil
    except ImportError:
        logger.warning("psutil is not installed: a guarded loopback forward refuses every connection")
        return False
    wanted_local, wanted_remote = _endpoint(peer), _endpoint(listener)

    def same(conn: object) -> bool:
        return (_endpoint(getattr(conn, "laddr", None)) == wanted_local
                and _endpoint(getattr(conn, "raddr", None)) == wanted_remote)

    me = psutil.Process()
    try:
        listing = getattr(me, "net_connections", None) or me.connections
        if any(same(conn) for conn in listing(kind="tcp")):
            return True
    except psutil.Error:
        return False
    if scope != "user":
        return False
    try:
        owners = [conn.pid for conn in psutil.net_connections(kind="tcp") if same(conn)]
    except psutil.Error:  # macOS without root: other processes' sockets are not listed
        return False
    for pid in owners:
        if pid is None:
            continue  # Linux lists another user's sockets without their process
        try:
            return bool(psutil.Process(pid).username() == me.username())
        except psutil.Error:
            return False
    return False
