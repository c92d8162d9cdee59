"""A token bucket on the caller's clock, for answers the stack must not send without bound.

`TokenBucket(rate, burst)`: `allow(now)` is True while a token is left (one is taken), False once the bucket is
empty; tokens come back at `rate` a second up to `burst`. `now` is seconds on any clock that does not go back
(a clock that does is treated as standing still). Used for the RSTs that answer segments for no connection
(RFC 9293 3.10.7.1; Linux bounds them likewise, net.ipv4.tcp_invalid_ratelimit and icmp_ratelimit).
"""

from __future__ import annotations


class TokenBucket:
    """`rate` tokens a second (float > 0), at most `burst` (int >= 1) held; full at the first `allow`."""

    def __init__(self, rate: float, burst: int) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._last: float | None = None

    def allow(self, now: float) -> bool:
        """Take a token at `now` (seconds): True if there was one."""
        if self._last is not None and now > self._last:
            self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.rate)
        if self._last is None or now > self._last:
            self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False
