"""Loss recovery for the sender: the SACK scoreboard (RFC 2018, RFC 6675) and the recovery episode
(fast retransmit, a RACK-like reordering window (RFC 8985), Eifel spurious-recovery detection (RFC 3522)).

Sans-I/O and segment-free: the connection asks these objects what to do and builds the segments itself.
Sequence numbers are the connection's unwrapped integers; times are seconds.
"""

from __future__ import annotations

from wgmagic.netstack.tcp.rtt import RttEstimator

M32 = 0xFFFFFFFF
MAX_BLOCKS = 64  # scoreboard entries kept (the highest ones)


def unwrap(wire_value: int, near: int) -> int:
    """The integer closest to `near` whose low 32 bits are `wire_value` (RFC 9293 3.4 comparisons)."""
    delta = (wire_value - near) & M32
    if delta >= 0x80000000:
        delta -= 0x100000000
    return near + delta


class SackScoreboard:
    """What the peer reported holding above `snd_una` (RFC 6675 section 3): merged, sorted (start, end)
    ranges in `blocks`, at most MAX_BLOCKS of them."""

    __slots__ = ("blocks",)

    def __init__(self) -> None:
        self.blocks: list[tuple[int, int]] = []

    def __repr__(self) -> str:
        return f"<SackScoreboard {self.blocks}>"

    def update(self, sack: tuple[tuple[int, int], ...], snd_una: int, snd_max: int) -> None:
        """Add the SACK option's blocks (wire values); blocks outside (snd_una, snd_max] are ignored
        (RFC 2018 section 5: they cannot be valid)."""
        ranges = list(self.blocks)
        for left_w, right_w in sack:
            left, right = unwrap(left_w, snd_una), unwrap(right_w, snd_una)
            if snd_una < right <= snd_max and left < right:
                ranges.append((max(left, snd_una), right))
        ranges.sort()
        merged: list[tuple[int, int]] = []
        for start, end in ranges:
            if merged and start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], end))
            else:
                merged.append((start, end))
        self.blocks = merged[-MAX_BLOCKS:]

    def advance(self, snd_una: int) -> None:
        """The cumulative ACK moved to `snd_una`: forget what it covers."""
        blocks = [(s, e) for s, e in self.blocks if e > snd_una]
        if blocks and blocks[0][0] < snd_una:
            blocks[0] = (snd_una, blocks[0][1])
        self.blocks = blocks

    def clear(self) -> None:
        """After an RTO the scoreboard may be stale, the peer may have reneged (RFC 6675 section 5.1)."""
        self.blocks = []

    def sacked_bytes(self) -> int:
        """Bytes the peer holds above snd_una."""
        return sum(e - s for s, e in self.blocks)

    def covering(self, seq: int) -> int | None:
        """The end of the block holding `seq`, or None if the peer does not hold it."""
        for s, e in self.blocks:
            if s <= seq < e:
                return e
        return None

    def next_block_after(self, seq: int, default: int) -> int:
        """The start of the first block above `seq` (where the hole at `seq` ends), else `default`."""
        for s, _ in self.blocks:
            if s > seq:
                return s
        return default


class LossRecovery:
    """One sender's recovery state (RFC 6675 section 5, NewReno RFC 6582 when SACK is off).

    - `active`: in a recovery episode, until `recover` (snd_max when it began) is acknowledged.
    - `retransmitted_to`: holes below it were resent in this episode.
    - `dupacks`: duplicate ACKs in a row (RFC 5681 3.2).
    - `suspect_at` / `suspect_una`: a hole was seen at `suspect_una`; it is declared lost at `suspect_at`
      (seconds) unless the cumulative ACK passes it first: the reordering window (RFC 8985 6.2), which widens
      (`reorder_mult`, doubled up to 64) each time a recovery proves spurious.
    - `undo`: the congestion controller's state before the episode, restored when the first ACK past the
      resent segment echoes the original's timestamp (Eifel, RFC 3522): `recovery_tsval` is the TSval sent
      with the retransmission, `recovery_una` the sequence number it resent.
    """

    __slots__ = ("active", "dupacks", "recover", "recovery_tsval", "recovery_una", "reorder_mult",
                 "retransmitted_to", "spurious", "suspect_at", "suspect_una", "undo")

    def __init__(self) -> None:
        self.active = False
        self.recover = 0
        self.retransmitted_to = 0
        self.dupacks = 0
        self.reorder_mult = 1
        self.suspect_at: float | None = None
        self.suspect_una = 0
        self.recovery_tsval: int | None = None
        self.recovery_una = 0
        self.undo: dict | None = None
        self.spurious = 0

    def __repr__(self) -> str:
        return f"<LossRecovery active={self.active} recover={self.recover} dupacks={self.dupacks}>"

    def reorder_window(self, rtt: RttEstimator) -> float:
        """How long a hole may be reordering rather than loss: min(mult * min_rtt / 4, srtt) seconds, 0
        before any sample (RFC 8985 6.2)."""
        if rtt.min_rtt is None or rtt.srtt is None:
            return 0.0
        return min(self.reorder_mult * rtt.min_rtt / 4, rtt.srtt)

    def suspect(self, now: float, snd_una: int, rtt: RttEstimator) -> bool:
        """A loss is indicated at `snd_una` (3 duplicate ACKs, or 3 segments' worth SACKed above it).

        Returns True when recovery should start at once (no useful reordering window), else arms `suspect_at`.
        """
        window = self.reorder_window(rtt)
        if window < 0.0005:
            return True
        self.suspect_at = now + window
        self.suspect_una = snd_una
        return False

    def begin(self, snd_una: int, snd_max: int, cc_state: dict, tsval: int | None) -> None:
        """Start an episode: remember the recovery point, the controller's state to undo, the TSval sent."""
        self.suspect_at = None
        self.active = True
        self.recover = snd_max
        self.undo = cc_state
        self.recovery_tsval = tsval
        self.recovery_una = snd_una
        self.retransmitted_to = snd_una

    def check_spurious(self, echoed: tuple[int, int] | None) -> dict | None:
        """The first ACK past the resent segment: if it echoes a TSval older than the retransmission's, the
        original arrived and the episode was spurious (RFC 3522 section 3.2). Returns the controller state to
        restore then (and leaves the episode, widening the reordering window), else None."""
        sent_tsval, self.recovery_tsval = self.recovery_tsval, None
        undo, self.undo = self.undo, None
        if echoed is None or sent_tsval is None or undo is None:
            return None
        age = (sent_tsval - echoed[1]) & M32
        if 0 < age < 1 << 31:
            self.spurious += 1
            self.active = False
            self.reorder_mult = min(self.reorder_mult * 2, 64)
            return undo
        return None

    def on_timeout(self) -> None:
        """An RTO ends any episode and forgets what it suspected (RFC 6675 section 5.1)."""
        self.active = False
        self.suspect_at = self.recovery_tsval = self.undo = None
        self.dupacks = 0
