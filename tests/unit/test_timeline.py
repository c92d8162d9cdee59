"""wgmagic.sql.timeline: the stages, the verdict and the recorder, with plain numbers (issue 26 item 1)."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from wgmagic.sql import timeline
from wgmagic.sql.timeline import (
    LeadIn,
    OpeningStages,
    QueryTimeline,
    build,
    opening_stages,
    prefetch_charge,
    setup_split,
    shares,
    shown_statement,
    verdict,
)


class FakeExchanges:
    def __init__(self, opened=0.0, count=0, last_up=None, first_down=None, last_down=None, starts=()):
        self.opened, self.count, self.last_up = opened, count, last_up
        self.first_down, self.last_down, self.starts = first_down, last_down, list(starts)


class FakeEstimator:
    def __init__(self, srtt, min_rtt=None):
        self.srtt, self.min_rtt = srtt, min_rtt


class FakeConn:
    def __init__(self, srtt):
        self.rtt = FakeEstimator(srtt)


class FakeRelay:
    def __init__(self, exchanges, srtt, bytes_down=0):
        self.exchanges, self.conn, self.bytes_down = exchanges, FakeConn(srtt), bytes_down


def _t(**values) -> QueryTimeline:
    return QueryTimeline("SELECT 1", **values)


def test_verdicts_from_plain_numbers():
    assert verdict(_t(send_ms=0.5, latency_ms=80, server_ms=1, transfer_ms=0, decode_ms=1, rtt_ms=80)) == "network"
    assert verdict(_t(send_ms=0.5, latency_ms=1, server_ms=2000, transfer_ms=0, decode_ms=1, rtt_ms=1)) == "database"
    assert verdict(_t(send_ms=1, latency_ms=20, server_ms=5, transfer_ms=4000, decode_ms=300, rtt_ms=20)) == \
        "transfer"
    assert verdict(_t(send_ms=1, latency_ms=1, server_ms=5, transfer_ms=100, decode_ms=2500, rtt_ms=1)) == \
        "this machine"
    assert verdict(_t(dns_ms=300, connect_ms=70, auth_ms=200, auth_cpu_ms=5, setup_round_trips=3, send_ms=1,
                      latency_ms=60, server_ms=5, transfer_ms=0, decode_ms=2, rtt_ms=60)) == "network"  # far away
    # a TCP connect far longer than the path's round trip waited on this machine (the loop thread, a busy CPU)
    busy = _t(connect_ms=200, send_ms=1, latency_ms=1, server_ms=5, transfer_ms=0, decode_ms=2, rtt_ms=1)
    assert verdict(busy) == "this machine" and "the opening's waits 199 ms" in timeline.explain(busy)
    assert verdict(_t(total_ms=12)) == "unknown"  # nothing measured (no forward)


def test_earlier_round_trips_in_send_are_the_networks():
    t = _t(send_ms=85, latency_ms=80, server_ms=1, transfer_ms=0, decode_ms=10, rtt_ms=80, exchanges=2)
    parts = timeline.shares(t)
    assert parts["network"] == 160 and parts["this machine"] == 15


def test_build_splits_the_statement_at_the_relays_marks():
    ex = FakeExchanges(count=3, last_up=10.010, first_down=10.600, last_down=11.600)
    relay = FakeRelay(ex, srtt=0.080, bytes_down=1_000_000 + 500)
    t = build("SELECT pg_sleep(0.5)", "a", 10.000, 12.000, 7, relay, count0=1, bytes0=500,
              opening=OpeningStages(dns_ms=5, connect_ms=6, tls_ms=0, auth_ms=7))
    assert t.exchanges == 2 and t.bytes == 1_000_000 and t.rows == 7
    assert round(t.send_ms, 6) == 10 and round(t.latency_ms, 6) == 80 and round(t.server_ms, 6) == 510
    assert round(t.transfer_ms, 6) == 1000 and round(t.decode_ms, 6) == 400
    assert round(t.total_ms, 6) == 2018
    assert round(sum(t.stages().values()), 6) == round(t.total_ms, 6)
    assert round(t.rate_mbit_s, 3) == 8.0


def test_server_time_is_never_negative_and_a_wait_shorter_than_srtt_is_all_latency():
    ex = FakeExchanges(count=1, last_up=0.001, first_down=0.050, last_down=0.050)
    t = build("SELECT 1", "a", 0.0, 0.051, 1, FakeRelay(ex, srtt=0.120), count0=0, bytes0=0, opening=None)
    assert t.server_ms == 0 and round(t.latency_ms, 6) == 49


def test_nothing_through_the_tunnel_is_all_this_machine_and_no_forward_is_unmeasured():
    ex = FakeExchanges(count=4, last_up=1.0, first_down=1.1, last_down=1.2)
    t = build("SELECT 1", "a", 5.0, 5.010, 1, FakeRelay(ex, srtt=0.01), count0=4, bytes0=0, opening=None)
    assert round(t.decode_ms, 6) == 10 and t.server_ms is None
    t = build("SELECT 1", "a", 5.0, 5.010, 1, None, count0=0, bytes0=0, opening=None)
    assert t.decode_ms is None and verdict(t) == "unknown" and "not measured" in timeline.explain(t)


@given(st.lists(st.floats(min_value=0, max_value=5, allow_nan=False), min_size=6, max_size=6),
       st.floats(min_value=0, max_value=1, allow_nan=False), st.integers(min_value=1, max_value=5))
def test_stages_always_add_up_to_the_total(marks, srtt, count):
    started, a, b, c, ended = 0.0, *sorted(marks[:3]), max(marks[:3]) + marks[3]
    ex = FakeExchanges(count=count, last_up=a, first_down=b, last_down=c)
    t = build("x", "a", started, ended, 0, FakeRelay(ex, srtt=srtt), count0=0, bytes0=0,
              opening=OpeningStages(dns_ms=marks[4], auth_ms=marks[5]))
    assert all(value >= 0 for value in t.stages().values())
    assert abs(sum(t.stages().values()) - t.total_ms) < 1e-6
    assert verdict(t) in timeline.VERDICTS


def test_opening_stages():
    ex = FakeExchanges(opened=1.5, count=5, last_up=2.3, first_down=2.45, starts=[1.6, 1.7, 1.9, 2.0, 2.3])
    stages = opening_stages(1.0, 1.2, ex, 2.5, tls=True, looked_up=1.1, forwarded=1.25, cpu=0.030, rtt=0.100)
    assert [round(v, 6) for v in (stages.client_ms, stages.dns_ms, stages.connect_ms, stages.tls_ms,
                                  stages.auth_ms)] == [150, 100, 250, 400, 600]  # client: 1.0-1.1, 1.2-1.25
    assert round(stages.total_ms, 6) == 1500  # started .. ready
    assert round(stages.auth_cpu_ms, 6) == 30 and stages.setup_round_trips == 5
    assert round(stages.auth_server_ms, 6) == 50  # the last turn: 2.3 .. 2.45, less the 100 ms round trip
    stages = opening_stages(1.0, 1.2, ex, 2.5, tls=False)
    assert round(stages.tls_ms, 6) == 0 and round(stages.auth_ms, 6) == 1000
    assert stages.dns_ms == 0  # no mark of the lookup's start: none is guessed
    stages = opening_stages(1.0, None, None, 1.3, tls=False, cpu=1.0)
    assert stages.dns_ms == 0 and round(stages.auth_ms, 6) == 300 and round(stages.auth_cpu_ms, 6) == 300


def test_the_logins_cpu_is_this_machines_and_only_its_round_trips_the_networks():
    # SCRAM-SHA-256 over a 1 ms path: 3 turns, 25 ms of PBKDF2 and client code, 2 ms of server in the last turn
    t = _t(auth_ms=40, auth_cpu_ms=25, auth_server_ms=2, setup_round_trips=3, rtt_ms=1, send_ms=0.1,
           latency_ms=1, server_ms=0.2, transfer_ms=0, decode_ms=0.5)
    split = setup_split(t)
    assert split == {"cpu": 25, "network": 3, "server": 2, "rest": 10}
    parts = shares(t)
    assert parts["network"] == 4 and parts["database"] == 2.2 and parts["this machine"] == 35.6
    assert verdict(t) == "this machine" and "the login's CPU 25 ms" in timeline.explain(t)
    slow = _t(auth_ms=40, auth_cpu_ms=5, setup_round_trips=3, rtt_ms=10, send_ms=0.1, latency_ms=10,
              server_ms=0.2, transfer_ms=0, decode_ms=0.5)  # a 10 ms path: the round trips are most of it
    assert setup_split(slow)["network"] == 30 and verdict(slow) == "network"
    assert "4 round trips of 10 ms" in timeline.explain(slow)
    unknown = _t(auth_ms=40, auth_cpu_ms=5, setup_round_trips=3, decode_ms=1, server_ms=0)  # no RTT
    assert setup_split(unknown) == {"cpu": 5, "network": 35, "server": 0, "rest": 0}


def test_a_cells_wait_for_the_prefetch_is_charged_to_what_the_prefetch_did():
    stages = [("import", 10.0, 10.4), ("import", 10.4, 10.9)]  # the driver, then pandas
    # the cell waited 10.1 .. 10.2 for the driver, then 10.5 .. 10.95 for pandas: 0.05 s beyond the records
    charged = prefetch_charge([(10.1, 10.2), (10.5, 10.95)], stages)
    assert round(charged["import"], 6) == 500 and round(charged["wait"], 6) == 50
    assert prefetch_charge([(11.0, 11.0)], stages) == {"wait": 0.0}  # done before the cell: nothing waited
    ex = FakeExchanges(count=3, last_up=11.01, first_down=11.02, last_down=11.02)
    opening = OpeningStages(client_ms=5, dns_ms=20, connect_ms=10, auth_ms=30, started=10.25, ready=10.315)
    t = build("SELECT 1", "a", 11.0, 11.03, 1, FakeRelay(ex, srtt=0.001), count0=2, bytes0=0, opening=opening,
              lead=LeadIn(10.1, import_ms=charged["import"], wait_ms=charged["wait"]))
    assert round(t.import_ms, 6) == 500 and round(t.wait_ms, 6) == 50
    # the cell's 900 ms before the statement: 550 waiting, 65 opening, the rest the cell's own work
    assert round(t.client_ms, 6) == 5 + 900 - 550 - 65
    assert round(t.total_ms, 6) == 930 and round(sum(t.stages().values()), 6) == 930  # the cell's time
    assert t.dns_ms == 20 and verdict(t) == "this machine"
    earlier = build("SELECT 1", "a", 11.0, 11.03, 1, FakeRelay(ex, srtt=0.001), count0=2, bytes0=0,
                    opening=opening, lead=LeadIn(10.9))  # opened by an earlier cell, charged to this one
    assert round(earlier.client_ms, 6) == 5 + 100 and round(earlier.total_ms, 6) == 65 + 100 + 30


@given(st.lists(st.tuples(st.floats(0, 10), st.floats(0, 2)), max_size=4),
       st.lists(st.tuples(st.sampled_from(["import", "dns"]), st.floats(0, 10), st.floats(0, 2)), max_size=4))
def test_a_prefetch_charge_adds_up_to_the_waits(waits, stages):
    waits = [(a, a + d) for a, d in waits]
    records = [(name, a, a + d) for name, a, d in stages]
    charged = prefetch_charge(waits, records)
    assert all(value >= 0 for value in charged.values())
    covered = sum(value for name, value in charged.items() if name != "wait")
    assert charged.get("wait", 0) >= 0
    total = sum(b - a for a, b in waits) * 1000
    if len(records) <= 1:  # overlapping records would count a moment twice: the prefetch's are one after another
        assert abs(covered + charged.get("wait", 0) - total) < 1e-6


_ms = st.floats(min_value=0, max_value=1e6, allow_nan=False)


@given(st.fixed_dictionaries({name: _ms for name in ("import_ms", "wait_ms", "client_ms", "dns_ms", "connect_ms",
                                                      "tls_ms", "auth_ms", "auth_cpu_ms", "auth_server_ms",
                                                      "send_ms", "latency_ms", "server_ms", "transfer_ms",
                                                      "decode_ms")}),
       st.one_of(st.none(), st.floats(min_value=0.001, max_value=1e4)), st.integers(0, 12), st.integers(1, 9))
def test_the_shares_add_up_and_the_line_says_the_verdict(values, rtt, turns, exchanges):
    t = _t(**values, rtt_ms=rtt, setup_round_trips=turns, exchanges=exchanges)
    t.total_ms = sum(t.stages().values())
    parts = shares(t)
    assert all(value >= -1e-6 for value in parts.values())
    assert abs(sum(parts.values()) - t.total_ms) <= 1e-6 * max(1.0, t.total_ms)
    split = setup_split(t)
    assert abs(sum(split.values()) - (t.tls_ms + t.auth_ms)) <= 1e-6 * max(1.0, t.total_ms)
    assert split["cpu"] <= t.auth_cpu_ms
    line = timeline.explain(t)
    lead = {"database": "the database", "network": "the network", "transfer": "the transfer",
            "this machine": "this machine"}[verdict(t)]
    assert line.startswith(f"timing: {timeline.ms(t.total_ms)}, mostly {lead}: ")
    assert not re.search(r"-\d", line) and ": :" not in line  # no negative figure, no empty list of parts


def test_statements_are_masked_and_shortened():
    assert shown_statement("ALTER ROLE app PASSWORD 'hunter2'") == "ALTER ROLE app PASSWORD '***'"
    assert "s3cr3t" not in shown_statement("SELECT dblink('postgresql://u:s3cr3t@h/db', 'x')")
    long = shown_statement("SELECT\n  " + "a, " * 100 + "b FROM t")
    assert len(long) == timeline.STATEMENT_WIDTH and long.endswith("…") and "\n" not in long


def test_recorder_keeps_the_latest():
    timeline.clear()
    before = timeline.recorded()
    for i in range(timeline.KEPT + 5):
        timeline.record(_t(total_ms=i))
    assert timeline.recorded() == before + timeline.KEPT + 5
    assert len(timeline.recent()) == timeline.KEPT and timeline.recent(2)[-1].total_ms == timeline.KEPT + 4
    frame = timeline.frame(timeline.recent(3))
    assert list(frame.columns) == list(timeline.COLUMNS) and len(frame) == 3
    timeline.clear()
    assert timeline.recent() == []


def test_waterfall_draws_with_agg():
    from wgmagic.notebook.plots import png, waterfall_figure

    items = [_t(send_ms=1, latency_ms=80, server_ms=1, transfer_ms=0, decode_ms=1, rtt_ms=80, total_ms=83),
             _t(total_ms=5)]
    assert png(waterfall_figure(items)).startswith(b"\x89PNG")
    assert png(waterfall_figure([])).startswith(b"\x89PNG")


def test_the_round_trips_said_add_up_to_the_network_share():
    """A smoothed RTT above what the waits took (a busy machine's estimate): the sentence gives what the round
    trips took each, so "N round trips of X" and the network share agree (it said "2 round trips of 3.2 ms:
    2.3 ms")."""
    t = _t(rtt_ms=3.2, send_ms=2.3, exchanges=2, latency_ms=0.0, server_ms=0.0, transfer_ms=0.1, decode_ms=0.1)
    parts = shares(t)
    text = timeline.explain(t)
    turns = 1
    assert f"{turns} round trip of {parts['network']:.1f} ms" in text, text
