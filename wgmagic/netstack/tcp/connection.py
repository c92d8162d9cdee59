"""One TCP connection (RFC 9293), sans-I/O.

Sequence numbers are kept as unbounded integers internally (unwrapped against the nearest known point), so
comparisons are plain `<`; only the wire sees them modulo 2**32. Loss recovery: SACK scoreboard with
RFC 6675-style hole retransmission, NewReno when SACK is not negotiated, RTO per RFC 6298; congestion
control is CUBIC (RFC 9438) by default, Reno on request.
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from wgmagic.netstack.events import TcpClosed, TcpConnected, TcpEvent, TcpReadable, TcpWritable
from wgmagic.netstack.tcp.config import DEFAULT_CONFIG, DEFAULT_OPTIONS, TcpConfig
from wgmagic.netstack.tcp.congestion import Cubic, Reno
from wgmagic.netstack.tcp.pmtu import FLOOR_MSS, HEADERS, HOLD, QUIET, ReceiveWatch, SendSearch, too_big_message
from wgmagic.netstack.tcp.reassembly import Reassembly
from wgmagic.netstack.tcp.recovery import LossRecovery, SackScoreboard
from wgmagic.netstack.tcp.recovery import unwrap as _unwrap
from wgmagic.netstack.tcp.rtt import RttEstimator
from wgmagic.netstack.tcp.state import (
    CAN_SEND,
    CLOSE_WAIT,
    CLOSED,
    CLOSING,
    ESTABLISHED,
    FIN_WAIT_1,
    FIN_WAIT_2,
    LAST_ACK,
    LISTEN,
    RECEIVING,
    SENDING,
    SYN_RECEIVED,
    SYN_SENT,
    TIME_WAIT,
    TcpState,
)
from wgmagic.netstack.tcp.timers import KeepaliveAction, KeepaliveTimer, PersistTimer, UserTimeout, WindowUpdateTimer
from wgmagic.netstack.wire import tcp as wire
from wgmagic.netstack.wire.icmp import IcmpKind
from wgmagic.netstack.wire.tcp import ACK, FIN, HEADER, PSH, RST, SYN

__all__ = ["DEFAULT_OPTIONS", "TcpClosed", "TcpConfig", "TcpConnected", "TcpConnection",
           "TcpReadable", "TcpState", "TcpWritable", "reset_for"]

Address = tuple[IPv4Address | IPv6Address, int]
M32 = 0xFFFFFFFF
OUR_WSCALE = 7

_FAST_FLAGS = SYN | FIN | RST | ACK | wire.URG  # of these, header prediction takes segments with ACK alone
_TS = wire._TS

_FIN_STATE = {ESTABLISHED: FIN_WAIT_1, CLOSE_WAIT: LAST_ACK, SYN_RECEIVED: FIN_WAIT_1}


def _isn(local: Address, remote: Address, now: float, secret: bytes) -> int:
    """RFC 6528: a keyed hash of the 4-tuple plus a 4-microsecond clock."""
    material = local[0].packed + local[1].to_bytes(2, "big") + remote[0].packed + remote[1].to_bytes(2, "big")
    offset = int.from_bytes(hashlib.blake2s(material, key=secret, digest_size=4).digest(), "big")
    return (offset + int(now * 250_000)) & M32


class TcpConnection:
    """One TCP connection (RFC 9293), sans-I/O: segments in, segments and events out, time passed in.

    Build it with `connect` (active open) or `accept_syn` (passive open). Feed it `receive_segment(segment,
    now)` and `handle_timer(now)` when `next_timer()` is due; pull `segments_to_send(now)` (TCP segments with
    the checksum filled in; the stack adds the IP header) and `events()`. The user side is `send`, `recv`,
    `shutdown_write`, `close`, `abort`. It composes the machines kept in their own modules: `rtt`
    (RttEstimator, RFC 6298), `reassembly` (Reassembly, out-of-order data and SACK blocks), `scoreboard`
    (SackScoreboard, RFC 6675) and `recovery` (LossRecovery), `persist`, `keepalive` and `window_update`
    (tcp/timers.py), `cc` (Reno or Cubic).

    `state` is a `TcpState` (a str). Sizes are bytes, times seconds. Never raises from `receive_segment` or
    `handle_timer`: bad input is counted in `drops`, bugs in `internal_errors`.
    """

    def __init__(self, local: Address, remote: Address, now: float, *, options: TcpConfig | None,
                 rng: Callable[[int], bytes], mss: int) -> None:
        self.local = local
        self.remote = remote
        self.opts = options or DEFAULT_CONFIG
        self._src, self._dst = local[0].packed, remote[0].packed
        self._pseudo = wire.pseudo_sum(self._src, self._dst)  # the checksum's pseudo-header, summed once
        self.state: TcpState = CLOSED
        self.error: BaseException | None = None
        self.iss = _isn(local, remote, now, rng(16))
        self.our_mss = max(536, mss)
        self.send_mss = 536
        self.snd_una = self.snd_nxt = self.iss
        self.snd_max = self.iss  # highest sequence ever sent (+1)
        self.snd_wnd = 0
        self.snd_wscale = 0
        self.rcv_wscale = 0
        self.rcv_nxt = 0
        self.irs = 0
        self.ts_ok = False
        self.sack_ok = False
        self.ts_recent = 0
        self.ts_offset = int.from_bytes(rng(4), "big")
        # send side: bytes from sbuf_seq on (unacknowledged and unsent)
        self.sbuf = bytearray()
        self.sbuf_seq = self.iss + 1
        self.fin_queued = False
        self.fin_seq: int | None = None
        # receive side
        self.rbuf = bytearray()
        self.reassembly = Reassembly(self.opts.max_out_of_order_ranges)
        self.fin_received_seq: int | None = None
        self.eof = False
        self.last_advertised_right = 0
        self.window_reopened = False  # a read reopened a (nearly) closed window: repeat the update until data
        self.window_update = WindowUpdateTimer()
        self.window_cap = self.opts.recv_buffer  # lowered by the stack when many connections share it
        # acks
        self.ack_now = False
        self.unacked_segments = 0
        self.delack_at: float | None = None
        # timing
        self.rtt = RttEstimator(self.opts)
        self.rto_at: float | None = None
        self.retries = 0
        self.persist = PersistTimer()
        self.time_wait_at: float | None = None
        self.connect_deadline: float | None = None
        self.keepalive = KeepaliveTimer(self.opts)
        self.user_timeout = UserTimeout(self.opts)
        self.last_receive = now
        self.syn_sent_at = now
        # congestion
        self.cc = (Reno if self.opts.congestion == "reno" else Cubic)(self.send_mss)
        self.scoreboard = SackScoreboard()
        self.recovery = LossRecovery()
        # path-MTU black holes (pmtu.py): our segments' size, and what the peer's may be
        version = local[0].version
        self.pmtu = SendSearch(self.send_mss, FLOOR_MSS[version])
        self.rx_pmtu = ReceiveWatch(self.our_mss, version)
        # output
        self._out: list[bytes] = []
        self.icmp_out: list[tuple[int, bytes]] = []  # (IP protocol, ICMP message) for the stack to send to remote
        self._events: list[TcpEvent] = []
        self._readable = self._writable = False
        self._was_full = False
        # counters
        self.retransmits = 0
        self.bytes_sent = self.bytes_received = 0
        self.segments_in = self.segments_out = 0
        self.drops = 0
        self.internal_errors = 0

    def __repr__(self) -> str:
        return (f"<TcpConnection {self.local[0]}:{self.local[1]} -> {self.remote[0]}:{self.remote[1]} "
                f"{self.state}>")

    # ---- read-only views kept for callers that read them (runtime metrics, tests) ---------------------
    @property
    def srtt(self) -> float | None:
        """The smoothed RTT in seconds (RFC 6298), None before the first sample."""
        return self.rtt.srtt

    @property
    def rto(self) -> float:
        """The current retransmission timeout in seconds (RFC 6298)."""
        return self.rtt.rto

    @property
    def window_update_at(self) -> float | None:
        """When the window update that reopened the receive window is due again (seconds), or None."""
        return self.window_update.at

    @property
    def window_update_nxt(self) -> int:
        """RCV.NXT when that window update went out (a repeat stops once data moved it)."""
        return self.window_update.rcv_nxt

    @property
    def in_recovery(self) -> bool:
        """In a fast-recovery episode (RFC 6675 section 5)."""
        return self.recovery.active

    @property
    def spurious_recoveries(self) -> int:
        """Recovery episodes undone as spurious (RFC 3522)."""
        return self.recovery.spurious

    # ---- opening --------------------------------------------------------------------------------------
    @classmethod
    def connect(cls, local: Address, remote: Address, now: float, *, options: TcpConfig | None = None,
                rng: Callable[[int], bytes] = os.urandom, mss: int = 1380, timeout: float = 15.0) -> TcpConnection:
        """Active open (RFC 9293 3.5) from `local` to `remote` at `now`: the connection in SYN_SENT with its SYN
        queued. `mss` is what we accept (path MTU minus headers); the handshake must finish within `timeout`
        seconds, else it closes with TimeoutError."""
        conn = cls(local, remote, now, options=options, rng=rng, mss=mss)
        conn.state = SYN_SENT
        conn.connect_deadline = now + timeout
        conn._send_syn(now)
        return conn

    @classmethod
    def accept_syn(cls, local: Address, remote: Address, segment: memoryview | bytes, now: float, *,
                   options: TcpConfig | None = None, rng: Callable[[int], bytes] = os.urandom,
                   mss: int = 1380) -> TcpConnection | None:
        """Passive open: the connection in SYN_RECEIVED answering `segment` (a whole TCP segment, IP header
        stripped) with a SYN-ACK, or None if it is not a plain SYN or its options are malformed."""
        if len(segment) < 20:
            return None
        _, _, seq, _, offset, flags, window, _, _ = HEADER.unpack_from(segment)
        if flags & (SYN | ACK | RST | FIN) != SYN:
            return None
        opts = wire.parse_options(segment[20:(offset >> 4) * 4])
        if opts is None:
            return None
        conn = cls(local, remote, now, options=options, rng=rng, mss=mss)
        conn.state = SYN_RECEIVED
        conn.irs = seq
        conn.rcv_nxt = seq + 1
        conn._take_syn_options(opts, window)
        conn.connect_deadline = now + 75.0
        conn._send_syn(now)
        return conn

    def _take_syn_options(self, opts: wire.Options, window: int) -> None:
        self.send_mss = max(88, min(opts.mss or 536, self.our_mss))
        self.cc = (Reno if self.opts.congestion == "reno" else Cubic)(self.send_mss)
        self.pmtu.start(self.send_mss)
        if opts.wscale is not None:
            self.snd_wscale = opts.wscale
            self.rcv_wscale = OUR_WSCALE
        self.ts_ok = self.opts.timestamps and opts.ts is not None
        if self.ts_ok:
            self.ts_recent = opts.ts[0]  # type: ignore[index]
        self.sack_ok = self.opts.sack and opts.sack_ok
        self.snd_wnd = window  # never scaled in a SYN

    def _send_syn(self, now: float) -> None:
        flags = SYN | (ACK if self.state == SYN_RECEIVED else 0)
        syn_side = self.state == SYN_SENT
        options = wire.build_options(
            mss=self.our_mss,
            wscale=OUR_WSCALE if (syn_side or self.rcv_wscale) else None,
            sack_ok=self.opts.sack and (syn_side or self.sack_ok),
            ts=(self._tsval(now), self.ts_recent) if (syn_side and self.opts.timestamps) or self.ts_ok else None)
        window = min(self.opts.recv_buffer, 0xFFFF)  # never scaled in a SYN (RFC 7323 2.2)
        ack = self.rcv_nxt if flags & ACK else 0
        if flags & ACK:  # a SYN-ACK offers this window: data within it is acceptable from the handshake's ACK on
            self.last_advertised_right = max(self.last_advertised_right, self.rcv_nxt + window)
        self._out.append(wire.build_segment(self._src, self._dst, self.local[1], self.remote[1], self.iss, ack,
                                            flags, window, options))
        self.snd_nxt = self.snd_max = self.iss + 1
        self.syn_sent_at = now
        if self.rto_at is None:
            self.rto_at = now + self.rtt.rto

    # ---- user side ------------------------------------------------------------------------------------
    def send(self, data: bytes | memoryview) -> int:
        """Queue bytes to send; returns how many the bounded send buffer took (0 when full: a `TcpWritable` event
        follows once acks free room). Raises BrokenPipeError after shutdown_write/close, or the connection's
        error once it failed."""
        if self.state not in CAN_SEND or self.fin_queued:
            if self.error:
                raise self.error
            raise BrokenPipeError(errno.EPIPE, "the connection is closed for sending")
        room = self.send_space()
        if room <= 0:
            self._was_full = True
            return 0
        n = min(room, len(data))
        self.sbuf += data[:n]  # a copy: the caller may reuse its buffer
        if n < len(data):
            self._was_full = True
        return n

    def send_space(self) -> int:
        """Free room in the send buffer, bytes."""
        return self.opts.send_buffer - len(self.sbuf)

    def recv(self, max_bytes: int) -> bytes:
        """Up to `max_bytes` received bytes (b"" if none; see `eof` for the peer's FIN). Reading may reopen the
        window: a window update is then sent (RFC 9293 3.8.6.2.2)."""
        rbuf = self.rbuf
        if not rbuf:
            return b""
        if max_bytes >= len(rbuf):
            data = bytes(rbuf)  # one copy (a slice then bytes() would be two)
            rbuf.clear()
        else:
            with memoryview(rbuf) as view:
                data = bytes(view[:max_bytes])
            del rbuf[:max_bytes]
        # Reading opened the window: tell the peer when that is worth a segment (RFC 9293 3.8.6.2.2).
        if self.state in RECEIVING:
            grown = self.rcv_nxt + self._window_bytes() - self.last_advertised_right
            nearly_closed = self.last_advertised_right - self.rcv_nxt < self.send_mss
            worth_it = min(self.opts.recv_buffer // 2, 32 * self.send_mss)
            if grown >= worth_it or (nearly_closed and grown >= self.send_mss):
                self.ack_now = True
                if nearly_closed:
                    self.window_reopened = True
        return data

    def recv_available(self) -> int:
        """Bytes received and not yet read."""
        return len(self.rbuf)

    def shutdown_write(self, now: float) -> None:
        """Send FIN after the buffered data (half-close, RFC 9293 3.6); closes at once in SYN_SENT."""
        if self.state in (ESTABLISHED, CLOSE_WAIT, SYN_RECEIVED):
            self.fin_queued = True
        elif self.state == SYN_SENT:
            self._finish(None)

    def close(self, now: float) -> None:
        """Close both ways: FIN after buffered data, or RST if unread data remains (RFC 9293 3.6, as Linux)."""
        if self.state in (SYN_SENT, CLOSED, LISTEN):
            self._finish(None)
            return
        if self.rbuf and not self.eof:
            self.abort(now)  # unread data: RFC 9293 says reset, as Linux does
            return
        self.shutdown_write(now)

    def abort(self, now: float) -> None:
        """Reset the connection (RST, RFC 9293 3.6); it closes with ConnectionAbortedError."""
        if self.state not in (CLOSED, TIME_WAIT, SYN_SENT):
            self._out.append(self._segment(RST | ACK, self.snd_nxt, now))
        self._finish(ConnectionAbortedError(errno.ECONNABORTED, "connection aborted"))

    def time_out(self, error: TimeoutError, now: float) -> None:
        """Fail the connection at once with `error` (an ETIMEDOUT the caller words), as if its own timers had
        given up: the runtime's verdict that the path is dead (a WireGuard peer that stopped answering). A
        RST goes out as after a keep-alive timeout (Linux does the same), in case the path comes back."""
        if self.state in (CLOSED, TIME_WAIT):
            return
        if self.state != SYN_SENT:
            self._out.append(self._segment(RST | ACK, self.snd_nxt, now))
        self._finish(error)

    def is_finished(self) -> bool:
        """CLOSED (TIME_WAIT over): the stack may forget the 4-tuple."""
        return self.state == CLOSED

    # ---- events ----------------------------------------------------------------------------------------
    def events(self) -> list[TcpEvent]:
        """Events since the last call, drained: TcpConnected, TcpReadable, TcpWritable, TcpClosed."""
        if self._readable:
            self._readable = False
            self._events.append(TcpReadable(self))
        if self._writable:
            self._writable = False
            self._events.append(TcpWritable(self))
        events, self._events = self._events, []
        return events

    def _finish(self, error: BaseException | None) -> None:
        if self.state == CLOSED:
            return
        self.state = CLOSED
        if error is not None and self.error is None:
            self.error = error
        self.rto_at = self.persist.at = self.delack_at = self.time_wait_at = self.keepalive.at = None
        self.rx_pmtu.quiet_at = self.rx_pmtu.hold_at = None
        self.eof = True
        self._events.append(TcpClosed(self, self.error))

    # ---- helpers ------------------------------------------------------------------------------------------
    def _tsval(self, now: float) -> int:
        return (int(now * 1000) + self.ts_offset) & M32

    def _window_bytes(self) -> int:
        held = len(self.rbuf) + self.reassembly.held
        free = self.opts.recv_buffer - held
        # The stack shares one receive budget among its connections (as Linux's tcp_mem does), so many
        # parallel transfers cannot together invite more than the UDP socket and the loop can absorb. The
        # right edge never moves left, though (RFC 9293 3.8.6.2.1): a lowered cap applies as data is read.
        capped = min(free, self.window_cap - held)
        promised = self.last_advertised_right - self.rcv_nxt
        return max(0, min(max(capped, promised), free, 0xFFFF << self.rcv_wscale))

    def _segment(self, flags: int, seq: int, now: float, payload: bytes | memoryview = b"",
                 sack: bool = False) -> bytes:
        window = self._window_bytes()
        if flags & ACK:
            self.last_advertised_right = self.rcv_nxt + window
        blocks: tuple[tuple[int, int], ...] = ()
        if sack and self.sack_ok and self.reassembly.ranges:
            blocks = self.reassembly.sack_blocks()
        self.segments_out += 1
        if self.ts_ok and not blocks:  # what an established connection sends: one pack, one payload copy
            return wire.build_ts_segment(self._pseudo, self.local[1], self.remote[1], seq, self.rcv_nxt, flags,
                                         window >> self.rcv_wscale, (int(now * 1000) + self.ts_offset) & M32,
                                         self.ts_recent, payload)
        options = b""
        if self.ts_ok or blocks:
            options = wire.build_options(ts=(self._tsval(now), self.ts_recent) if self.ts_ok else None, sack=blocks)
        return wire.build_segment_from(self._pseudo, self.local[1], self.remote[1], seq, self.rcv_nxt, flags,
                                       window >> self.rcv_wscale, options, payload)

    def _options_len(self) -> int:
        return 12 if self.ts_ok else 0

    # ---- input -----------------------------------------------------------------------------------------
    def receive_segment(self, segment: memoryview | bytes, now: float) -> None:
        """One TCP segment (header + payload, IP stripped) at `now` (RFC 9293 3.10.7). Never raises: bad
        segments count in `drops`, unforeseen failures in `internal_errors`."""
        try:
            self._receive(segment, now)
        except Exception:  # never into the runtime; counted apart so tests can tell bugs from bad input
            self.internal_errors += 1

    def _receive(self, segment: memoryview | bytes, now: float) -> None:
        if len(segment) < 20:
            self.drops += 1
            return
        if self.opts.verify_checksums and not wire.checksum_ok(self._dst, self._src, segment):
            self.drops += 1
            return
        _, _, seq_w, ack_w, offset, flags, window, _, _ = HEADER.unpack_from(segment)
        header_len = (offset >> 4) * 4
        if header_len < 20 or header_len > len(segment):
            self.drops += 1
            return
        if (self.state == ESTABLISHED and flags & _FAST_FLAGS == ACK and seq_w == self.rcv_nxt & M32
                and self._receive_predicted(segment, header_len, ack_w, window, now)):
            return
        opts = wire.parse_options(segment[20:header_len]) if header_len > 20 else wire.NO_OPTIONS
        if opts is None:
            self.drops += 1
            return
        payload = segment[header_len:]
        self.segments_in += 1
        self.last_receive = now
        if self.state == SYN_SENT:
            self._receive_syn_sent(seq_w, ack_w, flags, window, opts, now)
            return
        if self.state == CLOSED:
            return
        seq = _unwrap(seq_w, self.rcv_nxt)
        # Acceptability (RFC 9293 3.10.7.4) against the window we advertised.
        wnd = max(self.last_advertised_right - self.rcv_nxt, 0)
        seg_len = len(payload) + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
        if seg_len == 0:
            acceptable = (seq == self.rcv_nxt) if wnd == 0 else self.rcv_nxt <= seq < self.rcv_nxt + wnd + 1
        else:
            acceptable = wnd > 0 and (self.rcv_nxt <= seq < self.rcv_nxt + wnd
                                      or self.rcv_nxt <= seq + seg_len - 1 < self.rcv_nxt + wnd)
            if not acceptable and seq < self.rcv_nxt <= seq + seg_len - 1:
                acceptable = True  # partially old: the new part is usable
        if flags & RST:
            self._receive_rst(seq, now)
            return
        if not acceptable:
            self.ack_now = True  # old duplicate or beyond the window: answer with our state
            return
        if flags & SYN:
            if self.state == SYN_RECEIVED and seq == self.irs:
                self.ack_now = True  # a retransmitted SYN: our SYN-ACK went missing; RTO resends it
                return
            self.ack_now = True  # RFC 5961 4.2: challenge ACK
            return
        if not flags & ACK:
            return
        if seq > self.rcv_nxt and self.state in RECEIVING:  # the peer sent data we lack (pmtu.ReceiveWatch)
            self.rx_pmtu.beyond(now, self.rcv_nxt, len(payload), max(HOLD, 2 * self.rtt.rto))
        if self.ts_ok and opts.ts is not None and seq <= self.rcv_nxt:
            self.ts_recent = opts.ts[0]
        if self.state == SYN_RECEIVED:
            ack = _unwrap(ack_w, self.snd_una)
            if not self.snd_una < ack <= self.snd_max:
                self._out.append(wire.build_segment(self._src, self._dst, self.local[1], self.remote[1], ack_w, 0,
                                                    RST, 0))
                return
            self._established(now)
        self._process_ack(ack_w, window, opts, now, len(payload) > 0 or bool(flags & FIN))
        if self.state == CLOSED:
            return
        if payload:
            self._receive_data(seq, payload, now)
        if flags & FIN:
            fin_seq = seq + len(payload)
            if self.fin_received_seq is None:
                self.fin_received_seq = fin_seq
            self.ack_now = True
        self._maybe_consume_fin(now)

    def _data_arrived(self, now: float) -> None:
        """In-order data was taken: readable, and an ACK at once every second segment, else delayed (RFC 9293
        3.8.6.3, RFC 1122 4.2.3.2)."""
        self._readable = True
        if self.rx_pmtu.quiet_at is None:
            self.rx_pmtu.activity(now, self._quiet())
        self.unacked_segments += 1
        if self.unacked_segments >= 2:
            self.ack_now = True
        elif self.delack_at is None:
            self.delack_at = now + self.opts.delayed_ack

    def _release_sent(self, count: int) -> None:
        """Drop `count` acknowledged bytes from the send buffer; a buffer that was full raises TcpWritable."""
        drop = min(count, len(self.sbuf))
        if drop:
            del self.sbuf[:drop]
            self.sbuf_seq += drop
            if self._was_full:
                self._was_full = False
                self._writable = True

    def _receive_predicted(self, segment: memoryview | bytes, header_len: int, ack_w: int, window: int,
                           now: float) -> bool:
        """Header prediction (RFC 9293 3.10.7.4 done as Van Jacobson's, Linux's tcp_rcv_established): the two
        segments a bulk transfer is made of, in ESTABLISHED, in order, with no options but timestamps, ACK set
        and no SYN/FIN/RST/URG (the caller checked those):
        - the next data in sequence that acknowledges nothing new (a window update it may carry is taken);
        - a pure ACK that acknowledges new data, outside loss recovery, with no SACK blocks to take in.
        Either takes the few steps the general path would take for it, with the same outcome to the last
        field (tests/unit/test_tcp_fast_path.py holds the two side by side); anything else returns False
        untouched and goes the general way."""
        if header_len == 32:
            if not self.ts_ok or segment[20:24] != wire.TS_FAST_PREFIX:
                return False
        elif header_len != 20:
            return False
        size = len(segment) - header_len
        if self.fin_received_seq is not None or self.scoreboard.blocks:
            return False
        new_window = window << self.snd_wscale
        if not new_window:
            return False
        snd_una = self.snd_una
        if size:
            # Data: nothing newly acknowledged, room for all of it, no hole to fill.
            rcv_nxt = self.rcv_nxt
            if (ack_w != snd_una & M32 or size > self.last_advertised_right - rcv_nxt or self.reassembly.ranges
                    or self.recovery.dupacks >= 3):
                return False
            self.segments_in += 1
            self.last_receive = now
            if header_len == 32:
                self.ts_recent = _TS.unpack_from(segment, 24)[0]
            self.snd_wnd = new_window
            self.persist.at = None
            self.rbuf += segment[header_len:]
            self.rcv_nxt = rcv_nxt + size
            self.bytes_received += size
            self._data_arrived(now)
            return True
        # A pure ACK of new data.
        recovery = self.recovery
        if recovery.active or recovery.recovery_tsval is not None or recovery.suspect_at is not None \
                or self.fin_seq is not None or self.pmtu.probe_end is not None:
            return False
        ack = _unwrap(ack_w, snd_una)
        if not snd_una < ack <= self.snd_max:
            return False
        self.segments_in += 1
        self.last_receive = now
        rtt = self.rtt
        if header_len == 32:
            tsval, tsecr = _TS.unpack_from(segment, 24)
            self.ts_recent = tsval
            if tsecr:
                rtt.sample((((int(now * 1000) + self.ts_offset) & M32) - tsecr & M32) / 1000.0)
            elif rtt.timed_seq is not None:
                rtt.on_ack(ack, now)
        elif rtt.timed_seq is not None:
            rtt.on_ack(ack, now)
        acked = ack - snd_una
        self._release_sent(acked)
        self.snd_una = ack
        if self.snd_nxt < ack:
            self.snd_nxt = ack
        self.retries = 0
        recovery.dupacks = 0
        if self.rx_pmtu.quiet_at is None:
            self.rx_pmtu.activity(now, self._quiet())
        self.cc.on_ack(acked, now, rtt.srtt)
        self.rto_at = now + rtt.rto if ack < self.snd_max else None
        self.persist.backoff = 0
        self.snd_wnd = new_window
        self.persist.at = None
        return True

    def _receive_syn_sent(self, seq_w: int, ack_w: int, flags: int, window: int, opts: wire.Options,
                          now: float) -> None:
        if flags & ACK:
            ack = _unwrap(ack_w, self.snd_una)
            if ack != self.iss + 1:
                if not flags & RST:
                    self._out.append(wire.build_segment(self._src, self._dst, self.local[1], self.remote[1],
                                                        ack_w, 0, RST, 0))
                return
            if flags & RST:
                self._finish(ConnectionRefusedError(errno.ECONNREFUSED, "connection refused"))
                return
        elif flags & RST:
            return
        if not flags & SYN:
            return
        self.irs = seq_w
        self.rcv_nxt = seq_w + 1
        self._take_syn_options(opts, window)
        if flags & ACK:
            self.snd_una = self.iss + 1
            self.sbuf_seq = self.snd_una
            if self.retries == 0:  # Karn: only a SYN that was never resent gives a sample
                self.rtt.sample(now - self.syn_sent_at)
            self._established(now)
            self.ack_now = True
        else:
            self.state = SYN_RECEIVED  # simultaneous open
            self._send_syn(now)

    def _established(self, now: float) -> None:
        self.state = ESTABLISHED
        self.snd_una = max(self.snd_una, self.iss + 1)
        self.sbuf_seq = self.snd_una
        self.rto_at = None
        self.retries = 0
        self.connect_deadline = None
        self.rtt.reset_after_handshake()
        self._events.append(TcpConnected(self))
        self._writable = True
        self.keepalive.start(now)

    def _receive_rst(self, seq: int, now: float) -> None:
        if seq == self.rcv_nxt or (self.state == SYN_RECEIVED and seq == self.irs + 1):
            if self.state in (TIME_WAIT, LAST_ACK, CLOSING):
                self._finish(None)
            else:
                self._finish(ConnectionResetError(errno.ECONNRESET, "connection reset by peer"))
        elif self.rcv_nxt <= seq < self.last_advertised_right:
            self.ack_now = True  # RFC 5961 3.2: in window but not exact: challenge ACK

    def _process_ack(self, ack_w: int, window: int, opts: wire.Options, now: float, carries_data: bool) -> None:
        ack = _unwrap(ack_w, self.snd_una)
        if ack > self.snd_max:
            self.ack_now = True  # acks something we never sent
            return
        new_window = window << self.snd_wscale
        rtt, recovery, scoreboard = self.rtt, self.recovery, self.scoreboard
        if opts.sack and self.sack_ok:
            scoreboard.update(opts.sack, self.snd_una, self.snd_max)
        if ack > self.snd_una:
            acked = ack - self.snd_una
            # RTT: from the echoed timestamp, else from the one timed segment (never a retransmitted one).
            if self.ts_ok and opts.ts is not None and opts.ts[1]:
                rtt.sample(((self._tsval(now) - opts.ts[1]) & M32) / 1000.0)
            elif rtt.timed_seq is not None:
                rtt.on_ack(ack, now)
            data_acked = acked
            if self.fin_seq is not None and ack > self.fin_seq:
                data_acked -= 1
            self._release_sent(data_acked)
            if recovery.recovery_tsval is not None and ack > recovery.recovery_una:
                undo = recovery.check_spurious(opts.ts)
                if undo is not None:
                    self.cc.__dict__.update(undo)
            if recovery.suspect_at is not None and ack > recovery.suspect_una:
                recovery.suspect_at = None  # the hole filled in time: it was reordering
            self.snd_una = ack
            if self.snd_nxt < ack:
                self.snd_nxt = ack
            if scoreboard.blocks:
                scoreboard.advance(ack)
            self.retries = 0
            recovery.dupacks = 0
            if self.rx_pmtu.quiet_at is None:
                self.rx_pmtu.activity(now, self._quiet())
            if self.pmtu.probe_end is not None:
                raised = self.pmtu.on_ack(ack, now)
                if raised:
                    self._set_send_mss(raised)  # the probe passed: its size is the MSS now
            if recovery.active:
                if ack >= recovery.recover:
                    recovery.active = False
                    self.cc.exit_recovery()
                else:
                    recovery.retransmitted_to = max(recovery.retransmitted_to, ack)
                    if not self.sack_ok:
                        self._retransmit_one(self.snd_una, now)  # NewReno partial ACK
            else:
                self.cc.on_ack(acked, now, rtt.srtt)
            self.rto_at = now + rtt.rto if self.snd_una < self.snd_max else None
            self.persist.backoff = 0
            self._after_ack_state(now)
        elif ack == self.snd_una and self.snd_una < self.snd_max and not carries_data \
                and new_window == self.snd_wnd:
            recovery.dupacks += 1
            if recovery.active and not self.sack_ok:
                self.cc.inflate()
        if (not recovery.active and recovery.suspect_at is None and self.snd_una < self.snd_max
                and (recovery.dupacks >= 3 or (scoreboard.blocks and scoreboard.sacked_bytes() >= 3 * self.send_mss))
                and recovery.suspect(now, self.snd_una, rtt)):
            self._enter_recovery(now)
        self.snd_wnd = new_window
        if self.snd_wnd == 0:
            # The peer is alive and says "full": that is flow control, not loss. Stop the retransmission
            # clock (what went past the window is resent once it opens) and probe with the persist timer.
            self.retries = 0
            if self.snd_nxt > self.snd_una and not recovery.active:
                self.snd_nxt = self.snd_una
                self.rto_at = None
            if self._unsent() or self.snd_nxt < self.snd_max:
                self.persist.arm(now, rtt.rto)
        else:
            self.persist.at = None

    def _after_ack_state(self, now: float) -> None:
        if self.fin_seq is not None and self.snd_una > self.fin_seq:
            if self.state == FIN_WAIT_1:
                self.state = FIN_WAIT_2
            elif self.state == CLOSING:
                self._enter_time_wait(now)
            elif self.state == LAST_ACK:
                self._finish(None)

    def _enter_recovery(self, now: float) -> None:
        probe_lost = self.pmtu.probe_seq is not None and self.pmtu.on_loss(self.snd_una, now)
        self.recovery.begin(self.snd_una, self.snd_max, dict(self.cc.__dict__),
                            self._tsval(now) if self.ts_ok else None)
        if probe_lost:
            # A lost path-MTU probe says the path is narrower, not congested (RFC 4821 7.6.2): resend its bytes
            # in the current size and keep the window (recovery's exit deflates to ssthresh: keep that too).
            self.cc.ssthresh = max(self.cc.cwnd, 2 * self.cc.mss)
        else:
            self.cc.on_loss(self._flight(), now)
        self._retransmit_one(self.snd_una, now)

    def _flight(self) -> int:
        return self.snd_nxt - self.snd_una

    def _retransmit_one(self, seq: int, now: float) -> int:
        """Resend the segment at seq (data from the send buffer); returns the bytes resent."""
        offset = seq - self.sbuf_seq
        if offset < 0:
            return 0
        size = min(self.send_mss - self._options_len(), len(self.sbuf) - offset)
        if size > 0:
            end = seq + size
            for start, stop in self.scoreboard.blocks:  # don't resend what the peer holds
                if start <= seq < stop:
                    return 0
                if seq < start < end:
                    end = start
                    size = end - seq
            self._out.append(self._segment(ACK | PSH, seq, now, memoryview(self.sbuf)[offset:offset + size]))
            self.retransmits += 1
            self.rtt.timed_seq = None
            self.ack_now = False
            if self.rto_at is None:
                self.rto_at = now + self.rtt.rto
            return size
        if self.fin_seq is not None and seq == self.fin_seq:
            self._out.append(self._segment(FIN | ACK, seq, now))
            self.retransmits += 1
            return 1
        return 0

    def _receive_data(self, seq: int, payload: memoryview | bytes, now: float) -> None:
        if self.state not in RECEIVING:
            return
        if self.fin_received_seq is not None:
            # A FIN seen out of order ends the stream there; holes before it still get filled.
            if seq >= self.fin_received_seq:
                return
            payload = payload[:self.fin_received_seq - seq]
        if seq < self.rcv_nxt:
            payload = payload[self.rcv_nxt - seq:]
            seq = self.rcv_nxt
        room = self.last_advertised_right - seq
        if room <= 0:
            self.ack_now = True
            return
        if len(payload) > room:
            payload = payload[:room]
        if seq == self.rcv_nxt:
            self.rbuf += payload
            self.rcv_nxt += len(payload)
            self.bytes_received += len(payload)
            if self.reassembly.ranges:
                for fresh in self.reassembly.drain(self.rcv_nxt):
                    self.rbuf += fresh
                    self.rcv_nxt += len(fresh)
                    self.bytes_received += len(fresh)
                self.ack_now = True
            self._data_arrived(now)
        else:
            if not self.reassembly.store(seq, bytes(payload)):
                self.drops += 1
            self.ack_now = True  # a hole: duplicate ACK with SACK at once, so the sender recovers fast

    def _maybe_consume_fin(self, now: float) -> None:
        if self.fin_received_seq is None or self.rcv_nxt != self.fin_received_seq or self.eof:
            return
        self.rcv_nxt += 1
        self.eof = True
        self._readable = True
        self.ack_now = True
        if self.state in (ESTABLISHED, SYN_RECEIVED):
            self.state = CLOSE_WAIT
        elif self.state == FIN_WAIT_1:
            if self.fin_seq is not None and self.snd_una > self.fin_seq:
                self._enter_time_wait(now)
            else:
                self.state = CLOSING
        elif self.state == FIN_WAIT_2:
            self._enter_time_wait(now)

    def _enter_time_wait(self, now: float) -> None:
        self.state = TIME_WAIT
        self.rto_at = self.persist.at = self.keepalive.at = None
        self.rx_pmtu.quiet_at = self.rx_pmtu.hold_at = None
        self.time_wait_at = now + self.opts.time_wait
        self._events.append(TcpClosed(self, None))

    # ---- ICMP ---------------------------------------------------------------------------------------
    def icmp_error(self, kind: IcmpKind | str, now: float, mtu: int | None = None) -> None:
        """An ICMP error about this connection (RFC 5927 guidance): TOO_BIG lowers the MSS to `mtu` (path MTU
        discovery, RFC 1191 / RFC 8201) and resends; in SYN_SENT, port unreachable refuses the connection and
        other unreachables fail it after a retry (ECONNREFUSED / EHOSTUNREACH)."""
        if kind == IcmpKind.TOO_BIG and mtu:
            header = 40 if self.local[0].version == 4 else 60
            new_mss = max(536 if self.local[0].version == 4 else 1220, mtu - header)
            self.pmtu.cap(new_mss)
            if new_mss < self.send_mss:
                self._set_send_mss(new_mss)
                self.snd_nxt = self.snd_una  # resend what was too big, in the new size
        elif self.state == SYN_SENT:
            if kind == IcmpKind.PORT_UNREACHABLE:
                self._finish(ConnectionRefusedError(errno.ECONNREFUSED, "connection refused (ICMP port unreachable)"))
            elif self.retries >= 1:
                self._finish(OSError(errno.EHOSTUNREACH, "no route to host (ICMP unreachable)"))

    # ---- output -------------------------------------------------------------------------------------
    def _unsent(self) -> int:
        return len(self.sbuf) - (self.snd_nxt - self.sbuf_seq)

    def segments_to_send(self, now: float) -> list[bytes]:
        """TCP segments to send now (checksums filled in), drained: data and FIN as the windows allow,
        retransmissions, and a (delayed) ACK."""
        if self.state in SENDING:
            if self.recovery.active and self.sack_ok:
                self._retransmit_holes(now)
            self._send_data(now)
        if self.ack_now or (self.delack_at is not None and now >= self.delack_at):
            if self.state not in (CLOSED, SYN_SENT):
                self._out.append(self._segment(ACK, self.snd_nxt, now, sack=True))
                if self.window_reopened:
                    self._arm_window_update(now)
            self.ack_now = False
            self.delack_at = None
            self.unacked_segments = 0
        out, self._out = self._out, []
        if out:
            self.ack_now = False
            self.delack_at = None
            self.unacked_segments = 0
        return out

    def _retransmit_holes(self, now: float) -> None:
        scoreboard, recovery = self.scoreboard, self.recovery
        if not scoreboard.blocks:
            return
        highest = scoreboard.blocks[-1][1]
        budget = self.cc.cwnd - (self._flight() - scoreboard.sacked_bytes())
        seq = max(recovery.retransmitted_to, self.snd_una)
        while seq < highest and budget > 0:
            hole_end = scoreboard.next_block_after(seq, highest)
            inside = scoreboard.covering(seq)
            if inside is not None:
                seq = inside
                continue
            sent = self._retransmit_one(seq, now)
            if not sent:
                break
            seq += sent
            budget -= sent
            if seq >= hole_end:
                seq = hole_end
        recovery.retransmitted_to = seq

    def _send_data(self, now: float) -> None:
        if (self.pmtu.next_probe_at is not None and now >= self.pmtu.next_probe_at and not self.recovery.active
                and self.snd_nxt == self.snd_max):
            self._send_probe(now)
        mss = self.send_mss - self._options_len()
        sbuf = self.sbuf
        view = memoryview(sbuf)
        scoreboard = self.scoreboard
        while True:
            unsent = len(sbuf) - (self.snd_nxt - self.sbuf_seq)
            in_flight = self.snd_nxt - self.snd_una
            window_room = self.snd_wnd - in_flight
            pipe = in_flight - scoreboard.sacked_bytes() if scoreboard.blocks else in_flight
            cwnd_room = self.cc.cwnd - pipe
            if unsent > 0:
                size = min(mss, unsent, window_room, cwnd_room)
                if size <= 0:
                    break
                if size < mss and size < unsent and in_flight:
                    break  # avoid silly small segments while waiting for the window to reopen
                offset = self.snd_nxt - self.sbuf_seq
                seq = self.snd_nxt
                flags = ACK | (PSH if size == unsent else 0)
                self._out.append(self._segment(flags, seq, now, view[offset:offset + size]))
                if seq < self.snd_max:
                    self.retransmits += 1
                else:
                    self.bytes_sent += size
                    if not self.ts_ok:
                        self.rtt.start_timing(seq, now)
                self.snd_nxt += size
                self.snd_max = max(self.snd_max, self.snd_nxt)
                if self.rto_at is None:
                    self.rto_at = now + self.rtt.rto
                continue
            if self.fin_queued and self.fin_seq is None:
                self.fin_seq = self.snd_nxt
                self._out.append(self._segment(FIN | ACK, self.snd_nxt, now))
                self.snd_nxt += 1
                self.snd_max = max(self.snd_max, self.snd_nxt)
                self.state = _FIN_STATE.get(self.state, self.state)
                if self.rto_at is None:
                    self.rto_at = now + self.rtt.rto
            elif self.fin_seq is not None and self.snd_nxt == self.fin_seq and self.snd_nxt < self.snd_max:
                self._out.append(self._segment(FIN | ACK, self.snd_nxt, now))  # after a go-back on RTO
                self.snd_nxt += 1
            break

    def _send_probe(self, now: float) -> None:
        """A path-MTU probe (pmtu.SendSearch): one new segment of the probed size, when the data and both
        windows allow it; else it waits for a later call."""
        probe_mss = self.pmtu.probe_size(now)
        size = probe_mss - self._options_len()
        if size <= self.send_mss - self._options_len():
            return
        offset = self.snd_nxt - self.sbuf_seq
        in_flight = self.snd_nxt - self.snd_una
        pipe = in_flight - self.scoreboard.sacked_bytes() if self.scoreboard.blocks else in_flight
        if len(self.sbuf) - offset < size or self.snd_wnd - in_flight < size or self.cc.cwnd - pipe < size:
            return
        seq = self.snd_nxt
        flags = ACK | (PSH if size == len(self.sbuf) - offset else 0)
        self._out.append(self._segment(flags, seq, now, memoryview(self.sbuf)[offset:offset + size]))
        self.bytes_sent += size
        if not self.ts_ok:
            self.rtt.start_timing(seq, now)
        self.snd_nxt = self.snd_max = seq + size
        if self.rto_at is None:
            self.rto_at = now + self.rtt.rto
        self.pmtu.probe_sent(seq, seq + size, probe_mss)

    def _set_send_mss(self, mss: int) -> None:
        self.send_mss = mss
        self.cc.mss = mss

    def _quiet(self) -> float:
        return max(QUIET, 2 * self.rtt.rto)

    # ---- timers -------------------------------------------------------------------------------------
    def next_timer(self) -> float | None:
        """The earliest deadline (seconds, the caller's clock; 0.0 when an ACK is due at once), or None."""
        if self.ack_now:
            return 0.0
        best = None
        for deadline in (self.rto_at, self.delack_at, self.persist.at, self.time_wait_at, self.connect_deadline,
                         self.keepalive.at, self.recovery.suspect_at, self.window_update.at, self.rx_pmtu.quiet_at,
                         self.rx_pmtu.hold_at):
            if deadline is not None and (best is None or deadline < best):
                best = deadline
        return best

    def handle_timer(self, now: float) -> None:
        """Fire whatever is due at `now`: connect deadline, TIME_WAIT end, the loss-suspicion window, RTO,
        persist, window update, keep-alive."""
        if self.connect_deadline is not None and now >= self.connect_deadline:
            self._finish(TimeoutError(errno.ETIMEDOUT, "connection timed out"))
            return
        if self.time_wait_at is not None and now >= self.time_wait_at:
            self.time_wait_at = None
            self.state = CLOSED
            return
        recovery = self.recovery
        if recovery.suspect_at is not None and now >= recovery.suspect_at:
            recovery.suspect_at = None
            if not recovery.active and self.snd_una == recovery.suspect_una and self.snd_una < self.snd_max:
                self._enter_recovery(now)
        if self.rto_at is not None and now >= self.rto_at:
            self._on_rto(now)
        if self.persist.at is not None and now >= self.persist.at:
            self._on_persist(now)
        if self.window_update.at is not None and now >= self.window_update.at:
            self._on_window_update(now)
        if self.keepalive.at is not None and now >= self.keepalive.at:
            self._on_keepalive(now)
        rx = self.rx_pmtu
        if rx.hold_at is not None and now >= rx.hold_at:
            self._judge_black_hole(now)
        if rx.quiet_at is not None and now >= rx.quiet_at:
            if self.state not in RECEIVING:
                rx.quiet_at = None
            elif rx.quiet_due(now, self.last_receive, self._quiet()):
                # Quiet after activity: a keep-alive-shaped ACK makes the peer answer with its SND.NXT, which
                # tells whether it has sent data that never arrived (pmtu.ReceiveWatch).
                self._out.append(self._segment(ACK, self.snd_una - 1, now))

    def _judge_black_hole(self, now: float) -> None:
        """The receive side's hold timer (pmtu.ReceiveWatch): on a black hole, an ICMP too-big to the peer
        quoting its segment at RCV.NXT in the size that vanishes, so it lowers its path MTU and resends."""
        rx = self.rx_pmtu
        size = rx.mss + HEADERS[rx.version]
        mtu = rx.judge(now, self.rcv_nxt) if self.state in RECEIVING else None
        rx.hold_at = None
        if mtu is not None:
            self.icmp_out.append(too_big_message(self._src, self._dst, self.local[1], self.remote[1], self.rcv_nxt,
                                                 size, mtu))
            rx.quiet_at = None
            rx.activity(now, self._quiet())  # still stuck after the resend? ask again, and report lower

    def defer_rto(self, until: float) -> None:
        """The path below reports a stall that delays segments without losing them (an outer TCP repairing a
        loss, when the tunnel runs over a WebSocket). A retransmission timeout due before `until`
        would only resend what is still on its way, and go back over the whole flight: hold it until then."""
        if self.rto_at is not None and self.rto_at < until:
            self.rto_at = until

    def path_restored(self, now: float) -> bool:
        """The path below came back after an outage (the tunnel moved to another address or transport and the
        peer answered there): a retransmission timeout backed off during the outage would wait out its doubled
        RTO on a path that works again, maybe past the user timeout. Bring it forward to `now` (RFC 6069's
        idea: evidence that the path is back reverts the backoff). True if a retransmission is now due."""
        if self.rto_at is None or self.retries == 0 or self.rto_at <= now:
            return False
        self.rto_at = now
        return True

    def _on_rto(self, now: float) -> None:
        self.retries += 1
        if self.user_timeout.on_rto(now, self.snd_una, self.rtt.rto):
            self._finish(TimeoutError(errno.ETIMEDOUT, f"connection timed out (nothing acknowledged for "
                                      f"{self.opts.user_timeout:g} s: user timeout)"))
            return
        if self.retries > self.opts.max_retries:
            self._finish(TimeoutError(errno.ETIMEDOUT, "connection timed out (no acknowledgement)"))
            return
        self.rtt.back_off()
        self.rto_at = self.user_timeout.clamp(now + self.rtt.rto)
        if self.state in (SYN_SENT, SYN_RECEIVED):
            self._send_syn(now)
            self.rto_at = self.user_timeout.clamp(now + self.rtt.rto)
            if self.connect_deadline is not None:
                self.rto_at = min(self.rto_at, self.connect_deadline)
            return
        opt = self._options_len()
        head = min(self.send_mss - opt, len(self.sbuf) - (self.snd_una - self.sbuf_seq), self.snd_wnd) + opt
        lowered = self.pmtu.on_rto(now, self.last_receive, self.snd_una, head)
        if lowered:
            self._set_send_mss(lowered)  # a black hole: resend in the fallback size (pmtu.SendSearch)
        self.cc.on_timeout(self._flight(), now)
        self.recovery.on_timeout()
        self.scoreboard.clear()
        self.snd_nxt = self.snd_una  # go back: resend from the first unacknowledged byte
        if self.fin_seq is not None and self.snd_una == self.fin_seq:
            self._out.append(self._segment(FIN | ACK, self.fin_seq, now))
            self.snd_nxt = self.fin_seq + 1
        self.retransmits += 1

    def _arm_window_update(self, now: float) -> None:
        self.window_reopened = False
        self.window_update.arm(now, self.rcv_nxt, max(self.rtt.rto, self.opts.rto_min))

    def _on_window_update(self, now: float) -> None:
        still_needed = self.state in RECEIVING and self.last_advertised_right - self.rcv_nxt >= self.send_mss
        if self.window_update.fire(now, self.rcv_nxt, still_needed, max(self.rtt.rto, self.opts.rto_min)):
            self.ack_now = True

    def _on_persist(self, now: float) -> None:
        self.persist.at = None
        if self.snd_wnd == 0 and (self._unsent() or self.snd_nxt < self.snd_max):
            # A zero-window probe: one old byte (seq snd_una - 1) makes the peer answer with its window.
            self._out.append(self._segment(ACK, self.snd_una - 1, now))
            self.persist.probed(now, self.rtt.rto)

    def _on_keepalive(self, now: float) -> None:
        action = self.keepalive.fire(now, self.last_receive)
        if action is KeepaliveAction.DEAD:
            self._finish(TimeoutError(errno.ETIMEDOUT, "connection timed out (keepalive)"))
        elif action is KeepaliveAction.PROBE:
            self._out.append(self._segment(ACK, self.snd_una - 1, now))

    def stats(self) -> dict[str, Any]:
        """{"state", "srtt" (s), "rto" (s), "cwnd" (bytes), "bytes_sent", "bytes_received", "retransmits",
        "buffered" (bytes held in all buffers), "send_window" (bytes), "mss" (bytes: what we send with now),
        "mss_max" (the negotiated or ICMP-lowered ceiling), "pmtu" ("off" | "searching" | "search complete":
        the send side's black-hole search), "black_holes" (fallbacks), "peer_mss" (what the peer may send us:
        our SYN's MSS, lowered by each black hole reported), "too_big_sent" (those reports)}."""
        return {"state": self.state, "srtt": self.rtt.srtt, "rto": self.rtt.rto, "cwnd": self.cc.cwnd,
                "bytes_sent": self.bytes_sent, "bytes_received": self.bytes_received,
                "retransmits": self.retransmits, "buffered": len(self.rbuf) + self.reassembly.held + len(self.sbuf),
                "send_window": self.snd_wnd, "mss": self.send_mss, "mss_max": self.pmtu.max_mss,
                "pmtu": self.pmtu.state, "black_holes": self.pmtu.black_holes, "peer_mss": self.rx_pmtu.mss,
                "too_big_sent": self.rx_pmtu.reports}


def reset_for(local: Address, remote: Address, segment: memoryview | bytes) -> bytes | None:
    """RFC 9293 3.10.7.1: the RST that answers a segment for no connection (never one for a RST)."""
    if len(segment) < 20:
        return None
    _, _, seq, ack, offset, flags, _, _, _ = HEADER.unpack_from(segment)
    if flags & RST:
        return None
    src, dst = local[0].packed, remote[0].packed
    if flags & ACK:
        return wire.build_segment(src, dst, local[1], remote[1], ack, 0, RST, 0)
    header_len = (offset >> 4) * 4
    seg_len = max(0, len(segment) - header_len) + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
    return wire.build_segment(src, dst, local[1], remote[1], 0, (seq + seg_len) & M32, RST | ACK, 0)
