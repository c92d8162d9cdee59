"""The protocol's timer and counter limits (whitepaper section 6.1), gathered so tests can shrink them."""

from __future__ import annotations

from dataclasses import dataclass

from wgmagic.wireguard import constants as c


@dataclass(frozen=True)
class Timers:
    """The whitepaper's constants (6.1) as one frozen value; the defaults are `wireguard/constants.py`'s.

    Times are seconds, message limits are counts. `rekey_timeout_jitter` is the largest random extra delay
    (seconds) added to a handshake retry (6.4), so peers do not retry in lockstep.
    """

    rekey_after_messages: int = c.REKEY_AFTER_MESSAGES
    reject_after_messages: int = c.REJECT_AFTER_MESSAGES
    rekey_after_time: float = c.REKEY_AFTER_TIME
    reject_after_time: float = c.REJECT_AFTER_TIME
    rekey_attempt_time: float = c.REKEY_ATTEMPT_TIME
    rekey_timeout: float = c.REKEY_TIMEOUT
    keepalive_timeout: float = c.KEEPALIVE_TIMEOUT
    cookie_refresh_time: float = c.COOKIE_REFRESH_TIME
    rekey_timeout_jitter: float = c.REKEY_TIMEOUT_JITTER

    @property
    def max_handshake_attempts(self) -> int:
        """Initiations sent before giving up: REKEY_ATTEMPT_TIME / REKEY_TIMEOUT (whitepaper 6.4), at least 1."""
        return max(1, int(self.rekey_attempt_time / self.rekey_timeout))
