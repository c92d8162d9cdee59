"""wgmagic.runtime.health: one function decides the tunnel's word (healthy, degraded, down, idle), with plain
numbers; `%wg status`, `wgmagic status`/`up`, the dashboard and the doctor show that word, never their own."""

from __future__ import annotations

import types

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.unit import tunnel_shapes as shapes
from wgmagic.runtime import health
from wgmagic.runtime.health import DEGRADED, DOWN, HEALTHY, IDLE, WORDS, doctor_health, retransmissions, tunnel_health


def test_a_session_with_nothing_out_of_line_is_healthy():
    verdict = tunnel_health(shapes.stats(), [shapes.peer()], shapes.samples(60), 60.0)
    assert verdict.word == HEALTHY and verdict.reasons == () and str(verdict) == "healthy"


def test_every_peer_not_answering_is_down_one_of_two_is_degraded():
    dead = shapes.peer(fingerprint="AAAAAAAA...", not_answering="no answer for 15 s")
    verdict = tunnel_health(shapes.stats(), [dead])
    assert verdict.word == DOWN and "AAAAAAAA..." in str(verdict) and "not answering" in str(verdict)
    verdict = tunnel_health(shapes.stats(), [dead, shapes.peer()])
    assert verdict.word == DEGRADED and "AAAAAAAA..." in str(verdict)
    assert tunnel_health(shapes.stats(), []).word == DOWN  # no peer: nothing can get through


def test_no_session_and_nothing_waiting_is_idle_not_a_fault():
    verdict = tunnel_health(shapes.stats(handshake_age=400.0), [shapes.peer(has_session=False)])
    assert verdict.word == IDLE and "next packet starts a handshake" in str(verdict)


def test_a_long_handshake_round_trip_is_degraded_at_the_doctors_threshold():
    from wgmagic.tools.doctor import OK, WARN, Report, _check_rtt

    slow = health.SLOW_ROUND_TRIP + 0.05
    verdict = tunnel_health(shapes.stats(handshake_rtt=slow), [shapes.peer()])
    assert verdict.word == DEGRADED and f"{slow * 1000:.0f} ms" in str(verdict)
    assert tunnel_health(shapes.stats(handshake_rtt=health.SLOW_ROUND_TRIP), [shapes.peer()]).word == HEALTHY
    for rtt, expected in ((slow, WARN), (health.SLOW_ROUND_TRIP, OK)):  # the doctor draws the line at the same place
        report = Report()
        _check_rtt(rtt, report.add)
        assert report.checks[0].verdict == expected


def test_the_doctors_loss_threshold_is_the_same():
    from wgmagic.tools import doctor

    assert doctor.LOSS_WARNING == health.LOSS_WARNING


def test_retransmissions_are_a_rate_over_the_window_not_since_the_tunnel_came_up():
    # 536 retransmissions long ago, then 0.2/s over the minute the plot shows: 12 in the window.
    records = shapes.samples(60.0, retransmits_per_s=0.2, retransmits_before=536, out_bytes_per_s=100_000.0)
    resent = retransmissions(records, 60.0, total=548)
    assert resent.count == 12 and resent.total == 548 and resent.window == 60.0
    assert round(resent.per_s, 6) == 0.2  # not 548 / uptime
    # about 6,000,000 bytes in 1368-byte segments: 12 of about 4,398 segments
    share = retransmissions(records, 60.0, 548, mss=1368).share
    assert share is not None and abs(share - 12 / (6_000_000 / 1368 + 12)) < 1e-3


def test_a_tunnel_younger_than_the_window_divides_by_the_window():
    records = shapes.samples(11.0, retransmits_per_s=50.0)  # 550 in 11 s, window 60 s
    resent = retransmissions(records, 60.0, total=550)
    assert resent.count == 550 and round(resent.per_s, 6) == round(550 / 60, 6)


def test_loss_on_the_path_is_degraded_and_a_few_retransmissions_are_not():
    lossy = shapes.samples(60.0, retransmits_per_s=100.0, out_bytes_per_s=1_000_000.0)
    verdict = tunnel_health(shapes.stats(), [shapes.peer()], lossy, 60.0)
    assert verdict.word == DEGRADED and "sent again over the last 1 min" in str(verdict)
    few = shapes.samples(60.0, retransmits_per_s=0.1, out_bytes_per_s=100.0)  # 6 of about 10: a large share, few
    assert tunnel_health(shapes.stats(), [shapes.peer()], few, 60.0).word == HEALTHY
    calm = shapes.samples(60.0, retransmits_per_s=1.0, out_bytes_per_s=1_000_000.0)  # well under 5%
    assert tunnel_health(shapes.stats(), [shapes.peer()], calm, 60.0).word == HEALTHY


