"""UDP forwards: a local datagram socket whose every client address is a flow through the tunnel.

Like a NAT's UDP mapping (RFC 4787): each client address (a loopback UDP address, or a Unix datagram socket's
path) gets its own UDP socket on the tunnel's stack, so the target's replies go back to the client that asked;
a flow ends after `idle_timeout` seconds without a datagram either way (REQ-5 asks a NAT for 2 minutes at least,
the default here). Replies are accepted only from the target's address and port (a connected UDP socket's
filtering). Bounded: at most `max_flows` flows (a datagram that would open one more is dropped), each tunnel
socket queues at most the stack's UDP_QUEUE datagrams, and a datagram the client cannot take right away is
dropped; every drop is counted by reason in `UdpForward.drops`.

Private by default: the listener is a Unix datagram socket in a fresh 0700 directory. A loopback UDP port
(`local=PORT` or "HOST:PORT") has no credentials, so on Linux a new flow is admitted only when the client's
socket belongs to this user (its owner in /proc/net/udp{,6}); elsewhere the forward warns that other local
users can send through it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import logging
import os
import socket
import struct
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Any

from wgmagic.addresses import (
    parse_local,
    parse_udp_target,
)
from wgmagic.runtime.seams import EngineAPI
from wgmagic.runtime.services.listener import close_listener, listen_inet, listen_unix

logger = logging.getLogger(__name__)

DEFAULT_IDLE_TIMEOUT = 120.0  # seconds; RFC 4787 REQ-5: a UDP mapping lives at least 2 minutes idle
DEFAULT_MAX_FLOWS = 1024
READ_BATCH = 256  # datagrams read from the local socket per wake-up before the tunnel gets a turn
MAX_DATAGRAM = 65535


# ---- who owns a loopback UDP socket (Linux) ------------------------------------------------------------
def _proc_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """A /proc/net/udp{,6} address: 32-bit words printed in hex in host byte order."""
    try:
        if len(text) == 8:
            return ipaddress.IPv4Address(struct.pack("=I", int(text, 16)))
        if len(text) == 32:
            words = [int(text[i:i + 8], 16) for i in range(0, 32, 8)]
            return ipaddress.IPv6Address(struct.pack("=4I", *words))
    except (ValueError, struct.error):
        return None
    return None


def _plain(address: Any) -> Any:
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped if mapped is not None else address


def udp_socket_owners(host: str, port: int, tables: tuple[str, ...] = ("/proc/net/udp", "/proc/net/udp6")
                      ) -> set[int] | None:
    """The uids owning UDP sockets bound to (host or a wildcard, port) in this network namespace, from Linux's
    /proc/net/udp tables (proc(5)); None when the tables cannot be read (another system)."""
    try:
        wanted = _plain(ipaddress.ip_address(host.partition("%")[0]))
    except ValueError:
        return set()
    owners: set[int] = set()
    readable = False
    for table in tables:
        try:
            with open(table) as handle:
                lines = handle.readlines()[1:]
        except OSError:
            continue
        readable = True
        for line in lines:
            fields = line.split()
            if len(fields) < 8:
                continue
            local, _, port_hex = fields[1].partition(":")
            try:
                if int(port_hex, 16) != port:
                    continue
                uid = int(fields[7])
            except ValueError:
                continue
            address = _proc_address(local)
            if address is None:
                continue
            address = _plain(address)
            if address == wanted or address.is_unspecified:
                owners.add(uid)
    return owners if readable else None


def run_on_loop(loop: asyncio.AbstractEventLoop, fn: Any, timeout: float = 5.0) -> Any:
    """fn() on `loop`'s thread (at once when called there), its result here; TimeoutError after `timeout` s."""
    try:
        if asyncio.get_running_loop() is loop:
            return fn()
    except RuntimeError:
        pass
    result: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def run() -> None:
        try:
            result.set_result(fn())
        except BaseException as exc:  # reported to the caller
            result.set_exception(exc)

    loop.call_soon_threadsafe(run)
    try:
        return result.result(timeout)
    except concurrent.futures.TimeoutError:
        raise TimeoutError("the tunnel's loop did not answer") from None


# ---- the forward --------------------------------------------------------------------------------------
@dataclass
class UdpForwardSpec:
    remote_host: str
    remote_port: int
    remote_addresses: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]
    local_kind: str = "unix"  # "unix" (a datagram socket in a 0700 directory) or "udp" (loopback UDP)
    bind_host: str = "127.0.0.1"
    bind_port: int = 0
    socket_dir: str | None = None
    owns_socket_dir: bool = False
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    max_flows: int = DEFAULT_MAX_FLOWS
    same_user_only: bool = True  # loopback UDP: admit only clients whose socket is this user's (Linux)


