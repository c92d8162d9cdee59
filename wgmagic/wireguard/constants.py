"""The protocol's constants, as the WireGuard whitepaper (section 6.1) names them. Times in seconds.

`wgmagic.wireguard.timers.Timers` gathers the ones a test may shrink; these are its defaults.
"""

from __future__ import annotations

REKEY_AFTER_MESSAGES = 2**60
REJECT_AFTER_MESSAGES = 2**64 - 2**13 - 1
REKEY_AFTER_TIME = 120.0
REJECT_AFTER_TIME = 180.0
REKEY_ATTEMPT_TIME = 90.0
REKEY_TIMEOUT = 5.0
KEEPALIVE_TIMEOUT = 10.0
COOKIE_REFRESH_TIME = 120.0  # whitepaper 5.4.7: a cookie secret changes every two minutes
# Not in the whitepaper's table: retries get up to this much extra random delay (wireguard-go's jitter, 6.4).
REKEY_TIMEOUT_JITTER = 1 / 3
