"""IP fragment reassembly (RFC 791 3.2, RFC 8200 4.5) and the Identification values of fragmented datagrams.

Sans-I/O: fragments come in as `wire.ip.Fragment` with the clock as `now` (seconds); a complete datagram comes
back out as one whole IP packet (its header rebuilt as if it had never been cut), which the stack parses like
any other. The stack drives expiry with its own timer: `next_deadline()` joins `Stack.next_timer()`, and
`Stack.handle_timers(now)` calls `expire(now)`.

What keeps reassembly from becoming a memory attack (RFC 8200 4.5, RFC 4963, RFC 5722; Linux's
`ipfrag_high_thresh` is the model for the total):

- every datagram waits at most `timeout_v4` (30 s, as Linux) or `timeout_v6` (60 s, RFC 8200) after its first
  fragment arrived; then it is dropped (`fragment_timeout`) and `expire` returns its first fragment, if that
  came, for an ICMP time exceeded (code 1, RFC 792 / RFC 4443 3.3);
- what is held is charged as its data plus FRAGMENT_OVERHEAD per fragment and DATAGRAM_OVERHEAD per datagram
  (so a storm of 8-byte fragments costs what it really costs), at most `max_bytes_per_source` per source
  address and `max_bytes` in all; a fragment that would pass either bound first evicts that source's oldest
  datagrams (then the oldest of all), `fragment_evicted` each: a source's garbage crowds out only its own
  datagrams, and fresh datagrams win over stale ones;
- at most `max_fragments` fragments per datagram (`fragment_too_many`, the datagram dropped);
- a fragment that overlaps another of its datagram discards the whole datagram, and the fragments of it that
  are still to come (RFC 5722, RFC 8200 4.5; for IPv4 too, as Linux since CVE-2018-5391): its key is
  remembered until its deadline (at most `max_discarded` keys); an exact duplicate (same offset, same bytes)
  is dropped alone (`fragment_duplicate`), as RFC 8200 allows;
- a last fragment that contradicts another's end, or data past the end, discard the datagram
  (`fragment_inconsistent`), as does a reassembled datagram longer than 65,535 bytes (`fragment_too_long`);
- an atomic fragment (IPv6, offset 0 and M clear, RFC 6946) is a whole packet at once, never queued and never
  mixed with the fragments of any other datagram.

Drops are counted in the `drops` counter passed in (the stack's), by those reasons.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter, OrderedDict
from collections.abc import Callable

from wgmagic.netstack.wire.checksum import internet_checksum
from wgmagic.netstack.wire.ip import IPV4_MAX_TOTAL, IPV6_MAX_PAYLOAD, Fragment

TIMEOUT_V4 = 30.0  # seconds: Linux's ipfrag_time (RFC 4963: IPv4's 16-bit Identification wraps at speed)
TIMEOUT_V6 = 60.0  # seconds: RFC 8200 4.5
MAX_BYTES = 4 * 1024 * 1024  # in all: Linux's ipfrag_high_thresh
MAX_BYTES_PER_SOURCE = 1024 * 1024
MAX_FRAGMENTS = 256  # per datagram: 65,535 bytes in fragments of an MTU of 576 take 118
MAX_DISCARDED = 1024  # keys of datagrams discarded whole, remembered until their deadline
FRAGMENT_OVERHEAD = 128  # bytes charged per fragment held besides its data (the objects that hold it)
DATAGRAM_OVERHEAD = 1024  # bytes charged per datagram in reassembly (its header, key, lists, table entries)

Key = tuple[bytes, bytes, int, int]  # (source, destination, identification, protocol (IPv4) or -1 (IPv6))
Expired = tuple[int, bytes, bytes, bytes]  # (version, source, destination, the first fragment's first bytes)


class _Datagram:
    """The fragments of one datagram so far, sorted by offset and never overlapping."""

    __slots__ = ("charge", "chunks", "deadline", "ends", "header", "key", "next_at", "proto", "received", "src",
                 "starts", "total", "version")

    def __init__(self, key: Key, version: int, src: bytes, deadline: float) -> None:
        self.key = key
        self.version = version
        self.src = src
        self.deadline = deadline
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.chunks: list[bytes] = []
        self.received = 0  # data bytes held
        self.total: int | None = None  # the fragmentable part's length, once the last fragment came
        self.header = b""  # the first fragment's header (offset 0), once it came
        self.next_at = -1
        self.proto = -1
        self.charge = 0  # bytes charged against the bounds (Reassembler._charge)


class Reassembler:
    """Reassembly of IPv4 and IPv6 fragments addressed to us, bounded in time and memory (see the module).

    `add(fragment, now) -> bytes | None`: the whole packet when `fragment` completes a datagram;
    `next_deadline() -> float | None`; `expire(now) -> [(version, src, dst, quote)]`; `held_bytes` (what is
    charged now), `datagrams` (how many are in reassembly). Never raises on what the network sends."""

    def __init__(self, drops: Counter[str] | None = None, *, timeout_v4: float = TIMEOUT_V4,
                 timeout_v6: float = TIMEOUT_V6, max_bytes: int = MAX_BYTES,
                 max_bytes_per_source: int = MAX_BYTES_PER_SOURCE, max_fragments: int = MAX_FRAGMENTS,
                 max_discarded: int = MAX_DISCARDED) -> None:
        self.drops: Counter[str] = drops if drops is not None else Counter()
        self.timeouts = {4: timeout_v4, 6: timeout_v6}
        self.max_bytes = max_bytes
        self.max_bytes_per_source = max_bytes_per_source
        self.max_fragments = max_fragments
        self.max_discarded = max_discarded
        # Per version, oldest first: with one timeout per version, also earliest deadline first.
        self._pending: dict[int, OrderedDict[Key, _Datagram]] = {4: OrderedDict(), 6: OrderedDict()}
        self._by_source: dict[bytes, OrderedDict[Key, None]] = {}
        self._source_bytes: Counter[bytes] = Counter()
        self._discarded: OrderedDict[Key, float] = OrderedDict()  # key -> until when its fragments are dropped
        self.held_bytes = 0
        self.reassembled = 0

    def __repr__(self) -> str:
        return f"<Reassembler {self.datagrams} datagrams, {self.held_bytes} bytes>"

    @property
    def datagrams(self) -> int:
        return len(self._pending[4]) + len(self._pending[6])

    # ---- input ----------------------------------------------------------------------------------------
    def add(self, fragment: Fragment, now: float) -> bytes | None:
        """Take one fragment at `now`; the reassembled IP packet (bytes) when it completes its datagram,
        else None (held, or dropped and counted)."""
        version, src, dst, ident, offset, more, proto, header, next_at, data = fragment
        end = offset + len(data)
        if offset == 0 and not more:  # an atomic fragment (RFC 6946): alone, at once
            return self._whole(version, header, next_at, proto, [bytes(data)], end)
        key = (src, dst, ident, proto if version == 4 else -1)
        until = self._discarded.get(key)
        if until is not None:
            if until > now:
                self.drops["fragment_discarded"] += 1
                return None
            del self._discarded[key]
        queue = self._pending[version]
        datagram = queue.get(key)
        if datagram is not None and datagram.deadline <= now:  # its timer is late: it has expired all the same
            self._remove(datagram)
            self.drops["fragment_timeout"] += 1
            datagram = None
        if datagram is None:
            datagram = _Datagram(key, version, src, now + self.timeouts[version])
            queue[key] = datagram
            self._by_source.setdefault(src, OrderedDict())[key] = None
            self._charge(datagram, DATAGRAM_OVERHEAD)
        starts, ends = datagram.starts, datagram.ends
        if not more:
            if (datagram.total is not None and datagram.total != end) or (ends and ends[-1] > end):
                self._discard(datagram, "fragment_inconsistent")
                return None
            datagram.total = end
        elif datagram.total is not None and end > datagram.total:
            self._discard(datagram, "fragment_inconsistent")
            return None
        at = bisect_right(starts, offset)
        if at and ends[at - 1] > offset:
            if starts[at - 1] == offset and ends[at - 1] == end and datagram.chunks[at - 1] == data:
                self.drops["fragment_duplicate"] += 1
                return None
            self._discard(datagram, "fragment_overlap")
            return None
        if at < len(starts) and starts[at] < end:
            self._discard(datagram, "fragment_overlap")
            return None
        if len(starts) >= self.max_fragments:
            self._discard(datagram, "fragment_too_many")
            return None
        cost = len(data) + FRAGMENT_OVERHEAD
        if not self._make_room(datagram, cost):
            return None
        starts.insert(at, offset)
        ends.insert(at, end)
        datagram.chunks.insert(at, bytes(data))
        datagram.received += len(data)
        self._charge(datagram, cost)
        if offset == 0:
            datagram.header, datagram.next_at, datagram.proto = header, next_at, proto
        if datagram.total is None or datagram.received != datagram.total:
            return None
        # No overlaps and every byte inside [0, total): as many bytes as the total means no hole.
        self._remove(datagram)
        return self._whole(version, datagram.header, datagram.next_at, datagram.proto, datagram.chunks,
                           datagram.total)

    def _whole(self, version: int, header: bytes, next_at: int, proto: int, chunks: list[bytes],
               total: int) -> bytes | None:
        """The reassembled packet: the first fragment's header, lengths set, no longer a fragment."""
        head = bytearray(header)
        if version == 4:
            length = len(head) + total
            if length > IPV4_MAX_TOTAL:
                self.drops["fragment_too_long"] += 1
                return None
            head[2:4] = length.to_bytes(2, "big")
            head[6:8] = b"\x00\x00"  # offset 0, MF clear (DF too: it was cut)
            head[10:12] = b"\x00\x00"
            head[10:12] = internet_checksum(bytes(head)).to_bytes(2, "big")
        else:
            del head[-8:]  # the Fragment header
            length = len(head) - 40 + total
            if length > IPV6_MAX_PAYLOAD:
                self.drops["fragment_too_long"] += 1
                return None
            head[next_at] = proto
            head[4:6] = length.to_bytes(2, "big")
        self.reassembled += 1
        return bytes(head) + b"".join(chunks)

    # ---- bounds ---------------------------------------------------------------------------------------
    def _charge(self, datagram: _Datagram, cost: int) -> None:
        datagram.charge += cost
        self._source_bytes[datagram.src] += cost
        self.held_bytes += cost

    def _make_room(self, datagram: _Datagram, cost: int) -> bool:
        """Evict until `cost` more bytes fit both bounds, `datagram`'s own source's oldest first, then the
        oldest of all; False (and `datagram` dropped) when only `datagram` itself is left to evict."""
        src = datagram.src
        while self._source_bytes[src] + cost > self.max_bytes_per_source:
            victim = next((self._find(k) for k in self._by_source[src] if k != datagram.key), None)
            if victim is None:
                self._remove(datagram)
                self.drops["fragment_evicted"] += 1
                return False
            self._remove(victim)
            self.drops["fragment_evicted"] += 1
        while self.held_bytes + cost > self.max_bytes:
            heads = [d for queue in self._pending.values() for d in self._oldest_two(queue) if d is not datagram]
            if not heads:
                self._remove(datagram)
                self.drops["fragment_evicted"] += 1
                return False
            victim = min(heads, key=lambda d: d.deadline - self.timeouts[d.version])
            self._remove(victim)
            self.drops["fragment_evicted"] += 1
        return True

    @staticmethod
    def _oldest_two(queue: OrderedDict[Key, _Datagram]) -> list[_Datagram]:
        """The oldest datagram of a queue, and the next one in case the oldest is the one being added to."""
        out = []
        for datagram in queue.values():
            out.append(datagram)
            if len(out) == 2:
                break
        return out

    def _find(self, key: Key) -> _Datagram:
        return self._pending[4 if len(key[0]) == 4 else 6][key]

    def _remove(self, datagram: _Datagram) -> None:
        self._pending[datagram.version].pop(datagram.key, None)
        mine = self._by_source.get(datagram.src)
        if mine is not None:
            mine.pop(datagram.key, None)
            if not mine:
                del self._by_source[datagram.src]
        self._source_bytes[datagram.src] -= datagram.charge
        if self._source_bytes[datagram.src] <= 0:
            del self._source_bytes[datagram.src]
        self.held_bytes -= datagram.charge
        datagram.charge = 0

    def _discard(self, datagram: _Datagram, reason: str) -> None:
        """Drop a datagram whole and drop its fragments still to come until its deadline (RFC 5722)."""
        self._remove(datagram)
        self.drops[reason] += 1
        self._discarded[datagram.key] = datagram.deadline
        self._discarded.move_to_end(datagram.key)
        while len(self._discarded) > self.max_discarded:
            self._discarded.popitem(last=False)

    # ---- time -----------------------------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        """When the oldest datagram in reassembly times out (seconds, the caller's clock), or None."""
        deadline = None
        for queue in self._pending.values():
            if queue:
                head = next(iter(queue.values())).deadline
                if deadline is None or head < deadline:
                    deadline = head
        return deadline

    def expire(self, now: float) -> list[Expired]:
        """Drop every datagram whose time is up at `now` (`fragment_timeout` each) and forget discarded keys
        whose time is up. Returns, for those whose first fragment had come, (version, source, destination,
        the first fragment's header and leading data: at most 1232 bytes) for an ICMP time exceeded."""
        expired: list[Expired] = []
        for queue in self._pending.values():
            while queue:
                datagram = next(iter(queue.values()))
                if datagram.deadline > now:
                    break
                self._remove(datagram)
                self.drops["fragment_timeout"] += 1
                if datagram.header:
                    src, dst = datagram.key[0], datagram.key[1]
                    quote = (datagram.header + datagram.chunks[0])[:1232]
                    expired.append((datagram.version, src, dst, quote))
        while self._discarded:
            key, until = next(iter(self._discarded.items()))
            if until > now:
                break
            del self._discarded[key]
        return expired


