"""A TCP connection's configuration (buffers, timers, features): `TcpConfig`.

Configuration, not the TCP header's options, which live in `wgmagic.netstack.wire.tcp.Options`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TcpConfig:
    """Knobs of one TCP connection; the defaults follow Linux where it has one.

    Sizes are bytes, times are seconds.

    - recv_buffer / send_buffer: the receive buffer (bounds the advertised window, RFC 9293 3.8.6) and the send
      buffer (what `send` accepts before it returns 0).
    - delayed_ack: the delayed-ACK timer (RFC 9293 3.8.6.3; Linux's 40 ms); every second full segment is acked
      at once.
    - rto_min / rto_initial / rto_max: the retransmission timeout's floor, initial value and ceiling
      (RFC 6298 2.1 and 2.4; 200 ms floor as Linux, 60 s ceiling).
    - max_retries: RTOs in a row before the connection fails with TimeoutError (Linux's tcp_retries2).
    - user_timeout: seconds data may stay unacknowledged before the connection fails with
      TimeoutError(ETIMEDOUT) (RFC 5482's user timeout, RFC 9293 3.8.3's R2 as a time; Linux's
      TCP_USER_TIMEOUT). None: off, and only max_retries bounds the retransmissions (about 15 minutes with
      the defaults). Measured from the last acknowledgement that moved SND.UNA (or the first transmission),
      and the retransmission timer is clamped so the failure comes on time, not one backed-off RTO late.
    - time_wait: how long TIME_WAIT lasts (2 MSL, RFC 9293 3.6; shortened as most stacks do).
    - congestion: "cubic" (RFC 9438) or "reno" (RFC 5681).
    - verify_checksums: check inbound checksums (off by default: WireGuard's AEAD already authenticated them).
    - timestamps / sack: offer RFC 7323 timestamps and RFC 2018 SACK in the SYN.
    - keepalive_idle / keepalive_interval / keepalive_count: RFC 9293 3.8.4 keep-alives (None: off; as
      Linux's tcp_keepalive_time, _intvl, _probes).
    - max_out_of_order_ranges: at most this many out-of-order ranges are held (more are dropped and counted).
    """

    recv_buffer: int = 4 * 1024 * 1024
    send_buffer: int = 4 * 1024 * 1024
    delayed_ack: float = 0.040
    rto_min: float = 0.200
    rto_initial: float = 1.0
    rto_max: float = 60.0
    max_retries: int = 15  # like tcp_retries2
    user_timeout: float | None = None  # RFC 5482; TUNNEL_CONFIG sets one
    time_wait: float = 2.0
    congestion: str = "cubic"
    verify_checksums: bool = False
    timestamps: bool = True
    sack: bool = True
    keepalive_idle: float | None = None
    keepalive_interval: float = 75.0
    keepalive_count: int = 9
    max_out_of_order_ranges: int = 512


DEFAULT_CONFIG = TcpConfig()
DEFAULT_OPTIONS = DEFAULT_CONFIG

TUNNEL_USER_TIMEOUT = 30.0  # seconds
TUNNEL_KEEPALIVE_IDLE = 15.0  # seconds
TUNNEL_KEEPALIVE_INTERVAL = 5.0  # seconds
TUNNEL_KEEPALIVE_COUNT = 3


def tunnel_config(*, user_timeout: float | None = TUNNEL_USER_TIMEOUT,
                  keepalive_idle: float | None = TUNNEL_KEEPALIVE_IDLE,
                  keepalive_interval: float = TUNNEL_KEEPALIVE_INTERVAL,
                  keepalive_count: int = TUNNEL_KEEPALIVE_COUNT) -> TcpConfig:
    """The configuration of the TCP connections a tunnel makes or accepts (the runtime's default).

    Linux's own defaults (no user timeout, keep-alives off, 15 retransmissions) let a connection whose peer
    vanished hang for about 15 minutes with data in flight and forever when idle. Inside a tunnel the peer is
    one WireGuard hop away and users expect what libpq's keepalives and TCP_USER_TIMEOUT give them: a dead
    peer fails the call with ETIMEDOUT in bounded time. So: a user timeout of `user_timeout` seconds
    (RFC 5482; unacknowledged data older than that fails the connection) and keep-alives on with libpq-like
    short values (RFC 9293 3.8.4; `keepalive_idle` seconds without input, then a probe every
    `keepalive_interval` seconds, `keepalive_count` unanswered probes end the connection: 30 s with the
    defaults), so a connection idle while it waits for a query's answer fails too when nothing answers. Both
    are well above a tunnel's round trips and WireGuard's own timers (a live peer answers data within
    KEEPALIVE_TIMEOUT, 10 s). None turns user_timeout or keep-alives off.
    """
    return TcpConfig(user_timeout=user_timeout, keepalive_idle=keepalive_idle,
                     keepalive_interval=keepalive_interval, keepalive_count=keepalive_count)


TUNNEL_CONFIG = tunnel_config()
