"""The user-space IP stack's demultiplexer: packets in -> ICMP, UDP sockets, TCP connections; and back out.

Sans-I/O: the runtime feeds inner IP packets from the tunnel with `receive_packet(packet, now)`, then pulls
`events()` (every event that input produced, TCP connections' included) and `packets_to_send(now)`.
Connections and sockets live in tables keyed by raw address bytes. IPv4 (RFC 791), IPv6 (RFC 8200), ICMP
(RFC 792, RFC 4443), UDP (RFC 768), TCP (RFC 9293, in `tcp/`). Datagrams bigger than the path MTU (UDP, ICMP
echo) leave as fragments and fragments are reassembled (`fragments.py`); TCP keeps to its MSS and never needs
either.
"""

from __future__ import annotations

import ipaddress
import os
import struct
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from wgmagic.netstack.events import EchoReply, IcmpUnreachable, NetstackEvent, UdpReadable
from wgmagic.netstack.fragments import FragmentIds, Reassembler
from wgmagic.netstack.leftovers import FourTuple, probe_segment
from wgmagic.netstack.ratelimit import TokenBucket
from wgmagic.netstack.tcp.config import TcpConfig
from wgmagic.netstack.tcp.connection import TcpConnection, reset_for
from wgmagic.netstack.tcp.listener import DEFER, TcpListener
from wgmagic.netstack.tcp.state import CLOSED, SYN_SENT, TIME_WAIT
from wgmagic.netstack.udp import UDP_MAX_PAYLOAD, UdpSocket, parse_datagram, port_unreachable
from wgmagic.netstack.wire import icmp
from wgmagic.netstack.wire.icmp import IcmpKind
from wgmagic.netstack.wire.ip import (
    PROTO_ICMP,
    PROTO_ICMPV6,
    PROTO_TCP,
    PROTO_UDP,
    IPv4Builder,
    build_ipv4_fragments,
    build_ipv6,
    build_ipv6_fragments,
    parse,
    parse_fragment,
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
_PORTS = struct.Struct("!HH")
EPHEMERAL_LOW, EPHEMERAL_HIGH = 49152, 65535
MAX_EVENTS = 65536
# What all connections together may advertise: full speed on one, a bound on many towards one UDP socket.
SHARED_RECEIVE_BUDGET = 16 * 1024 * 1024
MIN_CONNECTION_WINDOW = 128 * 1024
# RSTs answering segments for no connection (RFC 9293 3.10.7.1): at most this many a second, after a burst.
RESET_RATE, RESET_BURST = 200.0, 100
V4_TIME_EXCEEDED, V6_TIME_EXCEEDED, CODE_REASSEMBLY_TIME_EXCEEDED = 11, 3, 1  # RFC 792; RFC 4443 3.3

__all__ = ["Stack"]


def _address(raw: bytes) -> IPAddress:
    return ipaddress.IPv4Address(raw) if len(raw) == 4 else ipaddress.IPv6Address(raw)


class Stack:
    """The IP stack of one tunnel: `addresses` are the interface's (their IPs are ours), `mtu` the tunnel's
    (bytes), `rng(n) -> n bytes` the randomness (ports, ISNs), `tcp_options` a `TcpConfig` for every connection.
    `verify_checksums` checks inbound checksums (off: WireGuard's AEAD already authenticated the bytes). Bad
    input is counted in `drops` by reason and never raises. `fragments` is the reassembly (`Reassembler`,
    bounded in time and memory), `fragment_ids` the Identification of the datagrams the stack cuts."""

    def __init__(self, addresses: Sequence[IPInterface], *, mtu: int = 1420,
                 rng: Callable[[int], bytes] = os.urandom, tcp_options: TcpConfig | None = None,
                 verify_checksums: bool = False) -> None:
        self.addresses = list(addresses)
        self._local = {a.ip.packed for a in self.addresses}
        self.local_v4 = next((a.ip.packed for a in self.addresses if a.version == 4), None)
        self.local_v6 = next((a.ip.packed for a in self.addresses if a.version == 6), None)
        self.mtu = mtu
        self.rng = rng
        self.tcp_options = tcp_options
        # WireGuard's AEAD already authenticated every inbound byte, as Linux's driver assumes when it marks
        # decrypted packets CHECKSUM_UNNECESSARY; verifying again costs microseconds per packet.
        self.verify_checksums = verify_checksums
        self._v4 = IPv4Builder()
        self._out: list[bytes] = []
        self._events: list[NetstackEvent] = []
        self.drops: Counter[str] = Counter()
        self.counters: Counter[str] = Counter()
        self.fragments = Reassembler(self.drops)
        self.fragment_ids = FragmentIds(rng)
        self._udp: dict[tuple[bytes, int], UdpSocket] = {}
        self.tcp: dict[tuple[bytes, int, bytes, int], TcpConnection] = {}  # (local, lport, remote, rport) -> connection
        self._listeners: dict[int, TcpListener] = {}
        self._pmtu: dict[bytes, int] = {}
        self._next_port = EPHEMERAL_LOW + int.from_bytes(rng(2), "big") % (EPHEMERAL_HIGH - EPHEMERAL_LOW)
        self._active: set[TcpConnection] = set()  # connections that may have segments to send
        self.reset_limit = TokenBucket(RESET_RATE, RESET_BURST)

    def __repr__(self) -> str:
        return f"<Stack {', '.join(str(a) for a in self.addresses)} tcp={len(self.tcp)}>"

    # ---- outputs ------------------------------------------------------------------------------------
    def events(self) -> list[NetstackEvent]:
        """Every event since the last call, drained: the stack's own (EchoReply, IcmpUnreachable, UdpReadable,
        TcpAccepted) and those of the TCP connections that inputs or timers touched since (TcpConnected,
        TcpReadable, TcpWritable, TcpClosed), so an event raised while a segment is received reaches the caller
        in the same round. Bounded: past MAX_EVENTS queued, events are dropped and counted."""
        if self._active:
            for conn in self._active:
                if conn._events or conn._readable or conn._writable:
                    for event in conn.events():
                        self._event(event)
        events, self._events = self._events, []
        return events

    def pending(self) -> bool:
        """Whether `events()` or `packets_to_send()` may have something now (False: not before an input)."""
        return bool(self._events or self._active or self._out)

    def _event(self, event: NetstackEvent) -> None:
        if len(self._events) < MAX_EVENTS:
            self._events.append(event)
        else:
            self.drops["event_queue_full"] += 1

    def _emit(self, src: bytes, dst: bytes, proto: int, payload: bytes) -> None:
        if len(src) == 4:
            self._out.append(self._v4.build(src, dst, proto, payload))
        else:
            self._out.append(build_ipv6(src, dst, proto, payload))
        self.counters["packets_out"] += 1

    def emit_datagram(self, src: bytes, dst: bytes, proto: int, payload: bytes) -> None:
        """Send a datagram that may be bigger than the path MTU: whole (IPv4 with DF) when it fits, else in
        fragments (IPv4 with DF clear, as Linux sends UDP; IPv6 with a Fragment header) of at most the path
        MTU each, with an Identification from `fragment_ids` (RFC 6864, RFC 7739)."""
        mtu = self._pmtu.get(dst, self.mtu)
        v4 = len(src) == 4
        if len(payload) + (20 if v4 else 40) <= mtu:
            self._emit(src, dst, proto, payload)
            return
        ident = self.fragment_ids.next(src, dst, proto)
        if v4:
            packets = build_ipv4_fragments(src, dst, proto, payload, ident, mtu)
        else:
            packets = build_ipv6_fragments(src, dst, proto, payload, ident, mtu)
        self._out.extend(packets)
        self.counters["packets_out"] += len(packets)
        self.counters["fragments_out"] += len(packets)
        self.counters["datagrams_fragmented"] += 1

    def packets_to_send(self, now: float) -> list[bytes]:
        """IP packets to send into the tunnel, drained: what inputs, timers and the user's calls produced since the
        last call (each touched TCP connection's segments are collected here)."""
        if self._active:
            active, self._active = self._active, set()
            for conn in active:
                self._collect(conn, now)
        out, self._out = self._out, []
        return out

    def _collect(self, conn: TcpConnection, now: float) -> None:
        local, remote = conn.local, conn.remote
        src, dst = conn._src, conn._dst  # the packed addresses
        for segment in conn.segments_to_send(now):
            self._emit(src, dst, PROTO_TCP, segment)
        if conn.icmp_out:  # a path-MTU black hole the connection infers: tell the sender (tcp/pmtu.py)
            for proto, message in conn.icmp_out:
                self._emit(src, dst, proto, message)
            self.counters["tcp_too_big_sent"] += len(conn.icmp_out)
            conn.icmp_out.clear()
        for event in conn.events():
            self._event(event)
        if conn.is_finished() and self.tcp.pop((src, local[1], dst, remote[1]), None) is not None:
            self.counters["tcp_retransmits_closed"] += conn.retransmits
            self.counters["tcp_bytes_in_closed"] += conn.bytes_received
            self.counters["tcp_bytes_out_closed"] += conn.bytes_sent

    def path_mtu(self, dst: bytes) -> int:
        """The MTU in bytes towards `dst` (raw address): lowered by ICMP too-big (RFC 1191, RFC 8201), else the
        tunnel's."""
        return self._pmtu.get(dst, self.mtu)

    # ---- input --------------------------------------------------------------------------------------
    def receive_packet(self, packet: bytes | memoryview, now: float) -> None:
        """One inner IP packet from the tunnel at `now` (seconds). Never raises; drops are counted in `drops`."""
        try:
            self._receive(packet, now)
        except Exception:  # a case nobody foresaw must not reach the runtime as an exception
            self.drops["internal_error"] += 1

    def _receive(self, packet: bytes | memoryview, now: float) -> None:
        parsed = parse(packet, self.verify_checksums)
        if isinstance(parsed, str):
            if parsed != "fragment":
                self.drops[parsed] += 1
                return
            whole = self._reassemble(packet, now)
            if whole is None:
                return
            parsed = parse(whole, False)  # the fragments' headers were checked; the new one is ours
            if isinstance(parsed, str):  # a Fragment header inside a reassembled packet is not taken apart again
                self.drops["nested_fragment" if parsed == "fragment" else parsed] += 1
                return
            packet = whole
        version, src, dst, proto, payload, _ttl = parsed
        if dst not in self._local:
            self.drops["not_for_us"] += 1
            return
        self.counters["packets_in"] += 1
        if proto == PROTO_TCP:
            self._receive_tcp(src, dst, payload, now)
        elif proto == PROTO_UDP:
            self._receive_udp(version, src, dst, payload, packet)
        elif (proto == PROTO_ICMP and version == 4) or (proto == PROTO_ICMPV6 and version == 6):
            self._receive_icmp(version, src, dst, payload, now)
        else:
            self.drops["unknown_protocol"] += 1

    def _reassemble(self, packet: bytes | memoryview, now: float) -> bytes | None:
        """A fragment addressed to us into the reassembly; the whole packet when it was the last missing."""
        fragment = parse_fragment(packet, self.verify_checksums)
        if isinstance(fragment, str):
            self.drops[fragment] += 1
            return None
        if fragment.dst not in self._local:
            self.drops["not_for_us"] += 1
            return None
        self.counters["fragments_in"] += 1
        whole = self.fragments.add(fragment, now)
        if whole is not None:
            self.counters["reassembled"] += 1
        return whole

    def _receive_icmp(self, version: int, src: bytes, dst: bytes, message: memoryview, now: float) -> None:
        if len(message) < 8:
            self.drops["malformed_icmp"] += 1
            return
        if self.verify_checksums and not icmp.checksum_ok(version, message, src, dst):
            self.drops["bad_checksum"] += 1
            return
        kind, code, _, ident, seq = icmp.ICMP_HEADER.unpack_from(message)
        request = icmp.V4_ECHO_REQUEST if version == 4 else icmp.V6_ECHO_REQUEST
        reply = icmp.V4_ECHO_REPLY if version == 4 else icmp.V6_ECHO_REPLY
        if kind == request:
            answer = icmp.build_echo(version, False, ident, seq, bytes(message[8:]), dst, src)
            self.emit_datagram(dst, src, PROTO_ICMP if version == 4 else PROTO_ICMPV6, answer)
        elif kind == reply:
            self._event(EchoReply(_address(src), ident, seq, bytes(message[8:]), now))
        elif version == 4 and kind == icmp.V4_UNREACHABLE:
            mtu = int.from_bytes(message[6:8], "big") if code == icmp.V4_CODE_FRAG_NEEDED else None
            what = (IcmpKind.TOO_BIG if code == icmp.V4_CODE_FRAG_NEEDED else
                    IcmpKind.PORT_UNREACHABLE if code == icmp.V4_CODE_PORT_UNREACHABLE else IcmpKind.UNREACHABLE)
            self._icmp_error(src, what, mtu, message[8:], now)
        elif version == 6 and kind in (icmp.V6_UNREACHABLE, icmp.V6_TOO_BIG):
            mtu = int.from_bytes(message[4:8], "big") if kind == icmp.V6_TOO_BIG else None
            what = (IcmpKind.TOO_BIG if kind == icmp.V6_TOO_BIG else
                    IcmpKind.PORT_UNREACHABLE if code == icmp.V6_CODE_PORT_UNREACHABLE else IcmpKind.UNREACHABLE)
            self._icmp_error(src, what, mtu, message[8:], now)
        else:
            self.drops["icmp_ignored"] += 1

    def _icmp_error(self, reporter: bytes, what: IcmpKind, mtu: int | None, quoted: memoryview, now: float) -> None:
        inner = parse(quoted, False) if len(quoted) >= 20 else "short"
        # The quote may be cut short, so read the header by hand rather than trusting its length fields.
        if isinstance(inner, str):
            if len(quoted) >= 28 and quoted[0] >> 4 == 4:
                ihl = (quoted[0] & 0x0F) * 4
                proto, src, dst, ports = quoted[9], bytes(quoted[12:16]), bytes(quoted[16:20]), quoted[ihl:ihl + 4]
            elif len(quoted) >= 44 and quoted[0] >> 4 == 6:
                proto, src, dst, ports = quoted[6], bytes(quoted[8:24]), bytes(quoted[24:40]), quoted[40:44]
            else:
                self.drops["malformed_icmp"] += 1
                return
        else:
            _, src, dst, proto, body, _ = inner
            ports = body[:4]
        if what == IcmpKind.TOO_BIG and mtu:
            floor = 576 if len(dst) == 4 else 1280
            self._pmtu[dst] = max(floor, min(mtu, self.path_mtu(dst)))
        self._event(IcmpUnreachable(_address(reporter), what, mtu))
        if proto == PROTO_TCP and len(ports) == 4:
            sport, dport = _PORTS.unpack(bytes(ports))
            conn = self.tcp.get((src, sport, dst, dport))
            if conn is not None:
                conn.icmp_error(what, now, mtu=self._pmtu.get(dst))
                self._active.add(conn)

    def _receive_udp(self, version: int, src: bytes, dst: bytes, segment: memoryview, packet: Any) -> None:
        datagram = parse_datagram(segment)
        if datagram is None:
            self.drops["malformed_udp"] += 1
            return
        sport, dport, payload = datagram
        sock = self._udp.get((dst, dport))
        if sock is None:
            self.drops["udp_no_socket"] += 1
            self._emit(dst, src, *port_unreachable(version, src, dst, packet))
            return
        if not sock.enqueue(payload, (_address(src), sport)):
            self.drops["udp_queue_full"] += 1
            return
        self._event(UdpReadable(sock))

    def _receive_tcp(self, src: bytes, dst: bytes, segment: memoryview, now: float) -> None:
        if len(segment) < 20:
            self.drops["malformed_tcp"] += 1
            return
        sport, dport = _PORTS.unpack_from(segment)
        conn = self.tcp.get((dst, dport, src, sport))
        if conn is not None:
            conn.receive_segment(segment, now)
            self._active.add(conn)
            return
        listener = self._listeners.get(dport)
        if listener is not None and (listener.local_ip is None or listener.local_ip.packed == dst):
            local, remote = (_address(dst), dport), (_address(src), sport)
            new = listener.offer(local, remote, segment, now)
            if new is DEFER:
                return  # held unanswered until the listener's owner settles it
            if new is not None:
                self.adopt((dst, dport, src, sport), new)
                return
        # RFC 9293 3.10.7.1: ACK set -> <SEQ=SEG.ACK><CTL=RST>; else <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>;
        # a RST is never answered. It is also what ends a connection a dead process left (leftovers.py).
        self.drops["tcp_no_connection"] += 1
        reset = reset_for((_address(dst), dport), (_address(src), sport), segment)
        if reset is None:
            return
        if not self.reset_limit.allow(now):
            self.drops["tcp_reset_rate_limited"] += 1
            return
        self._emit(dst, src, PROTO_TCP, reset)
        self.counters["tcp_resets_for_no_connection"] += 1

    # ---- timers -------------------------------------------------------------------------------------
    def next_timer(self) -> float | None:
        """The earliest deadline of any TCP connection or of the fragment reassembly (seconds, the caller's
        clock), or None."""
        deadline = min((d for conn in self.tcp.values() if (d := conn.next_timer()) is not None), default=None)
        fragments = self.fragments.next_deadline()
        if fragments is not None and (deadline is None or fragments < deadline):
            return fragments
        return deadline

    def defer_retransmissions(self, until: float) -> None:
        """The transport below is stalled but reliable (TCP over TCP): hold every connection's retransmission
        timeout until `until` (see TcpConnection.defer_rto)."""
        for conn in self.tcp.values():
            conn.defer_rto(until)

    def path_restored(self, now: float) -> None:
        """The tunnel's path came back after an outage: every connection in retransmission backoff resends now
        (TcpConnection.path_restored); the segments come out of the next pulls."""
        for conn in list(self.tcp.values()):
            if conn.path_restored(now):
                conn.handle_timer(now)
                self._active.add(conn)

    def handle_timers(self, now: float) -> None:
        """Fire every TCP timer due at `now` and time out the datagrams in reassembly whose time is up (an ICMP
        time exceeded, code 1, to the sender of each whose first fragment came: RFC 792, RFC 4443 3.3); their
        segments, packets and events come out of the next pulls."""
        for conn in list(self.tcp.values()):
            deadline = conn.next_timer()
            if deadline is not None and deadline <= now:
                conn.handle_timer(now)
                self._active.add(conn)
        deadline = self.fragments.next_deadline()
        if deadline is not None and deadline <= now:
            for version, src, dst, quote in self.fragments.expire(now):
                if version == 4:
                    error = icmp.build_error(4, V4_TIME_EXCEEDED, CODE_REASSEMBLY_TIME_EXCEEDED, 0, quote)
                    self._emit(dst, src, PROTO_ICMP, error)
                else:
                    error = icmp.build_error(6, V6_TIME_EXCEEDED, CODE_REASSEMBLY_TIME_EXCEEDED, 0, quote, dst, src)
                    self._emit(dst, src, PROTO_ICMPV6, error)

    # ---- user API ------------------------------------------------------------------------------------
    def send_echo(self, dst: IPAddress, ident: int, seq: int, payload: bytes, now: float) -> None:
        """Send an ICMP echo request (RFC 792 / RFC 4443 4.1) to `dst`; the answer is an `EchoReply` event. A
        request bigger than the path MTU leaves in fragments, as Linux's ping sends it. Raises OSError:
        ENETUNREACH when the interface has no address of that family, EMSGSIZE past what a datagram holds
        (65,507 bytes of payload over IPv4, 65,527 over IPv6)."""
        src = self._source_for(dst)
        version = dst.version
        if len(payload) > UDP_MAX_PAYLOAD[version]:  # the same 8-byte header and 16-bit lengths as UDP
            raise OSError(90, f"an echo of {len(payload)} bytes exceeds the maximum of {UDP_MAX_PAYLOAD[version]}")
        message = icmp.build_echo(version, True, ident, seq, payload, src, dst.packed)
        self.emit_datagram(src, dst.packed, PROTO_ICMP if version == 4 else PROTO_ICMPV6, message)

    def unbind_udp(self, local: bytes, port: int) -> None:
        """Forget the UDP socket bound to (local, port); later datagrams to it get ICMP port unreachable."""
        self._udp.pop((local, port), None)

    def _source_for(self, dst: IPAddress) -> bytes:
        src = self.local_v4 if dst.version == 4 else self.local_v6
        if src is None:
            raise OSError(101, f"no IPv{dst.version} Address in the tunnel's [Interface] to reach {dst} from")
        return src

    def udp_open(self, local_port: int | None = None, family: int = 4) -> UdpSocket:
        """A new UDP socket on our IPv`family` address and `local_port` (None: an ephemeral port, 49152-65535).
        Raises OSError: no address of that family (ENETUNREACH), port in use (EADDRINUSE)."""
        local = self.local_v4 if family == 4 else self.local_v6
        if local is None:
            raise OSError(101, f"no IPv{family} Address in the tunnel's [Interface]")
        port = local_port or self._ephemeral_port(lambda p: (local, p) not in self._udp)
        if (local, port) in self._udp:
            raise OSError(98, f"UDP port {port} is in use")
        sock = UdpSocket(self, local, port)
        self._udp[(local, port)] = sock
        return sock

    def _ephemeral_port(self, free: Callable[[int], bool]) -> int:
        span = EPHEMERAL_HIGH - EPHEMERAL_LOW + 1
        for _ in range(span):
            port = self._next_port
            self._next_port = EPHEMERAL_LOW + (port - EPHEMERAL_LOW + 1) % span
            if free(port):
                return port
        raise OSError(99, "no free ephemeral port")

    def tcp_connect(self, dst: IPAddress, port: int, now: float, *, timeout: float = 15.0) -> Any:
        """Open a TCP connection to (dst, port) at `now` (RFC 9293 3.5): the SYN goes out with the next
        `packets_to_send`; `timeout` seconds for the handshake. The MSS follows the path MTU. Raises OSError when
        there is no source address of that family or no free ephemeral port."""
        src = self._source_for(dst)
        remote = dst.packed
        # Never reuse a 4-tuple still in the table, TIME_WAIT included.
        local_port = self._ephemeral_port(lambda p: (src, p, remote, port) not in self.tcp)
        mss = self.path_mtu(remote) - (40 if dst.version == 4 else 60)
        conn = TcpConnection.connect((_address(src), local_port), (dst, port), now, options=self.tcp_options,
                                     rng=self.rng, mss=mss, timeout=timeout)
        self.tcp[(src, local_port, remote, port)] = conn
        self._active.add(conn)
        self._share_window(conn)
        return conn

    def adopt(self, key: tuple[bytes, int, bytes, int], conn: TcpConnection) -> None:
        """Take a connection (one a listener settled) into the table under `key`."""
        self.tcp[key] = conn
        self._active.add(conn)
        self._share_window(conn)

    def _share_window(self, conn: TcpConnection) -> None:
        cap = max(MIN_CONNECTION_WINDOW, SHARED_RECEIVE_BUDGET // max(1, len(self.tcp)))
        conn.window_cap = min(conn.opts.recv_buffer, cap)
        if len(self.tcp) % 16 == 0:  # now and then, bring the others in line with the new share
            for other in self.tcp.values():
                other.window_cap = min(other.opts.recv_buffer, cap)

    def tcp_listen(self, port: int, local_ip: IPAddress | None = None, backlog: int = 128) -> TcpListener:
        """Listen on TCP `port` (on `local_ip` only, or any of ours); at most `backlog` connections wait for
        `accept`. Raises OSError (EADDRINUSE) if the port already listens."""
        if port in self._listeners:
            raise OSError(98, f"TCP port {port} is already listening")
        listener = TcpListener(self, port, local_ip, backlog)
        self._listeners[port] = listener
        return listener

    # ---- what a TcpListener may ask of its stack (tcp/listener.py's ListenerHost) -------------------------
    def announce(self, event: NetstackEvent) -> None:
        """Queue `event` for the next `events()` (bounded: MAX_EVENTS)."""
        self._event(event)

    def send_tcp(self, src: bytes, dst: bytes, segment: bytes) -> None:
        """Send one TCP segment from `src` to `dst` (raw addresses)."""
        self._emit(src, dst, PROTO_TCP, segment)

    def stop_listening(self, port: int) -> None:
        """Forget the listener on `port`; later SYNs to it are answered with a reset."""
        self._listeners.pop(port, None)

    def open_connections(self) -> list[FourTuple]:
        """The 4-tuples the server may hold now (all but SYN_SENT, TIME_WAIT, CLOSED): leftovers.py's record."""
        return [FourTuple(_address(k[0]), k[1], _address(k[2]), k[3]) for k, conn in self.tcp.items()
                if conn.state not in (CLOSED, SYN_SENT, TIME_WAIT)]

    def probe_leftover(self, connection: FourTuple, now: float) -> bool:
        """Send the SYN (ISN from `rng`) that ends `connection`, left on the server by a dead process: the
        server's challenge ACK or SYN-ACK meets the closed-port rule, whose RST it accepts (leftovers.py). False
        (nothing sent) when the 4-tuple is ours now, or its address is not."""
        src, dst = connection.local_ip.packed, connection.remote_ip.packed
        if src not in self._local or (src, connection.local_port, dst, connection.remote_port) in self.tcp:
            return False
        isn = int.from_bytes(self.rng(4), "big")
        self._emit(src, dst, PROTO_TCP, probe_segment(connection, isn))
        self.counters["tcp_leftover_probes"] += 1
        return True

    def wake(self, conn: TcpConnection) -> None:
        """The user side changed a connection (sent, read, closed): collect its segments on the next pull."""
        self._active.add(conn)

    def stats(self) -> dict[str, object]:
        """{"connections": int, "drops": {reason: count}, plus the counters (packets_in, packets_out, ...)}."""
        return {"connections": len(self.tcp), "drops": dict(self.drops), **self.counters,
                "reassembly_datagrams": self.fragments.datagrams, "reassembly_bytes": self.fragments.held_bytes}

