"""Packet capture of a tunnel, written as pcapng (readable by Wireshark and tshark).

Interface 0 (LINKTYPE_RAW: each packet starts with its IPv4 or IPv6 header) holds the inner IP packets in both
directions, as they cross between the WireGuard device and this process's IP stack; each Enhanced Packet
Block carries its direction in `epb_flags` (inbound: decrypted from the peer; outbound: to be encrypted).
With `outer=True`, interface 1 (also LINKTYPE_RAW) holds the WireGuard UDP datagrams as sent and received;
their IP and UDP headers are rebuilt here (the kernel's socket hides them) as they were on the wire (lengths and
checksums of the whole datagram), the WireGuard message is what went over the wire.

Payload capture is off unless asked: a packet is then cut after its transport header (IP header + TCP header
with options, or the 8 bytes of a UDP or ICMP header), and an outer datagram after WireGuard's 16-byte message
header, so the file holds no query data, only what a network admin needs (addresses, ports, flags, sequence
numbers, windows, sizes). A cut packet keeps its original lengths: in its IP and UDP headers (IPv4 total
length, IPv6 payload length, UDP length) and in its block's original-length field, so Wireshark and tshark
decode it as the packet it was ("[Packet size limited during capture]"), WireGuard included.

The file is the one named when the capture started: a relative path is resolved then (`wgmagic.files`), and it
is written whole at the end, atomically and mode 0600, replacing whatever was at that path (a symlink there is
replaced, never followed). The capture is bounded: it stops by itself after `max_packets` packets or
`max_bytes` captured bytes (or after `seconds`), and then the file is written (by an executor thread, never on
the loop thread). Formats: pcapng, draft-ietf-opsawg-pcapng (section header, interface description, enhanced
packet blocks); link types: draft-ietf-opsawg-pcaplinktype (LINKTYPE_RAW = 101). The blocks are written with
python-pcapng.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import struct
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from wgmagic import files

if TYPE_CHECKING:
    import asyncio

    from wgmagic.runtime.engine import Engine
    from wgmagic.runtime.tunnel import Tunnel

LINKTYPE_RAW = 101
INBOUND, OUTBOUND = 1, 2  # epb_flags bits 0-1 (pcapng section 4.3.1)
DEFAULT_MAX_PACKETS = 100_000
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
WIREGUARD_HEADER = 16  # type, reserved, receiver index, counter (whitepaper 5.4.6)
_PROTO_TCP, _PROTO_UDP, _PROTO_ICMP, _PROTO_ICMPV6 = 6, 17, 1, 58


@dataclass(frozen=True)
class Record:
    """One captured packet: `timestamp` in seconds since the Unix epoch, `interface` 0 (inner) or 1 (outer),
    `inbound` direction, `data` the captured bytes (maybe cut), `length` the packet's original length."""

    timestamp: float
    interface: int
    inbound: bool
    data: bytes
    length: int


def header_length(packet: bytes | memoryview) -> int:
    """Bytes of `packet` (an IPv4 or IPv6 packet) up to the end of its TCP, UDP or ICMP header: what a capture
    without payload keeps. Unknown or malformed packets keep their IP header only (at most the whole packet)."""
    size = len(packet)
    if size < 1:
        return 0
    version = packet[0] >> 4
    if version == 4 and size >= 20:
        ip_len, proto = (packet[0] & 0x0F) * 4, packet[9]
        fragment_offset = struct.unpack_from("!H", packet, 6)[0] & 0x1FFF
        if fragment_offset:
            return min(size, ip_len)  # a later fragment has no transport header
    elif version == 6 and size >= 40:
        ip_len, proto = 40, packet[6]
    else:
        return min(size, 20 if version == 4 else 40)
    if proto == _PROTO_TCP and size >= ip_len + 13:
        transport = (packet[ip_len + 12] >> 4) * 4
        return min(size, ip_len + max(20, transport))
    if proto in (_PROTO_UDP, _PROTO_ICMP, _PROTO_ICMPV6):
        return min(size, ip_len + 8)
    return min(size, ip_len)


def udp_packet(src: tuple[str, int], dst: tuple[str, int], payload: bytes, keep: int | None = None) -> bytes:
    """An IPv4 or IPv6 packet carrying `payload` in UDP from `src` to `dst` (both (address, port) of one
    family), with correct lengths and IP and UDP checksums: how an outer WireGuard datagram looked on the wire.
    With `keep`, only the first `keep` bytes of the payload follow the headers, which still carry the lengths
    and checksum of the whole datagram (a capture cut as `tcpdump -s` cuts); the original length is then
    `udp_packet_length(src, payload)`."""
    from wgmagic.netstack.wire.checksum import internet_checksum, transport_checksum

    source, destination = ipaddress.ip_address(src[0]), ipaddress.ip_address(dst[0])
    length = 8 + len(payload)
    udp = bytearray(struct.pack("!HHHH", src[1], dst[1], length & 0xFFFF, 0) + payload)
    checksum = transport_checksum(source, destination, _PROTO_UDP, udp) or 0xFFFF
    struct.pack_into("!H", udp, 6, checksum)
    kept = bytes(udp if keep is None else udp[:8 + max(0, keep)])
    if source.version == 4:
        header = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, (20 + length) & 0xFFFF, 0, 0x4000, 64,
                                       _PROTO_UDP, 0, source.packed, destination.packed))
        struct.pack_into("!H", header, 10, internet_checksum(header))
        return bytes(header) + kept
    return struct.pack("!IHBB16s16s", 6 << 28, length & 0xFFFF, _PROTO_UDP, 64, source.packed,
                       destination.packed) + kept


