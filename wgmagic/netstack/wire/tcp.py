"""TCP header and options (RFC 9293, 7323, 2018): parse and build, nothing else."""

from __future__ import annotations

import struct
from typing import NamedTuple

from wgmagic.netstack.wire.checksum import transport_checksum

HEADER = struct.Struct("!HHIIBBHHH")
FIN, SYN, RST, PSH, ACK, URG = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
PROTO_TCP = 6
OPT_END, OPT_NOP, OPT_MSS, OPT_WSCALE, OPT_SACK_OK, OPT_SACK, OPT_TS = 0, 1, 2, 3, 4, 5, 8
_TS_FAST = struct.Struct("!BBBBII")  # NOP NOP TS(10): the only option Linux puts on established segments
_TS_FAST_PREFIX = bytes((OPT_NOP, OPT_NOP, OPT_TS, 10))
_TS = struct.Struct("!II")
_TS_HEADER = struct.Struct("!HHIIBBHHHBBBBII")  # the header and NOP NOP TS(10): 32 bytes
TS_FAST_PREFIX = _TS_FAST_PREFIX


class Options(NamedTuple):
    """TCP options of one segment: MSS (RFC 9293 3.2), window scale (RFC 7323 2), SACK-permitted and SACK
    blocks (RFC 2018), timestamps (TSval, TSecr; RFC 7323 3). Sequence values as on the wire (mod 2**32)."""

    mss: int | None = None
    wscale: int | None = None
    sack_ok: bool = False
    ts: tuple[int, int] | None = None  # (TSval, TSecr)
    sack: tuple[tuple[int, int], ...] = ()


NO_OPTIONS = Options()


def parse_options(data: bytes | memoryview) -> Options | None:
    """None when the options are malformed (a length running past the end, a zero length)."""
    if len(data) == 12 and bytes(data[:4]) == _TS_FAST_PREFIX:
        return Options(ts=_TS.unpack_from(data, 4))
    mss = wscale = ts = None
    sack_ok = False
    sack: list[tuple[int, int]] = []
    i, end = 0, len(data)
    while i < end:
        kind = data[i]
        if kind == OPT_END:
            break
        if kind == OPT_NOP:
            i += 1
            continue
        if i + 1 >= end:
            return None
        length = data[i + 1]
        if length < 2 or i + length > end:
            return None
        body = data[i + 2:i + length]
        if kind == OPT_MSS and length == 4:
            mss = int.from_bytes(body, "big")
        elif kind == OPT_WSCALE and length == 3:
            wscale = min(body[0], 14)
        elif kind == OPT_SACK_OK and length == 2:
            sack_ok = True
        elif kind == OPT_TS and length == 10:
            ts = _TS.unpack(bytes(body))
        elif kind == OPT_SACK and (length - 2) % 8 == 0:
            for j in range(0, length - 2, 8):
                sack.append(_TS.unpack(bytes(body[j:j + 8])))
        i += length
    return Options(mss, wscale, sack_ok, ts, tuple(sack[:4]))


def build_options(*, mss: int | None = None, wscale: int | None = None, sack_ok: bool = False,
                  ts: tuple[int, int] | None = None, sack: tuple[tuple[int, int], ...] = ()) -> bytes:
    """The options bytes (padded to 4) in the order Linux writes them; at most 3 SACK blocks with timestamps,
    4 without (RFC 2018 3)."""
    out = bytearray()
    if mss is not None:
        out += struct.pack("!BBH", OPT_MSS, 4, mss)
    if sack_ok:
        out += bytes((OPT_SACK_OK, 2))
    if ts is not None:
        out += _TS_FAST.pack(OPT_NOP, OPT_NOP, OPT_TS, 10, ts[0], ts[1])
    if wscale is not None:
        out += bytes((OPT_NOP, OPT_WSCALE, 3, wscale))
    if sack:
        blocks = sack[:3 if ts is not None else 4]
        out += bytes((OPT_NOP, OPT_NOP, OPT_SACK, 2 + 8 * len(blocks)))
        for left, right in blocks:
            out += _TS.pack(left, right)
    while len(out) % 4:
        out.append(OPT_NOP)
    return bytes(out)


