"""The protocol's constants (whitepaper section 6.1), gathered so tests can shrink them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Timers:
    rekey_after_messages: int = 2**60
    reject_after_messages: int = 2**64 - 2**13 - 1
    rekey_after_time: float = 120.0
    reject_after_time: float = 180.0
    rekey_attempt_time: float = 90.0
    rekey_timeout: float = 5.0
    keepalive_timeout: float = 10.0
    cookie_refresh_time: float = 120.0
    # Retries of a handshake get up to this much random extra delay, so peers do not retry in lockstep.
    rekey_timeout_jitter: float = 1 / 3

    @property
    def max_handshake_attempts(self) -> int:
        return max(1, int(self.rekey_attempt_time / self.rekey_timeout))
