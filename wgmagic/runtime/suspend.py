"""Protocol ages that count the time the machine slept.

The engine runs on one monotonic clock, which stops while the machine is suspended (Linux CLOCK_MONOTONIC);
TCP's retransmission timers stay on it (a laptop that wakes must not find every RTO, keep-alive and user
timeout expired at once). WireGuard's ages (key and session ages, handshake and cookie times: REJECT_AFTER_TIME,
REKEY_AFTER_TIME, the cookie secret's two minutes) must count the sleep, as the kernel's WireGuard does with
the boot-time clock: after a suspend longer than a session the peer has thrown its keys away, so the first
packet has to start a handshake at once.

`SuspendClock(boot, monotonic)`: `suspended()` is the seconds slept since it was made (boot time minus
monotonic time, less the difference at the start; it grows by whole suspends of MIN_SUSPEND or more, never
shrinks). `boottime()` is CLOCK_BOOTTIME where the
platform has it (Linux), else the monotonic clock (nothing slept, as before).

`SuspendAwareDevice` is the sans-I/O `Device`, given every `now` as the engine's monotonic time plus
`suspended()`, and handing its deadlines and times back on the engine's clock; `protocol_time(now)` is that
translation for callers that ask a peer directly (`Peer.has_session(now)`).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any

from wgmagic.wireguard.device import Device

logger = logging.getLogger(__name__)
Clock = Callable[[], float]
MIN_SUSPEND = 0.5  # seconds: a shorter difference between the clocks is not a suspend


def boottime() -> float:
    """Seconds on a clock that counts suspended time (CLOCK_BOOTTIME), or the monotonic clock without one."""
    clock_id = getattr(time, "CLOCK_BOOTTIME", None)
    if clock_id is None:
        return time.monotonic()
    try:
        return time.clock_gettime(clock_id)
    except OSError:
        return time.monotonic()


class SuspendClock:
    """How long the machine slept since this object was made, from a boot clock and a monotonic one."""

    def __init__(self, boot: Clock = boottime, monotonic: Clock = time.monotonic) -> None:
        self.boot, self.monotonic = boot, monotonic
        self._base = boot() - monotonic()
        self._slept = 0.0

    def suspended(self) -> float:
        """Seconds slept since the start: a step function that only grows, by a whole suspend at a time (a
        difference under MIN_SUSPEND is the two clocks' reading jitter, never counted: a `now` that moved by
        microseconds between two calls would put the device's deadlines out of step with the engine's timer)."""
        slept = self.boot() - self.monotonic() - self._base
        if slept >= self._slept + MIN_SUSPEND:
            logger.info("the machine slept %.1f s: WireGuard's ages count it", slept - self._slept)
            self._slept = slept
        return self._slept


class SuspendAwareDevice(Device):
    """A `Device` whose clock is the engine's plus `suspended()` (see the module docstring)."""

    def __init__(self, *args: Any, suspended: Clock, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._suspended = suspended
        self._depth = 0
        self._batch_now: float | None = None  # the `now` object of the batch being received, and its offset
        self._batch_offset = 0.0

    def protocol_time(self, now: float) -> float:
        """The device's time for the engine's `now`."""
        return now + self._suspended()

    def _outer(self, fn: Callable[..., Any], *args: Any) -> Any:
        """fn(*args, now) with `now` (the last argument) translated, once: calls the device makes into itself
        (endpoint_refused runs handle_timers) already have the device's time."""
        if self._depth:
            return fn(*args)
        self._depth += 1
        try:
            return fn(*args[:-1], self.protocol_time(args[-1]))
        finally:
            self._depth -= 1

    def set_endpoint(self, public_key: bytes, endpoint: tuple[str, int], now: float) -> None:
        self._outer(super().set_endpoint, public_key, endpoint, now)

    def endpoint_refused(self, now: float) -> None:
        self._outer(super().endpoint_refused, now)

    def not_answering_since(self, public_key: bytes, now: float) -> float | None:
        if self._depth:
            return super().not_answering_since(public_key, now)
        offset = self._suspended()
        since = super().not_answering_since(public_key, now + offset)
        return None if since is None else since - offset

    def send_packet(self, ip_packet: bytes, now: float) -> bool:
        return bool(self._outer(super().send_packet, ip_packet, now))

    def send_keepalive(self, public_key: bytes, now: float) -> None:
        self._outer(super().send_keepalive, public_key, now)

    def initiate_handshake(self, public_key: bytes, now: float, *, force: bool = False) -> None:
        self._outer(functools.partial(super().initiate_handshake, force=force), public_key, now)

    def receive_datagram(self, data: bytes, addr: tuple[str, int], now: float) -> None:
        # _outer spelled out for the hot path of every received datagram. A transport hands every datagram of
        # one read the same `now` object: the offset is read once per batch, not once per datagram.
        if self._depth:
            Device.receive_datagram(self, data, addr, now)
            return
        if now is not self._batch_now:
            self._batch_now, self._batch_offset = now, self._suspended()
        self._depth = 1
        try:
            Device.receive_datagram(self, data, addr, now + self._batch_offset)
        finally:
            self._depth = 0

    def handle_timers(self, now: float) -> None:
        self._outer(super().handle_timers, now)

    def next_timer(self) -> float | None:
        deadline = super().next_timer()
        if deadline is None or self._depth:
            return deadline
        return deadline - self._suspended()