def make_spec(target: str, local: str | int | None, addresses: list[Any], *, idle_timeout: float | None = None,
              max_flows: int | None = None) -> UdpForwardSpec:
    """The spec of `Tunnel.forward("udp:HOST:PORT", local=...)`: local None: a Unix datagram socket in a fresh
    0700 directory; PORT or "HOST:PORT": loopback UDP; "unix:DIR": a socket in that directory."""
    host, port = parse_udp_target(target)
    spec = UdpForwardSpec(host, port, tuple(addresses))
    if idle_timeout is not None:
        if not idle_timeout > 0:
            raise ValueError("idle_timeout must be a positive number of seconds")
        spec.idle_timeout = float(idle_timeout)
    if max_flows is not None:
        if max_flows < 1:
            raise ValueError("max_flows must be at least 1")
        spec.max_flows = int(max_flows)
    where = parse_local(local)
    if where.kind == "unix":
        spec.socket_dir = where.socket_dir
    else:
        spec.local_kind, spec.bind_host, spec.bind_port = "udp", where.bind_host, where.bind_port
    return spec


class UdpFlow:
    """One client address and its socket on the tunnel's stack."""

    __slots__ = ("client", "datagrams_in", "datagrams_out", "last_active", "sock", "target")

    def __init__(self, client: Any, sock: Any, target: Any, now: float) -> None:
        self.client = client
        self.sock = sock
        self.target = target
        self.last_active = now
        self.datagrams_out = 0
        self.datagrams_in = 0


