"""Connections a tunnel's process left open on the server, and the segment that ends each (sans-I/O).

A user-space stack dies with its process: a process killed outright (SIGKILL, the OOM killer, a kernel that
`jupyter_client` had to kill) never tells the server, which keeps each session until its keep-alives give up
(hours). So a tunnel keeps a record of its open connections (`encode`; the runtime writes it beside the key
lock), and the next tunnel on the same key (`decode`) sends, for each, a SYN from the same 4-tuple
(`probe_segment`). The server answers as RFC 5961 section 4 says: a connection it still has in a synchronized
state draws a challenge ACK whose acknowledgment number is its RCV.NXT (Linux, RFC 5961 4.2); one it no longer
has draws a SYN-ACK, or a RST. The stack's closed-port rule (RFC 9293 3.10.7.1: a segment with ACK set is
answered by a RST with SEQ = SEG.ACK) then sends exactly the RST the server accepts (RFC 5961 section 3: SEQ
equal to RCV.NXT). No state is kept here: the answer is a segment for no connection, like any other.

The record is text, one connection a line, "<local ip> <local port> <remote ip> <remote port>", under a
first line "wgmagic-connections 1". `decode` takes untrusted bytes (a file anyone of this user could have
written): bounded (MAX_RECORD_BYTES read, MAX_CONNECTIONS kept), a bad line skipped and counted, never raised.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import NamedTuple

from wgmagic.netstack.wire import tcp as wire

MAGIC = "wgmagic-connections 1"
MAX_CONNECTIONS = 4096
MAX_RECORD_BYTES = 256 * 1024
SYN = 0x02

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class FourTuple(NamedTuple):
    """One TCP connection as the server sees it: our address and port, its address and port."""

    local_ip: IPAddress
    local_port: int
    remote_ip: IPAddress
    remote_port: int


def encode(connections: Iterable[FourTuple]) -> bytes:
    """The record's bytes for `connections` (at most MAX_CONNECTIONS, in order, duplicates dropped)."""
    lines = [MAGIC]
    seen: set[FourTuple] = set()
    for c in connections:
        if c in seen:
            continue
        seen.add(c)
        lines.append(f"{c.local_ip} {c.local_port} {c.remote_ip} {c.remote_port}")
        if len(seen) >= MAX_CONNECTIONS:
            break
    return ("\n".join(lines) + "\n").encode("ascii")


def decode(data: bytes) -> tuple[list[FourTuple], int]:
    """(the connections in a record, how many lines were skipped as malformed). Bytes past MAX_RECORD_BYTES
    are ignored; a record without the first line is empty (0 skipped: not ours). Never raises."""
    text = data[:MAX_RECORD_BYTES].decode("ascii", "replace")
    lines = text.split("\n")
    if not lines or lines[0] != MAGIC:
        return [], 0
    found: list[FourTuple] = []
    seen: set[FourTuple] = set()
    skipped = 0
    for line in lines[1:]:
        if not line:
            continue
        parsed = _parse_line(line)
        if parsed is None:
            skipped += 1
        elif parsed not in seen and len(found) < MAX_CONNECTIONS:
            seen.add(parsed)
            found.append(parsed)
    return found, skipped


def _parse_line(line: str) -> FourTuple | None:
    parts = line.split(" ")
    if len(parts) != 4:
        return None
    try:
        local_ip, remote_ip = ipaddress.ip_address(parts[0]), ipaddress.ip_address(parts[2])
    except ValueError:
        return None
    if local_ip.version != remote_ip.version:
        return None
    ports = []
    for text in (parts[1], parts[3]):
        if not (text.isascii() and text.isdigit() and len(text) <= 5):
            return None
        port = int(text)
        if not 1 <= port <= 65535:
            return None
        ports.append(port)
    return FourTuple(local_ip, ports[0], remote_ip, ports[1])


def probe_segment(connection: FourTuple, isn: int) -> bytes:
    """The SYN (sequence number `isn`, no options, window 65535) from `connection`'s 4-tuple that draws the
    server's challenge ACK (RFC 5961 4.2) for a connection it still has, or a SYN-ACK/RST for one it has not.
    The TCP segment only (the stack adds the IP header)."""
    return wire.build_segment(connection.local_ip.packed, connection.remote_ip.packed, connection.local_port,
                              connection.remote_port, isn, 0, SYN, 0xFFFF)
