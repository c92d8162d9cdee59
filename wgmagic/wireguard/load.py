"""Whether the device is under load (whitepaper 5.3): then handshake messages must carry a valid mac2, and a
sender without one gets a cookie reply instead of a DH computation.

Owns: the count of initiations per one-second window. Time comes in as `now` (seconds).
"""

from __future__ import annotations


class LoadMonitor:
    """More than `threshold` handshake messages within a second puts the device under load for the next
    second (wireguard-go's UnderLoadAfterTime is one second too). `force` holds it under load (tests)."""

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        self.force = False
        self._window_start = 0.0
        self._in_window = 0
        self._until = float("-inf")

    def under_load(self, now: float) -> bool:
        """Count one handshake message at `now` and say whether mac2 is required for it."""
        if self.force:
            return True
        if now - self._window_start >= 1.0:
            self._window_start, self._in_window = now, 0
        self._in_window += 1
        if self._in_window > self.threshold:
            self._until = now + 1.0
        return now < self._until