class UdpForward:
    """One local datagram listener relayed to `udp:HOST:PORT`; created and driven on the tunnel's loop thread.

    `local_address`: the Unix socket's path or (host, port). `stats()` from any thread: open flows and
    totals; `drops` by reason: flows_full, other_user, unaddressed_client, too_big, unexpected_source,
    client_busy, client_gone, tunnel_socket.
    """

    def __init__(self, engine: EngineAPI, spec: UdpForwardSpec) -> None:
        self.engine = engine
        self.spec = spec
        self.flows: OrderedDict[Any, UdpFlow] = OrderedDict()  # least recently active first
        self.counters: Counter[str] = Counter()
        self.drops: Counter[str] = Counter()
        self.closed = False
        self._expiry: asyncio.TimerHandle | None = None
        self._check_owner = spec.local_kind == "udp" and spec.same_user_only and hasattr(os, "getuid")
        self.sock, self.address = self._listen()
        if self._check_owner and udp_socket_owners("127.0.0.1", 0) is None:
            self._check_owner = False
            logger.warning("this system does not say who owns a UDP socket: other local users can send through "
                           "this UDP forward; prefer the default (a private Unix socket)")
        engine.loop.add_reader(self.sock.fileno(), self._on_local_readable)

    def _listen(self) -> tuple[socket.socket, Any]:
        spec = self.spec
        if spec.local_kind != "unix":
            return listen_inet(spec.bind_host, spec.bind_port, socket.SOCK_DGRAM, backlog=0, what="a UDP forward")
        sock, path, spec.socket_dir, spec.owns_socket_dir = listen_unix(
            f"udp-{spec.remote_port}.sock", spec.socket_dir, socket.SOCK_DGRAM, backlog=0,
            alternative="choose a shorter directory (unix:DIR) or a loopback UDP port")
        return sock, path

    # ---- loop thread ---------------------------------------------------------------------------------
    def _on_local_readable(self) -> None:
        now = time.monotonic()
        for _ in range(READ_BATCH):
            try:
                data, client = self.sock.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.drops["local_error"] += 1
                break
            self._from_client(data, client, now)
        self.engine.pump(now)

    def _from_client(self, data: bytes, client: Any, now: float) -> None:
        if not client:  # an unbound Unix datagram socket: no address to answer
            self.drops["unaddressed_client"] += 1
            return
        flow = self.flows.get(client)
        if flow is None:
            flow = self._open_flow(client, now)
            if flow is None:
                return
        else:
            self.flows.move_to_end(client)
        flow.last_active = now
        try:
            flow.sock.sendto(data, (flow.target, self.spec.remote_port), now)
        except OSError as exc:
            self.drops["too_big" if exc.errno == 90 else "tunnel_socket"] += 1
            return
        flow.datagrams_out += 1
        self.counters["datagrams_out"] += 1
        self.counters["bytes_out"] += len(data)

    def _open_flow(self, client: Any, now: float) -> UdpFlow | None:
        if len(self.flows) >= self.spec.max_flows:
            self.drops["flows_full"] += 1
            return None
        if self._check_owner and udp_socket_owners(client[0], client[1]) != {os.getuid()}:
            self.drops["other_user"] += 1
            return None
        target = self.spec.remote_addresses[0]
        try:
            sock = self.engine.stack.udp_open(family=target.version)
        except OSError:
            self.drops["tunnel_socket"] += 1
            return None
        flow = UdpFlow(client, sock, target, now)
        self.flows[client] = flow
        self.engine.udp_handlers[id(sock)] = lambda s, flow=flow: self._from_tunnel(flow)
        self.counters["flows"] += 1
        self._schedule_expiry()
        return flow

    def _from_tunnel(self, flow: UdpFlow) -> None:
        now = time.monotonic()
        while True:
            item = flow.sock.recvfrom()
            if item is None:
                return
            data, (source, port) = item
            if source != flow.target or port != self.spec.remote_port:
                self.drops["unexpected_source"] += 1
                continue
            try:
                self.sock.sendto(data, flow.client)
            except (BlockingIOError, InterruptedError):
                self.drops["client_busy"] += 1
                continue
            except OSError:
                self.drops["client_gone"] += 1
                continue
            flow.last_active = now
            if flow.client in self.flows:
                self.flows.move_to_end(flow.client)
            flow.datagrams_in += 1
            self.counters["datagrams_in"] += 1
            self.counters["bytes_in"] += len(data)

    def _schedule_expiry(self) -> None:
        if self._expiry is not None or not self.flows or self.closed:
            return
        oldest = next(iter(self.flows.values()))
        # asyncio's clock is time.monotonic, the clock of last_active.
        self._expiry = self.engine.loop.call_at(oldest.last_active + self.spec.idle_timeout, self._expire)

    def _expire(self) -> None:
        self._expiry = None
        now = time.monotonic()
        while self.flows:
            oldest = next(iter(self.flows.values()))
            if oldest.last_active + self.spec.idle_timeout > now:
                break
            self._close_flow(oldest)
            self.counters["flows_expired"] += 1
        self._schedule_expiry()

    def _close_flow(self, flow: UdpFlow) -> None:
        self.flows.pop(flow.client, None)
        self.engine.udp_handlers.pop(id(flow.sock), None)
        flow.sock.close()

    def stats_on_loop(self) -> dict[str, Any]:
        return {"flows": len(self.flows), "flows_opened": self.counters["flows"],
                "flows_expired": self.counters["flows_expired"],
                "datagrams_out": self.counters["datagrams_out"], "datagrams_in": self.counters["datagrams_in"],
                "bytes_out": self.counters["bytes_out"], "bytes_in": self.counters["bytes_in"],
                "drops": dict(self.drops), "idle_timeout": self.spec.idle_timeout,
                "max_flows": self.spec.max_flows}

    def close_on_loop(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        unix = self.spec.local_kind == "unix"
        close_listener(self.engine.loop, self.sock, self.address, self.spec.socket_dir if unix else None,
                       self.spec.owns_socket_dir)
        for flow in list(self.flows.values()):
            self._close_flow(flow)

    # ---- any thread ----------------------------------------------------------------------------------
    def stats(self, timeout: float = 5.0) -> dict[str, Any]:
        """Open flows, flows opened and expired, datagrams and bytes each way, drops by reason."""
        return run_on_loop(self.engine.loop, self.stats_on_loop, timeout)

    @property
    def local_address(self) -> Any:
        return self.address

    @property
    def target(self) -> str:
        host = f"[{self.spec.remote_host}]" if ":" in self.spec.remote_host else self.spec.remote_host
        return f"udp:{host}:{self.spec.remote_port}"

    def libpq_params(self) -> dict[str, str]:
        raise TypeError("a UDP forward carries datagrams, not PostgreSQL connections")

    def __repr__(self) -> str:
        from wgmagic.addresses import format_address

        where = self.address if isinstance(self.address, str) else f"udp {format_address(self.address)}"
        return f"<UdpForward {where} -> {self.target} ({len(self.flows)} flows)>"