@given(st.lists(st.tuples(st.floats(0.0, 2.0), st.integers(0, 50), st.floats(0.0, 1e7)), max_size=40),
       st.floats(1.0, 600.0), st.integers(0, 10**6), st.one_of(st.none(), st.integers(536, 9000)))
def test_retransmissions_stay_in_range_for_any_history(steps, window, total, mss):
    records, now, resent = [], 0.0, 0
    for gap, more, rate in steps:
        now, resent = now + gap, resent + more
        record = shapes.samples(0.0, start=now, retransmits_before=resent)[0]
        record["tcp_out_bytes_per_s"] = rate
        records.append(record)
    figures = retransmissions(records, window, total, mss)
    assert figures.count == (resent - records[0]["tcp_retransmits"] if len(records) > 1 else 0)
    assert abs(figures.per_s * window - figures.count) < 1e-6 * max(1, figures.count)
    assert figures.share is None or 0.0 <= figures.share <= 1.0
    assert figures.total == total


def _check(name: str, verdict: str, detail: str = "found"):
    from wgmagic.tools.doctor import Check

    return Check(name, verdict, detail)


def test_the_doctors_checks_in_the_same_words():
    assert doctor_health([_check("config", "ok"), _check("DNS", "skipped")]).word == HEALTHY
    assert doctor_health([_check("handshake RTT", "warning", "400 ms")]).word == DEGRADED
    verdict = doctor_health([_check("handshake", "ok"), _check("DNS", "failed", "db.internal not found")])
    assert verdict.word == DEGRADED and "DNS: db.internal not found" in str(verdict)  # the tunnel works
    assert doctor_health([_check("handshake", "failed", "no answer")]).word == DOWN
    assert doctor_health([_check("loss and RTT", "failed", "none of 40 echoes came back")]).word == DOWN


def _stand_in(stats, peers, records) -> types.SimpleNamespace:
    """The parts of a Tunnel that `%wg status` and `wgmagic up`'s line read (the figures: plain data)."""
    return types.SimpleNamespace(
        name="wg0", stats=lambda: stats, peer_report=lambda: peers, history=lambda window=None: records,
        forwards=[], socks_servers=[], exposes=[], via=None, transport_description="UDP")


def test_status_dashboard_and_the_status_line_show_the_one_verdict():
    from wgmagic.notebook.dashboard import tile_figures
    from wgmagic.notebook.status import TunnelStatus, tunnel_status_line

    cases = [
        (shapes.stats(), [shapes.peer()], shapes.samples(60)),
        (shapes.stats(handshake_rtt=0.5), [shapes.peer()], shapes.samples(60)),
        (shapes.stats(), [shapes.peer(not_answering="silent for 15 s")], shapes.samples(60)),
        (shapes.stats(), [shapes.peer(has_session=False)], shapes.samples(60)),
    ]
    seen = set()
    for stats, peers, records in cases:
        verdict = tunnel_health(stats, peers, records, health.STATUS_WINDOW)
        seen.add(verdict.word)
        tunnel = _stand_in(stats, peers, records)
        assert TunnelStatus.of(tunnel).rows[0]["health"] == str(verdict)
        assert tunnel_status_line(tunnel).startswith(f"wg0: {verdict.word} |")
        assert tile_figures(stats, records, peers, health.STATUS_WINDOW)["health"][0] == verdict.word
    assert seen == set(WORDS)


def test_a_small_share_is_not_shown_as_zero():
    from wgmagic.runtime.health import percent

    assert [percent(x) for x in (0.003, 0.042, 0.12, 0.0)] == ["0.3%", "4.2%", "12%", "0.0%"]


def test_a_few_resent_segments_among_many_small_ones_are_not_loss():
    """Queries send small segments, far below one MSS each: the share of segments resent is counted against
    the packets actually sent (the samples' ip_packets_out), not estimated from the bytes (which made 15
    retransmissions among a few hundred small segments read as 85%)."""
    records = shapes.samples(60.0, step=1.0, retransmits_per_s=0.25, out_bytes_per_s=200.0)
    for i, record in enumerate(records):
        record["ip_packets_out"] = 1000 + 20 * i  # 20 packets a second
    resent = health.retransmissions(records, 60.0, total=15)
    assert resent.count == 15 and resent.share == pytest.approx(15 / 1200)
    assert not resent.lossy
    # Without the packet count, the estimate from the bytes stays (and calls it a large share).
    for record in records:
        del record["ip_packets_out"]
    assert health.retransmissions(records, 60.0, total=15).share > 0.5
