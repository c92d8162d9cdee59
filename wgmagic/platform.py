"""What this operating system offers beyond portable sockets, found by trying, with a fallback for each.

Every Linux-only (or POSIX-only) piece wgmagic uses is asked for here and nowhere else:

| feature        | what it gives                                              | fallback                           |
| -------------- | ---------------------------------------------------------- | ---------------------------------- |
| `udp_gso`      | UDP_SEGMENT (Linux 4.18+): a run of datagrams in one call  | one `sendto` per datagram          |
| `recverr`      | IP_RECVERR: ICMP "port unreachable" reaches a UDP socket   | silence: a wrong port looks |
|                |                                                            | like a wrong key                   |
| `force_buffers`| SO_RCVBUFFORCE/SO_SNDBUFFORCE past rmem_max (root only)    | SO_RCVBUF/SO_SNDBUF up to the limit |
| `flock`        | fcntl.flock: the one-key lock shared across processes      | a lock in this process only        |
| `unix_sockets` | AF_UNIX listeners in a 0700 directory for private forwards | loopback TCP (with a warning)      |

Detection is by feature, not by platform name. `WGMAGIC_PORTABLE=1` (or a comma list of feature names,
`WGMAGIC_PORTABLE=udp_gso,flock`) turns features off, so the fallbacks can be tested on Linux.
"""

from __future__ import annotations

import os
import socket

FEATURES = ("udp_gso", "recverr", "force_buffers", "flock", "unix_sockets")

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
