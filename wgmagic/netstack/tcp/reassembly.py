"""Out-of-order data held until the hole before it fills (RFC 9293 3.10.7.4), and the SACK blocks that
describe it (RFC 2018 section 4). Sans-I/O; sequence numbers are the connection's unwrapped integers."""

from __future__ import annotations

M32 = 0xFFFFFFFF


class Reassembly:
    """Non-overlapping, non-touching ranges of bytes above the next expected sequence number.

    `ranges` maps a range's first sequence number to its bytes; `held` is the bytes held in all; `latest` is
    the start of the range that took the most recent segment (reported first in SACK, RFC 2018 4). At most
    `max_ranges` ranges are held: a segment that would make one more is refused (store returns False).
    """

    __slots__ = ("held", "latest", "max_ranges", "ranges")

    def __init__(self, max_ranges: int) -> None:
        self.ranges: dict[int, bytes] = {}
        self.held = 0
        self.latest = 0
        self.max_ranges = max_ranges

    def __repr__(self) -> str:
        return f"<Reassembly ranges={len(self.ranges)} held={self.held}>"

    def store(self, seq: int, data: bytes) -> bool:
        """Hold `data` starting at `seq`, merged with every range it overlaps or touches; False if refused."""
        ranges = self.ranges
        end = seq + len(data)
        for start in sorted(ranges):
            existing = ranges[start]
            stop = start + len(existing)
            if stop < seq or start > end:
                continue  # neither overlapping nor touching: adjacent ranges merge, so ranges are real holes
            del ranges[start]
            self.held -= len(existing)
            if start < seq:
                data = existing[:seq - start] + data
                seq = start
            if stop > end:
                data = data + existing[end - start:]
                end = stop
        if len(ranges) >= self.max_ranges:
            return False
        ranges[seq] = data
        self.held += len(data)
        self.latest = seq
        return True

    def drain(self, rcv_nxt: int) -> list[bytes]:
        """Take out the ranges that now start at or below `rcv_nxt`; returns their new bytes in order (their
        lengths add up to how far the next expected sequence number moves)."""
        ranges = self.ranges
        pieces: list[bytes] = []
        while ranges:
            start = min(ranges)
            if start > rcv_nxt:
                break
            data = ranges.pop(start)
            self.held -= len(data)
            skip = rcv_nxt - start
            if skip < len(data):
                fresh = data[skip:]
                pieces.append(fresh)
                rcv_nxt += len(fresh)
        return pieces

    def sack_blocks(self, limit: int = 3) -> tuple[tuple[int, int], ...]:
        """Up to `limit` SACK blocks as (left, right) wire values (mod 2**32): the range holding the latest
        segment first, then the others from the highest down (RFC 2018 section 4)."""
        ranges = self.ranges
        starts = sorted(ranges, reverse=True)
        if self.latest in ranges:
            starts.remove(self.latest)
            starts.insert(0, self.latest)
        return tuple((start & M32, (start + len(ranges[start])) & M32) for start in starts[:limit])
