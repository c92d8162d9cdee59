"""A TCP connection's configuration (buffers, timers, features): `TcpConfig`.

`TcpOptions` is the old name of the same class (kept as an alias): it is configuration, not the TCP header's
options, which live in `wgmagic.netstack.wire.tcp.Options`.
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
    time_wait: float = 2.0
    congestion: str = "cubic"
    verify_checksums: bool = False
    timestamps: bool = True
    sack: bool = True
    keepalive_idle: float | None = None
    keepalive_interval: float = 75.0
    keepalive_count: int = 9
    max_out_of_order_ranges: int = 512


TcpOptions = TcpConfig  # the old name, still imported by users (tests, the runtime's tcp_options)

DEFAULT_CONFIG = TcpConfig()
DEFAULT_OPTIONS = DEFAULT_CONFIG