def udp_packet_length(src: tuple[str, int], payload: bytes) -> int:
    """Bytes of the whole IP packet `udp_packet(src, ..., payload)` stands for: IP header (20 or 40) + 8 + payload."""
    return (40 if ipaddress.ip_address(src[0]).version == 6 else 20) + 8 + len(payload)


def write_pcapng(stream: BinaryIO, records: Iterable[Record], *, outer: bool = False, payload: bool = False,
                 comment: str | None = None) -> int:
    """Write a pcapng section to `stream`: interface 0 the inner packets, interface 1 (when `outer`) the
    outer datagrams, each record as an Enhanced Packet Block with microsecond timestamps and its direction.
    Records with no bytes are left out. Returns the number of packets written."""
    from pcapng import FileWriter, blocks

    shb_options = {"shb_userappl": "wgmagic"}
    if comment:
        shb_options["opt_comment"] = comment
    shb = blocks.SectionHeader(options=shb_options)
    cut = "" if payload else ", cut after the transport header (no payload)"
    shb.new_member(blocks.InterfaceDescription, link_type=LINKTYPE_RAW, snaplen=0,
                   options={"if_name": "wgmagic-inner",
                            "if_description": f"inner IP packets of the WireGuard tunnel{cut}"})
    if outer:
        shb.new_member(blocks.InterfaceDescription, link_type=LINKTYPE_RAW, snaplen=0,
                       options={"if_name": "wgmagic-outer",
                                "if_description": "WireGuard UDP datagrams; IP and UDP headers rebuilt by "
                                                  f"wgmagic{'' if payload else ', cut after the WireGuard header'}"
                                                  "; lengths as on the wire"})
    writer = FileWriter(stream, shb)
    count = 0
    for record in records:
        if (record.interface and not outer) or not record.data:
            continue  # an empty record (never captured: every packet has a header) has nothing to show
        epb = shb.new_member(blocks.EnhancedPacket, interface_id=record.interface,
                             options={"epb_flags": INBOUND if record.inbound else OUTBOUND})
        micros = round(record.timestamp * 1_000_000)
        epb.timestamp_high, epb.timestamp_low = micros >> 32, micros & 0xFFFFFFFF
        epb.packet_data = record.data
        epb.packet_len = record.length
        writer.write_block(epb)
        count += 1
    return count


