"""A TCP connection whose peer vanished fails with ETIMEDOUT in bounded time (sans-I/O, a fake clock, step by
step): the user timeout (RFC 5482) with data unacknowledged, the tunnel's default keep-alives (RFC 9293 3.8.4)
when idle while waiting for an answer, and `time_out` (the runtime's verdict that the WireGuard peer is gone)."""

from __future__ import annotations

import dataclasses
import errno

import pytest

from tests.unit.test_tcp_steps import IRS, PLAIN, established, from_peer, out
from wgmagic.netstack.events import TcpClosed
from wgmagic.netstack.tcp.config import DEFAULT_CONFIG, TUNNEL_CONFIG, TcpConfig, tunnel_config
from wgmagic.netstack.tcp.pmtu import QUIET
from wgmagic.netstack.tcp.state import TcpState
from wgmagic.netstack.tcp.timers import UserTimeout
from wgmagic.netstack.wire.tcp import ACK, RST

TUNNEL = dataclasses.replace(TUNNEL_CONFIG, verify_checksums=True, timestamps=False, sack=False)


def run_timers(conn, until: float) -> list[float]:
    """Fire every deadline up to `until` in order; the times they fired at."""
    fired = []
    while conn.state is not TcpState.CLOSED and conn.next_timer() is not None and conn.next_timer() <= until:
        now = conn.next_timer()
        conn.handle_timer(now)
        out(conn, now)
        fired.append(now)
    return fired


def timed_out(conn) -> TimeoutError:
    assert conn.state is TcpState.CLOSED
    closed = [e for e in conn.events() if isinstance(e, TcpClosed)]
    assert len(closed) == 1 and closed[0].error is conn.error
    assert isinstance(conn.error, TimeoutError) and conn.error.errno == errno.ETIMEDOUT
    return conn.error


def test_the_defaults_linux_and_the_tunnel():
    assert DEFAULT_CONFIG.user_timeout is None and DEFAULT_CONFIG.keepalive_idle is None  # Linux's defaults
    assert (TUNNEL_CONFIG.user_timeout, TUNNEL_CONFIG.keepalive_idle, TUNNEL_CONFIG.keepalive_interval,
            TUNNEL_CONFIG.keepalive_count) == (30.0, 15.0, 5.0, 3)
    off = tunnel_config(user_timeout=None, keepalive_idle=None)
    assert off.user_timeout is None and off.keepalive_idle is None


def test_user_timeout_fails_unacknowledged_data_on_time_not_one_backed_off_rto_late():
    config = dataclasses.replace(PLAIN, user_timeout=10.0)
    conn = established(config)
    conn.send(b"select 3")
    (data,) = out(conn, 1.0)
    assert data.payload == b"select 3"
    fired = run_timers(conn, 100.0)
    # RTOs back off (0.3 s doubling: 1.3, 1.9, 3.1, 5.5) and the next (10.3) is clamped to 1.0 + 10 s.
    assert fired[-1] == pytest.approx(1.0 + 10.0)
    assert all(t < 11.0 for t in fired[:-1]) and len(fired) >= 4
    error = timed_out(conn)
    assert "user timeout" in str(error)
    assert out(conn, fired[-1]) == []


def test_an_acknowledgement_restarts_the_user_timeout():
    config = dataclasses.replace(PLAIN, user_timeout=10.0)
    conn = established(config)
    conn.send(b"a" * 100)
    out(conn, 1.0)
    run_timers(conn, 8.0)  # resent, still unanswered at 8 s
    assert conn.state is TcpState.ESTABLISHED
    conn.receive_segment(from_peer(ACK, IRS + 1, conn.iss + 1 + 100), 8.0)  # the peer answers: progress
    conn.send(b"b" * 100)
    out(conn, 8.0)
    run_timers(conn, 17.0)  # 11 s would have been the old deadline: the clock now runs from 8 s
    assert conn.state is TcpState.ESTABLISHED
    fired = run_timers(conn, 100.0)
    assert fired[-1] <= 8.0 + 10.0 + conn.rto  # the first RTO after 8 s starts the clock, so ~18.x s
    timed_out(conn)


def test_without_a_user_timeout_only_max_retries_ends_it():
    config = dataclasses.replace(PLAIN, user_timeout=None, max_retries=3, rto_max=1.0)
    conn = established(config)
    conn.send(b"x")
    out(conn, 1.0)
    fired = run_timers(conn, 100.0)
    assert len(fired) == 4  # three retransmissions, then the fourth RTO gives up
    assert "no acknowledgement" in str(timed_out(conn))


def test_user_timeout_machine_step_by_step():
    timer = UserTimeout(TcpConfig(user_timeout=5.0))
    assert timer.clamp(100.0) == 100.0  # not running yet
    assert not timer.on_rto(1.0, 10, waited=1.0)  # the clock starts at 0.0
    assert timer.clamp(100.0) == 5.0
    assert not timer.on_rto(3.0, 10, waited=2.0)  # same SND.UNA: the clock keeps running
    assert timer.on_rto(5.0, 10, waited=4.0)
    assert not timer.on_rto(6.0, 11, waited=1.0)  # progress: a new clock from 5.0
    assert UserTimeout(TcpConfig()).on_rto(1e9, 1, waited=1.0) is False  # off


def test_tunnel_keepalives_end_an_idle_connection_waiting_for_an_answer():
    conn = established(TUNNEL)
    conn.send(b"select pg_sleep(60)")
    out(conn, 0.2)
    conn.receive_segment(from_peer(ACK, IRS + 1, conn.iss + 1 + 19), 0.3)  # acked; now we wait for the rows
    assert conn.keepalive.at == pytest.approx(0.1 + 15.0)  # armed when established; re-armed lazily when due
    probes = []
    while conn.state is not TcpState.CLOSED:
        now = conn.next_timer()
        conn.handle_timer(now)
        probes += [(now, s) for s in out(conn, now)]
    # first the black-hole watch's one question after QUIET (tcp/pmtu.py: does the peer hold data for us?),
    # then idle 15 s, every 5 s, 3 keep-alive probes; all the same keep-alive-shaped segment
    quiet = max(QUIET, 2 * conn.rto)
    assert [round(t, 6) for t, _ in probes] == [round(0.3 + quiet, 6), 15.3, 20.3, 25.3]
    assert all(s.seq == conn.iss + 19 and s.payload == b"" and s.flags == ACK for _, s in probes)
    assert "keepalive" in str(timed_out(conn))


def test_answered_keepalives_keep_an_idle_connection_for_good():
    conn = established(TUNNEL)
    answered = 0
    while answered < 10:
        now = conn.next_timer()
        conn.handle_timer(now)
        for probe in out(conn, now):
            assert probe.payload == b""
            conn.receive_segment(from_peer(ACK, IRS + 1, conn.iss + 1), now + 0.05)  # the peer is alive
            answered += 1
    assert conn.state is TcpState.ESTABLISHED and now == pytest.approx(0.1 + 10 * 15.0 + 9 * 0.05)


def test_time_out_resets_and_fails_with_the_callers_error():
    conn = established(PLAIN)
    error = TimeoutError(errno.ETIMEDOUT, "the WireGuard peer at 198.51.100.1:51820 is not answering")
    conn.time_out(error, 2.0)
    (rst,) = out(conn, 2.0)
    assert rst.flags & RST
    assert timed_out(conn) is error
    conn.time_out(TimeoutError(errno.ETIMEDOUT, "again"), 3.0)  # already closed: nothing more
    assert conn.error is error and out(conn, 3.0) == [] and conn.events() == []