class FragmentIds:
    """The Identification of each datagram the stack fragments: one counter per (source, destination,
    protocol) for IPv4 (16 bits; unique within a datagram's lifetime as RFC 6864 4.1 asks) and per (source,
    destination) for IPv6 (32 bits), each started at a random value from `rng` so that no one can predict
    another destination's values (RFC 7739). At most `max_destinations` counters are kept, the least
    recently used forgotten (a new random start when that destination comes back)."""

    def __init__(self, rng: Callable[[int], bytes], max_destinations: int = 1024) -> None:
        self.rng = rng
        self.max_destinations = max_destinations
        self._next: OrderedDict[tuple[bytes, bytes, int], int] = OrderedDict()

    def next(self, src: bytes, dst: bytes, proto: int) -> int:
        """The Identification for the next fragmented datagram from `src` to `dst` (raw addresses)."""
        v4 = len(src) == 4
        key = (src, dst, proto if v4 else -1)
        mask = 0xFFFF if v4 else 0xFFFFFFFF
        ident = self._next.get(key)
        if ident is None:
            ident = int.from_bytes(self.rng(4), "big") & mask
        else:
            self._next.move_to_end(key)
        self._next[key] = (ident + 1) & mask
        while len(self._next) > self.max_destinations:
            self._next.popitem(last=False)
        return ident
