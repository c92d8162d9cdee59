"""The timers of an idle, flow-controlled or unanswered TCP connection, each a small decision machine (sans-I/O):
zero-window probes (persist, RFC 9293 3.8.6.1), keep-alives (RFC 9293 3.8.4), repeated window updates and
the user timeout (RFC 5482) that bounds how long data may go unacknowledged.

Each holds an absolute deadline `at` (seconds, the caller's clock; None when not armed). The connection
fires the one that is due and builds whatever segment the answer calls for.
"""

from __future__ import annotations

from enum import Enum

from wgmagic.netstack.tcp.config import TcpConfig

PERSIST_MAX = 5.0  # seconds between zero-window probes at most
WINDOW_UPDATE_REPEATS = 4


class PersistTimer:
    """Zero-window probing (RFC 9293 3.8.6.1, RFC 1122 4.2.2.17): while the peer's window is zero and we have
    data, probe after one RTO, then backing off exponentially (capped at PERSIST_MAX seconds, well below
    rto_max: a lost window update then costs seconds, not a minute)."""

    __slots__ = ("at", "backoff")

    def __init__(self) -> None:
        self.at: float | None = None
        self.backoff = 0

    def arm(self, now: float, rto: float) -> None:
        """The window closed with data waiting: first probe one RTO from now (unless armed already)."""
        if self.at is None:
            self.at = now + rto

    def probed(self, now: float, rto: float) -> None:
        """A probe was just sent: the next one after a backed-off interval."""
        self.backoff += 1
        self.at = now + min(PERSIST_MAX, rto * (2 ** min(self.backoff, 6)))


class KeepaliveAction(Enum):
    """What a due keep-alive timer asks for."""

    OFF = "off"  # keep-alives are off: nothing
    REARMED = "rearmed"  # something arrived since: the timer moved to idle after that
    PROBE = "probe"  # send one probe (seq snd_una - 1, RFC 9293 3.8.4)
    DEAD = "dead"  # keepalive_count probes went unanswered: the connection times out


class KeepaliveTimer:
    """RFC 9293 3.8.4 keep-alives with Linux's knobs: after `idle` seconds without input, a probe every
    `interval` seconds; `count` unanswered probes end the connection (`idle` None: off)."""

    __slots__ = ("at", "count", "idle", "interval", "probes")

    def __init__(self, config: TcpConfig) -> None:
        self.at: float | None = None
        self.probes = 0
        self.idle = config.keepalive_idle
        self.interval = config.keepalive_interval
        self.count = config.keepalive_count

    def start(self, now: float) -> None:
        """The connection is established at `now`: arm the first deadline if keep-alives are on."""
        if self.idle:
            self.at = now + self.idle

    def fire(self, now: float, last_receive: float) -> KeepaliveAction:
        """The deadline passed; `last_receive` is when a segment last arrived. Re-arms the timer as needed."""
        if self.idle is None:
            self.at = None
            return KeepaliveAction.OFF
        idle_until = last_receive + self.idle
        if now < idle_until:  # the very expression the deadline is set to: `now - last_receive < idle` could
            self.probes = 0  # round below idle at that deadline and re-arm it for the same instant forever
            self.at = idle_until
            return KeepaliveAction.REARMED
        if self.probes >= self.count:
            return KeepaliveAction.DEAD
        self.probes += 1
        self.at = now + self.interval
        return KeepaliveAction.PROBE


class UserTimeout:
    """RFC 5482's user timeout (Linux's TCP_USER_TIMEOUT), as RFC 9293 3.8.3's R2 threshold in seconds:
    data unacknowledged for `limit` seconds fails the connection with ETIMEDOUT, however few retransmissions
    that took (`limit` None: off; max_retries alone then bounds them).

    Driven by the retransmission timer, so it costs nothing on the data path: at each RTO the connection
    calls `on_rto(now, snd_una, waited)`. The first RTO for a given SND.UNA fires one (not yet backed-off) RTO
    after the last acknowledgement that moved SND.UNA, or after the first transmission: the clock starts
    there (`since = now - waited`). `clamp` then keeps the next RTO from landing after `since + limit`, so the
    failure comes on time (as Linux's tcp_clamp_rto_to_user_timeout), not one backed-off RTO (up to rto_max)
    late."""

    __slots__ = ("limit", "since", "una")

    def __init__(self, config: TcpConfig) -> None:
        self.limit = config.user_timeout
        self.una: int | None = None  # the SND.UNA the clock runs for
        self.since = 0.0  # when that data was (re)sent last with progress before it (seconds)

    def on_rto(self, now: float, snd_una: int, waited: float) -> bool:
        """An RTO fired at `now` with `snd_una` still unacknowledged, `waited` seconds (the RTO that just
        elapsed) after the transmission it guards. True when the user timeout passed: the connection fails."""
        if self.limit is None:
            return False
        if snd_una != self.una:
            self.una = snd_una
            self.since = now - waited
        return now - self.since >= self.limit

    def clamp(self, deadline: float) -> float:
        """The next RTO deadline, no later than the moment the user timeout passes."""
        if self.limit is None or self.una is None:
            return deadline
        return min(deadline, self.since + self.limit)


class WindowUpdateTimer:
    """Repeats a window update that reopened a (nearly) closed receive window until data arrives again.

    Such an update is a lone pure ACK: if it is lost, the sender learns of the window only from its next
    zero-window probe, which Linux backs off to tens of seconds. So it is repeated up to
    WINDOW_UPDATE_REPEATS times, backing off from max(rto, rto_min). Harmless to the sender: with no data in
    flight a repeated ACK is not a duplicate ACK (RFC 5681 2).
    """

    __slots__ = ("at", "rcv_nxt", "tries")

    def __init__(self) -> None:
        self.at: float | None = None
        self.rcv_nxt = 0
        self.tries = 0

    def arm(self, now: float, rcv_nxt: int, base: float) -> None:
        """A window update went out at `now` with RCV.NXT `rcv_nxt`; first repeat `base` seconds later."""
        self.rcv_nxt = rcv_nxt
        self.tries = 0
        self.at = now + base

    def fire(self, now: float, rcv_nxt: int, still_needed: bool, base: float) -> bool:
        """The deadline passed: True if the update should be sent again (then re-armed, backed off). Not when
        data arrived since (`rcv_nxt` moved), nor when `still_needed` is False, nor after the last repeat."""
        self.at = None
        if rcv_nxt != self.rcv_nxt or not still_needed or self.tries >= WINDOW_UPDATE_REPEATS:
            return False
        self.tries += 1
        self.at = now + base * (2 ** self.tries)
        return True