def build_segment(src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int, flags: int, window: int,
                  options: bytes = b"", payload: bytes | memoryview = b"") -> bytes:
    """A TCP segment from `src` to `dst` (raw addresses, for the checksum's pseudo-header): header,
    `options` (already padded) and `payload`; seq/ack are taken mod 2**32, window capped at 65535."""
    return build_segment_from(pseudo_sum(src, dst), sport, dport, seq, ack, flags, window, options, payload)


def pseudo_sum(src: bytes, dst: bytes) -> int:
    """The pseudo-header's fixed part for TCP between two raw addresses (RFC 9293 3.1, RFC 8200 8.1), as an
    unfolded sum: the addresses read as integers plus the protocol. A connection computes it once; every
    part of the Internet checksum of an even length adds up this way modulo 0xFFFF (2**16 == 1 mod 0xFFFF)."""
    return int.from_bytes(src, "big") + int.from_bytes(dst, "big") + PROTO_TCP


def _fold(total: int) -> int:
    """The checksum field for an unfolded sum that is never 0 here (the length alone makes it positive)."""
    return ~(total % 0xFFFF or 0xFFFF) & 0xFFFF


def build_segment_from(pseudo: int, sport: int, dport: int, seq: int, ack: int, flags: int, window: int,
                       options: bytes = b"", payload: bytes | memoryview = b"") -> bytes:
    """`build_segment` with the pseudo-header sum (`pseudo_sum`) already known: the same bytes, one copy of
    the payload (the checksum is summed over the header and the payload apart, then the header is packed)."""
    offset = ((20 + len(options)) // 4) << 4
    seq &= 0xFFFFFFFF
    ack &= 0xFFFFFFFF
    window = min(window, 0xFFFF)
    head = HEADER.pack(sport, dport, seq, ack, offset, flags, window, 0, 0) + options
    size = len(payload)
    if len(head) % 2:  # unpadded options of an odd length: the payload's words straddle, sum it whole
        data = int.from_bytes(head + bytes(payload), "big")
        total = pseudo + len(head) + size + ((data << 8) if (len(head) + size) % 2 else data)
    else:
        data = int.from_bytes(payload, "big") if size else 0
        total = pseudo + len(head) + size + int.from_bytes(head, "big") + ((data << 8) if size % 2 else data)
    return HEADER.pack(sport, dport, seq, ack, offset, flags, window, _fold(total), 0) + options + payload


def build_ts_segment(pseudo: int, sport: int, dport: int, seq: int, ack: int, flags: int, window: int,
                     tsval: int, tsecr: int, payload: bytes | memoryview = b"") -> bytes:
    """The segment an established connection with timestamps sends (RFC 7323 3.2: NOP, NOP, TS as Linux
    writes them, 32 bytes of header), packed in one go: the same bytes as `build_segment` with
    `build_options(ts=(tsval, tsecr))`. `tsval`/`tsecr` are wire values (< 2**32), window already scaled."""
    seq &= 0xFFFFFFFF
    ack &= 0xFFFFFFFF
    window = min(window, 0xFFFF)
    size = len(payload)
    data = int.from_bytes(payload, "big") if size else 0
    head = _TS_HEADER.pack(sport, dport, seq, ack, 0x80, flags, window, 0, 0, OPT_NOP, OPT_NOP, OPT_TS, 10,
                           tsval, tsecr)
    total = pseudo + 32 + size + int.from_bytes(head, "big") + ((data << 8) if size % 2 else data)
    return _TS_HEADER.pack(sport, dport, seq, ack, 0x80, flags, window, _fold(total), 0, OPT_NOP, OPT_NOP, OPT_TS,
                           10, tsval, tsecr) + payload


def checksum_ok(src: bytes, dst: bytes, segment: bytes | memoryview) -> bool:
    """Whether the segment's checksum verifies against the pseudo-header (RFC 9293 3.1)."""
    return transport_checksum(src, dst, PROTO_TCP, segment) == 0