class Capture:
    """A running capture on one tunnel; created by `Tunnel.capture` (thread-safe methods).

    Attributes: `path` (the pcapng file: absolute, resolved when the capture started), `packets` and
    `captured_bytes` so far, `stopped_by` (None while running; then "stop", "seconds", "packets", "bytes" or
    "closed"), `written` (packets in the file). OSError (naming the absolute path) when no file can be
    written there; ValueError for a bad bound.
    """

    def __init__(self, tunnel: Tunnel, path: str | os.PathLike[str], *, seconds: float | None = None,
                 max_packets: int = DEFAULT_MAX_PACKETS, max_bytes: int = DEFAULT_MAX_BYTES,
                 payload: bool = False, outer: bool = False) -> None:
        if max_packets < 1 or max_bytes < 1:
            raise ValueError("max_packets and max_bytes must be positive")
        if seconds is not None and seconds <= 0:
            raise ValueError("seconds must be positive")
        # Resolved now (a later chdir, such as %cd, changes nothing) and proved writable now, so a bad path fails
        # here, not at the end; nothing is created until the file is written whole (0600: it may hold query data).
        self.path: Path = files.check_writable(path)
        self.tunnel = tunnel
        self.seconds = seconds
        self.max_packets = max_packets
        self.max_bytes = max_bytes
        self.payload = payload
        self.outer = outer
        self.records: list[Record] = []
        self.packets = 0
        self.captured_bytes = 0
        self.stopped_by: str | None = None
        self.written: int | None = None
        self.error: BaseException | None = None
        self._done = threading.Event()
        self._engine: Engine = tunnel.runtime_engine
        self._clock_offset = time.time() - time.monotonic()
        self._timer: asyncio.TimerHandle | None = None
        self._local_for: dict[str, str] = {}
        tunnel.call_on_loop(self._start)

    def __repr__(self) -> str:
        state = "running" if self.stopped_by is None else f"stopped ({self.stopped_by})"
        return f"<Capture {self.path} {state}: {self.packets} packets>"

    # ---- loop thread ---------------------------------------------------------------------------------
    def _start(self) -> None:
        engine = self._engine
        if engine.tap is not None:
            raise RuntimeError(f"tunnel {self.tunnel.name!r} already has a capture running: stop it first")
        engine.tap = self
        if self.outer:  # received datagrams: the carrier's tap, kept when the transport switches
            engine.carrier.tap_received(self.outer_received)
        if self.seconds is not None:
            self._timer = engine.loop.call_later(self.seconds, self._stop_on_loop, "seconds")

    def inner(self, packets: list[bytes], inbound: bool, now: float) -> None:
        """The engine's tap: inner IP packets crossing the device (inbound: from the peer)."""
        for packet in packets:
            data = bytes(packet) if self.payload else bytes(packet[:header_length(packet)])
            if not self._add(0, inbound, data, len(packet), now):
                return

    def outer_received(self, data: bytes, addr: tuple[str, int], now: float) -> None:
        """The carrier's outer tap: one datagram received from `addr`, whichever transport carries them."""
        if self._engine.tap is self:
            self._add(1, True, *self._outer_packet(addr, data, inbound=True), now)

    def outer_sent(self, datagrams: list[tuple[bytes, tuple[str, int]]], now: float) -> None:
        if not self.outer:
            return
        for data, addr in datagrams:
            if not self._add(1, False, *self._outer_packet(addr, data, inbound=False), now):
                return

    def _outer_packet(self, peer: tuple[str, int], data: bytes, *, inbound: bool) -> tuple[bytes, int]:
        """(the captured bytes, the original length) of one outer datagram: the whole IP/UDP packet's headers
        as on the wire, followed by the WireGuard message (its 16-byte header only, without payload)."""
        local = (self._local_address(peer[0]), self._engine.local_port)
        src, dst = (peer, local) if inbound else (local, peer)
        keep = None if self.payload else WIREGUARD_HEADER
        return udp_packet(src, dst, data, keep), udp_packet_length(src, data)

    def _local_address(self, remote: str) -> str:
        """The address this machine sends from to `remote` (a connected UDP socket sends nothing)."""
        found = self._local_for.get(remote)
        if found is None:
            family = socket.AF_INET6 if ":" in remote else socket.AF_INET
            found = "::" if family == socket.AF_INET6 else "0.0.0.0"
            with contextlib.suppress(OSError), socket.socket(family, socket.SOCK_DGRAM) as probe:
                probe.connect((remote, 9))
                found = probe.getsockname()[0]
            self._local_for[remote] = found
        return found

    def _add(self, interface: int, inbound: bool, data: bytes, length: int, now: float) -> bool:
        if self.stopped_by is not None:
            return False
        if self.packets >= self.max_packets:
            self._stop_on_loop("packets")
            return False
        if self.captured_bytes + len(data) > self.max_bytes:
            self._stop_on_loop("bytes")
            return False
        self.records.append(Record(now + self._clock_offset, interface, inbound, data, length))
        self.packets += 1
        self.captured_bytes += len(data)
        return True

    def _stop_on_loop(self, reason: str) -> None:
        if self.stopped_by is not None:
            return
        self.stopped_by = reason
        engine = self._engine
        if engine.tap is self:
            engine.tap = None
        if self.outer and engine.carrier.outer_tap == self.outer_received:
            engine.carrier.tap_received(None)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if reason == "closed":
            threading.Thread(target=self._write, name="wgmagic-capture", daemon=True).start()
        else:
            engine.loop.run_in_executor(None, self._write)

    def _write(self) -> None:
        try:
            with files.replace(self.path, private=True) as stream:
                comment = f"wgmagic tunnel {self.tunnel.name}; stopped by {self.stopped_by}"
                self.written = write_pcapng(stream, self.records, outer=self.outer, payload=self.payload,
                                            comment=comment)
        except BaseException as exc:  # reported by wait()/stop()
            self.error = exc
        finally:
            self.records = []
            self._done.set()

    # ---- any thread ------------------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        """True once the capture stopped and its file is written."""
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> Path:
        """Wait until the capture stopped by itself (seconds, or a bound) and its file is written; returns the
        path. Raises TimeoutError when it is still running after `timeout` seconds, OSError if writing failed."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"the capture to {self.path} is still running after {timeout:g} s")
        if self.error is not None:
            raise self.error
        return self.path

    def stop(self, timeout: float = 60.0) -> Path:
        """Stop capturing (if still running), write the file and return its path."""
        if self.stopped_by is None and not self.tunnel.closed:
            with contextlib.suppress(Exception):
                self.tunnel.call_on_loop(self._stop_on_loop, "stop")
        if self.stopped_by is None:  # the tunnel is gone: nothing taps any more
            self.stopped_by = "closed"
            self._write()
        return self.wait(timeout)

    def close_on_loop(self) -> None:
        """The tunnel is closing: stop and write what was captured."""
        self._stop_on_loop("closed")

    def __enter__(self) -> Capture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
