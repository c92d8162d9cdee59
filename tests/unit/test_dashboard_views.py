"""What a reader of the dashboard's screenshot could not tell, each made a check on the figures' artists and the
tiles' texts (never on pixels): which round trip is TCP's and which the ping's, the window of the retransmission
rate, every stage's milliseconds in the query timeline and TLS in its legend, no title cut off at the figure's
edge, and the sort control beside the table it sorts."""

from __future__ import annotations

import types

import pytest

from tests.unit import tunnel_shapes as shapes
from wgmagic.notebook import plots
from wgmagic.notebook.dashboard import sorted_connections, tile_figures
from wgmagic.sql.timeline import STAGES, QueryTimeline


def _texts(fig) -> list[str]:
    from matplotlib.text import Text

    return [t.get_text() for t in fig.findobj(Text) if t.get_visible() and t.get_text()]


def _clipped(fig) -> list[str]:
    """What of `fig` reaches past its edge once drawn (what a PNG cuts off): the texts by their words, and the
    drawn area as a whole (tick labels included, those of ticks outside the view not being drawn)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    width, height = fig.bbox.width, fig.bbox.height
    ticks = {id(label) for ax in fig.axes for label in ax.get_xticklabels() + ax.get_yticklabels()}
    out = []
    for text in fig.findobj(Text):
        if id(text) in ticks or not text.get_visible() or not text.get_text():
            continue
        box = text.get_window_extent(renderer)
        if box.x0 < -1 or box.y0 < -1 or box.x1 > width + 1 or box.y1 > height + 1:
            out.append(text.get_text())
    drawn = fig.get_tightbbox(renderer)  # inches
    size = fig.get_size_inches()
    if drawn.x0 < -0.01 or drawn.y0 < -0.01 or drawn.x1 > size[0] + 0.01 or drawn.y1 > size[1] + 0.01:
        out.append(f"the drawn area {drawn.bounds} in a {tuple(size)} figure")
    return out


def _legend_texts(fig) -> list[str]:
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()] + [
        t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]


def _records():
    records = shapes.samples(60.0, tcp_srtt=0.025, handshake_rtt=0.021, rx_bytes_per_s=2e6, tx_bytes_per_s=1e5)
    for i, record in enumerate(records):
        if i % 10 == 0:
            record["icmp_rtt"] = 0.020 + (i % 7) / 1000
    return records


def _timelines() -> list[QueryTimeline]:
    return [
        QueryTimeline("SELECT * FROM big_table WHERE x > 10 ORDER BY y", rows=10, bytes=100_000, dns_ms=3,
                      connect_ms=20, tls_ms=25, auth_ms=30, send_ms=1, latency_ms=20, server_ms=50, transfer_ms=80,
                      decode_ms=10, total_ms=239, rtt_ms=20),
        QueryTimeline("SELECT 1", rows=1, bytes=10, send_ms=0.2, latency_ms=20, server_ms=1, transfer_ms=0.1,
                      decode_ms=1, total_ms=22.3, rtt_ms=20),
        QueryTimeline("SELECT pg_sleep(0.5)", rows=1, bytes=10, send_ms=0.2, latency_ms=20, server_ms=500,
                      transfer_ms=0.1, decode_ms=1, total_ms=521.3, rtt_ms=20),
    ]


def test_each_round_trip_line_says_what_measured_it():
    fig = plots.latency_figure(_records(), 60.0, ping_target="198.18.0.1")
    legend = _legend_texts(fig)
    assert any("TCP" in text and "smoothed RTT" in text for text in legend), legend
    assert any("ICMP echo" in text and "198.18.0.1" in text for text in legend), legend
    assert any("WireGuard handshake" in text for text in legend), legend
    dist = fig.axes[1]
    assert [t.get_text() for t in dist.get_xticklabels()] == ["ping\n(ICMP echo)", "TCP\n(smoothed)"]
    assert all(text in plots.LABELS.values() or "ICMP" in text for text in legend)


def test_the_tiles_keep_tcp_and_ping_apart_and_name_them():
    records = _records()
    records[-1]["tcp_srtt"] = 0.0314
    figures = tile_figures(shapes.stats(totals=shapes.totals(tcp_established=2)), records, [shapes.peer()], 60.0,
                           "198.18.0.1")
    tcp_value, tcp_note = figures["TCP round trip"]
    ping_value, ping_note = figures["ping round trip"]
    assert tcp_value == "31 ms" and "smoothed RTT (RFC 6298)" in tcp_note and "2 TCP connection" in tcp_note
    icmp_last = next(r["icmp_rtt"] for r in reversed(records) if r["icmp_rtt"] is not None)
    assert ping_value == f"{icmp_last * 1000:.0f} ms" and "ICMP echo to 198.18.0.1" in ping_note
    assert "p50" in tcp_note and "over 1 min" in tcp_note and "over 1 min" in ping_note
    assert not any(label.startswith("round trip") for label in figures)  # no tile that could be either
    none = tile_figures(shapes.stats(), shapes.samples(60), [shapes.peer()], 60.0, "")
    assert none["ping round trip"] == ("-", "no ping target set")
    assert none["TCP round trip"][0] == "-"


def test_the_retransmission_tile_is_a_rate_over_the_plots_window_and_says_the_window():
    records = shapes.samples(300.0, step=0.5, retransmits_per_s=0.5, retransmits_before=400,
                             out_bytes_per_s=500_000.0)
    stats = shapes.stats(totals=shapes.totals(tcp_retransmits=550))
    value, note = tile_figures(stats, records, [shapes.peer()], 300.0)["TCP retransmissions"]
    assert value == "0.5/s" and note.startswith("150 over the last 5 min")
    assert "550 since the tunnel came up" in note


def test_the_health_tile_is_the_one_verdict():
    from wgmagic.runtime.health import tunnel_health

    stats, peers, records = shapes.stats(handshake_rtt=0.45), [shapes.peer()], shapes.samples(60)
    value, note = tile_figures(stats, records, peers, 60.0)["health"]
    verdict = tunnel_health(stats, peers, records, 60.0)
    assert value == verdict.word == "degraded" and note == "; ".join(verdict.reasons)


def test_the_waterfall_shows_each_stages_milliseconds_and_every_stage_in_its_legend():
    fig = plots.waterfall_figure(_timelines(), width=5.6)
    texts = _texts(fig)
    first = next(text for text in texts if text.startswith("DNS"))
    for part in ("DNS 3.0", "connect 20", "TLS 25", "auth 30", "round trip 20", "server 50", "transfer 80",
                 "decode 10"):
        assert part in first, first
    assert any("server 500" in text for text in texts)
    assert sum(text.endswith(" ms") and "·" in text and "server" in text for text in texts) == 3  # one per row
    legend = _legend_texts(fig)
    assert legend == [plots.STAGE_LABELS[stage] for stage in STAGES] and "TLS" in legend
    later = plots.waterfall_figure(_timelines()[1:], width=5.6)  # no statement with a TLS stage
    assert "TLS" in _legend_texts(later)


def test_a_statement_without_a_tunnel_says_its_stages_were_not_measured():
    alone = QueryTimeline("SELECT 1", total_ms=12)
    assert plots.stage_line(alone) == "stages not measured (no tunnel under the session)"
    assert "unmeasured" in _legend_texts(plots.waterfall_figure([alone]))


@pytest.mark.parametrize("name", ["waterfall", "waterfall_many", "latency", "throughput", "history", "empty"])
def test_no_text_is_cut_off_at_the_figures_edge(name):
    long = [QueryTimeline(f"SELECT {'x' * 80} FROM t{i}", dns_ms=123.4, connect_ms=234.5, tls_ms=345.6,
                          auth_ms=456.7, send_ms=5.6, latency_ms=678.9, server_ms=7890.1, transfer_ms=8901.2,
                          decode_ms=901.2, total_ms=19537.8, rtt_ms=678.9) for i in range(8)]
    fig = {"waterfall": lambda: plots.waterfall_figure(_timelines(), width=5.6),
           "waterfall_many": lambda: plots.waterfall_figure(long, width=5.6),
           "latency": lambda: plots.latency_figure(_records(), 60.0, ping_target="fd00:1234::1"),
           "throughput": lambda: plots.throughput_figure(_records(), 60.0),
           "history": lambda: plots.history_figure(_records(), 60.0),
           "empty": lambda: plots.waterfall_figure([], width=5.6)}[name]()
    assert _clipped(fig) == []
    if name.startswith("waterfall"):
        assert plots.WATERFALL_TITLE in _texts(fig)


def test_the_sort_control_sits_on_the_tcp_tables_own_line():
    from wgmagic.notebook.dashboard import Dashboard

    interface = types.SimpleNamespace(dns_servers=[])
    board = Dashboard(types.SimpleNamespace(name="wg0", config=types.SimpleNamespace(interface=interface)))
    try:
        title_line, table = board.connections_box.children
        assert table is board.connections and board.sort in title_line.children
        assert board.connections_title in title_line.children
        assert board.sort not in board.widget.children  # not a line of its own under the peers
        order = list(board.widget.children)
        assert order.index(board.peers) + 1 == order.index(board.connections_box)
    finally:
        board.close()


def test_the_tcp_table_sorts_by_each_key():
    conns = [shapes.connection(remote="198.18.0.2:1", bytes_received=5, bytes_sent=9, srtt=None, retransmits=1),
             shapes.connection(remote="198.18.0.1:2", bytes_received=50, bytes_sent=1, srtt=0.02, retransmits=0)]
    assert [c["remote"] for c in sorted_connections(conns, "bytes_received")] == ["198.18.0.1:2", "198.18.0.2:1"]
    assert [c["remote"] for c in sorted_connections(conns, "bytes_sent")] == ["198.18.0.2:1", "198.18.0.1:2"]
    assert [c["remote"] for c in sorted_connections(conns, "srtt")] == ["198.18.0.1:2", "198.18.0.2:1"]
    assert [c["remote"] for c in sorted_connections(conns, "retransmits")] == ["198.18.0.2:1", "198.18.0.1:2"]
    assert [c["remote"] for c in sorted_connections(conns, "remote")] == ["198.18.0.1:2", "198.18.0.2:1"]


def test_matplotlib_draws_on_the_updater_thread_only(monkeypatch):
    """`%wg diag` returns at once: the figures are drawn (Figure + Agg) on the dashboard's own thread, never on
    the caller's, and never through pyplot."""
    import sys
    import threading

    from wgmagic.notebook import dashboard

    pyplot_before = "matplotlib.pyplot" in sys.modules  # another test (or library) may have imported it already
    drawn_on: list[str] = []
    real_png = dashboard.png

    def watching_png(fig):
        drawn_on.append(threading.current_thread().name)
        return real_png(fig)

    monkeypatch.setattr(dashboard, "png", watching_png)
    interface = types.SimpleNamespace(dns_servers=[])
    stats, peers, records = shapes.stats(), [shapes.peer()], shapes.samples(10)
    tunnel = types.SimpleNamespace(name="wg0", config=types.SimpleNamespace(interface=interface), closed=False,
                                   stats=lambda: stats, peer_report=lambda: peers, history=lambda window=None: records)
    board = dashboard.Dashboard(tunnel, interval=0.05)
    assert board.start() is board
    try:
        for _ in range(600):
            if board.redraws >= 1:
                break
            threading.Event().wait(0.05)
    finally:
        board.close()
        board._thread.join(30)
    assert board.redraws >= 1 and set(drawn_on) == {"wgmagic-diag-wg0"}
    assert pyplot_before or "matplotlib.pyplot" not in sys.modules
    assert board.figures["health"].startswith("healthy")
