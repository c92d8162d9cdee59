"""SOCKS5 UDP ASSOCIATE (RFC 1928 section 7): the UDP request header, and the relay of one association.

Each UDP datagram between the client and the relay carries

    +----+------+------+----------+----------+----------+
    |RSV | FRAG | ATYP | DST.ADDR | DST.PORT |   DATA   |
    +----+------+------+----------+----------+----------+
    | 2  |  1   |  1   | Variable |    2     | Variable |

`parse_udp_request` / `build_udp_header` are pure (bytes in, values out; never raise on input). The relay
(`UdpAssociation`, on the tunnel's loop thread) binds its UDP socket on the loopback address of the TCP control
connection, accepts datagrams only from the client's address (the one the request named, else the first
datagram's source from the control connection's host; for a Unix-socket control connection, a loopback socket
of this user), drops fragments (FRAG != 0: fragmentation is optional and not implemented) and counts every drop;
domain names are resolved through the tunnel's DNS. Replies are accepted only from addresses the client has
sent to (address and port dependent filtering, RFC 4787). The association ends when the control connection
closes (section 7: "A UDP association terminates when the TCP connection that the UDP ASSOCIATE request
arrived on terminates").
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import socket
import struct
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Any

from wgmagic.runtime.services.listener import receive
from wgmagic.runtime.services.udp_forward import udp_socket_owners

ATYP_IPV4, ATYP_DOMAIN, ATYP_IPV6 = 1, 3, 4
READ_BATCH = 256
MAX_PENDING_RESOLUTIONS = 64  # datagrams to names waiting for the tunnel's DNS, per association
MAX_DESTINATIONS = 4096  # (address, port) pairs a client sent to, whose replies are let through
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class UdpRequest:
    """One SOCKS5 UDP request header and its payload (RFC 1928 section 7): FRAG, DST.ADDR (`host`), DST.PORT
    and DATA."""

    frag: int
    host: str  # an IP literal, or a domain name to resolve through the tunnel
    port: int
    data: bytes


def parse_udp_request(datagram: bytes) -> UdpRequest | str:
    """One client datagram -> UdpRequest, or the reason to drop it ("short", "reserved", "address_type",
    "bad_domain", "port_zero"). FRAG is returned as is: the relay drops FRAG != 0 itself."""
    datagram = bytes(datagram)
    if len(datagram) < 4:
        return "short"
    if datagram[0] or datagram[1]:
        return "reserved"
    frag, atyp = datagram[2], datagram[3]
    if atyp == ATYP_IPV4:
        end = 8
        if len(datagram) < end + 2:
            return "short"
        host = str(ipaddress.IPv4Address(datagram[4:8]))
    elif atyp == ATYP_IPV6:
        end = 20
        if len(datagram) < end + 2:
            return "short"
        host = str(ipaddress.IPv6Address(datagram[4:20]))
    elif atyp == ATYP_DOMAIN:
        if len(datagram) < 5:
            return "short"
        end = 5 + datagram[4]
        if len(datagram) < end + 2:
            return "short"
        host = decode_domain(datagram[5:end])
        if host is None:
            return "bad_domain"
    else:
        return "address_type"
    port = int.from_bytes(datagram[end:end + 2], "big")
    if port == 0:
        return "port_zero"
    return UdpRequest(frag, host, port, bytes(datagram[end + 2:]))


def decode_domain(raw: bytes) -> str | None:
    """A DOMAINNAME field: IDNA (or UTF-8) text without a trailing dot; None when empty or undecodable."""
    try:
        host = raw.decode("idna" if raw.isascii() else "utf-8").rstrip(".")
    except UnicodeError:
        return None
    if not host or "\x00" in host:
        return None
    return host


def build_udp_header(address: IPAddress, port: int, frag: int = 0) -> bytes:
    """The header the relay puts before a reply from (address, port)."""
    atyp = ATYP_IPV4 if address.version == 4 else ATYP_IPV6
    return struct.pack("!HBB", 0, frag, atyp) + address.packed + struct.pack("!H", port)


def _plain(address: IPAddress) -> IPAddress:
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped if mapped is not None else address


class UdpAssociation:
    """The relay of one UDP ASSOCIATE: created on the loop thread by the SOCKS5 server once the request is read.

    `address`: the relay's (host, port), sent back as BND.ADDR/BND.PORT. `drops` by reason: the parser's,
    "fragment", "foreign_source", "other_user", "no_route", "unresolved", "resolve_backlog", "unsolicited",
    "too_big", "client_busy", "client_gone", "tunnel_socket".
    """

    def __init__(self, server: Any, control: socket.socket, expected: tuple[str, int]) -> None:
        self.server = server
        self.engine = server.engine
        self.loop = self.engine.loop
        self.control = control
        self.closed = False
        self.drops: Counter[str] = Counter()
        self.counters: Counter[str] = Counter()
        self.sockets: dict[int, Any] = {}  # IP version -> the association's UDP socket on the tunnel's stack
        self.destinations: OrderedDict[tuple[IPAddress, int], None] = OrderedDict()
        self.tasks: set[asyncio.Task[None]] = set()
        self.pending = 0
        self.client: tuple[IPAddress, int] | None = None  # locked on the first accepted datagram
        self.client_address: Any = None  # the same, as the relay socket's sendto wants it
        self.client_port = 0
        if control.family in (socket.AF_INET, socket.AF_INET6):
            bind_host = control.getsockname()[0]
            self.client_ip: IPAddress | None = _plain(ipaddress.ip_address(control.getpeername()[0]))
            self.owner_check = False  # the control connection authenticated (or the user chose --no-auth)
        else:  # a Unix-socket proxy: the relay is on loopback, for this user's sockets only
            bind_host = "127.0.0.1"
            self.client_ip = None
            self.owner_check = hasattr(os, "getuid") and udp_socket_owners("127.0.0.1", 0) is not None
        with contextlib.suppress(ValueError):
            stated = _plain(ipaddress.ip_address(expected[0]))
            if not stated.is_unspecified:
                self.client_ip = stated
        self.client_port = expected[1]
        family = socket.AF_INET6 if ":" in bind_host else socket.AF_INET
        self.relay = socket.socket(family, socket.SOCK_DGRAM)
        try:
            self.relay.bind((bind_host, 0))
            self.relay.setblocking(False)
        except BaseException:
            self.relay.close()
            raise
        self.address: tuple[str, int] = self.relay.getsockname()[:2]
        self.loop.add_reader(self.relay.fileno(), self._on_client_datagrams)
        self.loop.add_reader(control.fileno(), self._on_control)

    def __repr__(self) -> str:
        from wgmagic.addresses import format_address

        return f"<UdpAssociation relay {format_address(self.address)} client={self.client}>"

    def _drop(self, reason: str) -> None:
        self.drops[reason] += 1
        self.server.udp_drops[reason] += 1

    # ---- client -> tunnel ----------------------------------------------------------------------------
    def _on_client_datagrams(self) -> None:
        now = time.monotonic()
        for _ in range(READ_BATCH):
            try:
                data, source = self.relay.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                break
            except ConnectionRefusedError:  # an earlier reply found the client gone
                continue
            except OSError:
                break
            if not self._accept_source(source):
                continue
            request = parse_udp_request(data)
            if isinstance(request, str):
                self._drop(request)
                continue
            if request.frag:
                self._drop("fragment")
                continue
            self.counters["datagrams_out"] += 1
            try:
                address = ipaddress.ip_address(request.host)
            except ValueError:
                self._resolve_then_send(request)
                continue
            self._send(address, request.port, request.data, now)
        self.engine.pump()

    def _accept_source(self, source: Any) -> bool:
        try:
            ip = _plain(ipaddress.ip_address(str(source[0]).partition("%")[0]))
        except ValueError:
            self._drop("foreign_source")
            return False
        if self.client is not None:
            if (ip, source[1]) != self.client:
                self._drop("foreign_source")
                return False
            return True
        if (self.client_ip is not None and ip != self.client_ip) or (self.client_ip is None and not ip.is_loopback) \
                or (self.client_port and source[1] != self.client_port):
            self._drop("foreign_source")
            return False
        if self.owner_check and udp_socket_owners(str(source[0]), source[1]) != {os.getuid()}:
            self._drop("other_user")
            return False
        self.client, self.client_address = (ip, source[1]), source
        return True

    def _resolve_then_send(self, request: UdpRequest) -> None:
        if self.pending >= MAX_PENDING_RESOLUTIONS:
            self._drop("resolve_backlog")
            return
        self.pending += 1
        task = self.loop.create_task(self._resolve_and_send(request))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _resolve_and_send(self, request: UdpRequest) -> None:
        try:
            addresses = await self.server.resolver(request.host)  # routable ones, in connection order
        except Exception:
            self._drop("unresolved")
            return
        finally:
            self.pending -= 1
        if self.closed or not addresses:
            return
        self._send(addresses[0], request.port, request.data, time.monotonic())
        self.engine.pump()

    def _send(self, address: IPAddress, port: int, data: bytes, now: float) -> None:
        if not self.engine.routes.select([address]):
            self._drop("no_route")
            return
        sock = self.sockets.get(address.version)
        if sock is None:
            try:
                sock = self.engine.stack.udp_open(family=address.version)
            except OSError:
                self._drop("tunnel_socket")
                return
            self.sockets[address.version] = sock
            self.engine.udp_handlers[id(sock)] = self._from_tunnel
        try:
            sock.sendto(data, (address, port), now)
        except OSError as exc:
            self._drop("too_big" if exc.errno == 90 else "tunnel_socket")
            return
        key = (address, port)
        self.destinations[key] = None
        self.destinations.move_to_end(key)
        if len(self.destinations) > MAX_DESTINATIONS:
            self.destinations.popitem(last=False)

    # ---- tunnel -> client ----------------------------------------------------------------------------
    def _from_tunnel(self, sock: Any) -> None:
        while True:
            item = sock.recvfrom()
            if item is None:
                return
            data, (source, port) = item
            if (source, port) not in self.destinations or self.client_address is None:
                self._drop("unsolicited")
                continue
            try:
                self.relay.sendto(build_udp_header(source, port) + data, self.client_address)
            except (BlockingIOError, InterruptedError):
                self._drop("client_busy")
                continue
            except OSError:
                self._drop("client_gone")
                continue
            self.counters["datagrams_in"] += 1

    # ---- the control connection ----------------------------------------------------------------------
    def _on_control(self) -> None:
        if receive(self.control) == b"":
            self.close()
        # Anything else on the control connection means nothing in section 7: ignored.

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for fd in (self.relay.fileno(), self.control.fileno()):
            with contextlib.suppress(Exception):
                self.loop.remove_reader(fd)
        for task in list(self.tasks):
            task.cancel()
        for sock in self.sockets.values():
            self.engine.udp_handlers.pop(id(sock), None)
            sock.close()
        self.sockets.clear()
        self.relay.close()
        with contextlib.suppress(OSError):
            self.control.close()
        self.server.associations.discard(self)
