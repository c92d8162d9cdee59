"""The live dashboard's updater: keeps drawing while a query blocks the main thread, sleeps when paused,
stops when closed or when the tunnel goes down (issue 6)."""

from __future__ import annotations

import threading
import time

import pytest

from tests.integration.helpers import magic_shell, poll

pytestmark = pytest.mark.integration


@pytest.fixture
def shell(testbed):
    with magic_shell(testbed, name="dash", dash_dsn=testbed.dsn()) as sh:
        yield sh


def test_dashboard_moves_while_a_query_blocks_then_pauses_and_stops(shell, testbed):
    dash = shell.run_cell("%wg diag --window 1m").result
    assert poll(lambda: dash.redraws >= 2, 10)
    assert shell.run_cell("%%wgsql {dash_dsn} --alias dash\nSELECT 1").success
    before = dash.redraws
    # The main thread blocks in a query that only ends early if the dashboard draws twice meanwhile: a watcher
    # cancels it on the server then. A frozen dashboard lets it run its full minute. No clock is asserted.
    moved = threading.Event()

    def watch() -> None:
        if poll(lambda: dash.redraws >= before + 2, 55):
            moved.set()
            testbed.psql_admin("SELECT pg_cancel_backend(pid) FROM pg_stat_activity "
                               "WHERE query LIKE 'SELECT pg_sleep(60)%'", database="app")

    watcher = threading.Thread(target=watch)
    watcher.start()
    shell.run_cell("%%wgsql {dash_dsn} --alias dash\nSELECT pg_sleep(60)")  # cancelled: the cell reports it
    watcher.join()
    assert moved.is_set(), "the dashboard froze while a query ran"
    assert dash.latency_plot.value[:8] == b"\x89PNG\r\n\x1a\n"
    dash.pause.value = True
    assert poll(lambda: dash.parked.is_set(), 30), "the updater never parked after Pause"
    paused_at = dash.redraws
    time.sleep(dash.interval * 4)
    assert dash.redraws == paused_at, "the updater kept working while paused"
    dash.pause.value = False
    assert poll(lambda: dash.redraws > paused_at, 10)
    dash.close()
    assert poll(lambda: not dash.alive, 10), "closing the widget did not stop the updater"


def test_dashboard_stops_when_the_tunnel_goes_down(shell):
    dash = shell.run_cell("%wg diag").result
    assert poll(lambda: dash.redraws >= 1, 10)
    assert shell.run_cell("%wg disconnect dash").success
    assert poll(lambda: not dash.alive, 10), "the updater outlived its tunnel"
    assert "closed" in dash.status.value
    # The health tile says so too, not the last "healthy" it drew.
    assert dash.figures["health"].startswith("closed") and "healthy" not in dash.tiles.value


def test_static_plot_and_history(shell, tmp_path):
    time.sleep(0.5)
    figure = shell.run_cell(f"%wg plot --window 1m --save {tmp_path / 'history.png'}").result
    assert figure._repr_png_()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "history.png").stat().st_size > 5000
    import pandas as pd

    import wgmagic

    history = pd.DataFrame(wgmagic.get_tunnel("dash").history())
    assert {"time", "rx_bytes_per_s", "tx_bytes_per_s", "handshake_rtt", "tcp_srtt"} <= set(history.columns)
    assert poll(lambda: len(wgmagic.get_tunnel("dash").history()) >= 3, 10)


def test_tiles_words_and_the_query_waterfall(shell):
    """Issue 26 item 2: headline tiles in human units, drops in words, one aligned sortable TCP table, and the
    latest statements' waterfall redrawn when a %%wgsql statement is recorded."""
    dash = shell.run_cell("%wg diag --window 1m").result
    try:
        assert poll(lambda: dash.redraws >= 1, 10)
        labels = set(dash.figures)
        assert {"health", "TCP round trip", "ping round trip", "in now", "out now", "handshake",
                "TCP retransmissions", "drops"} <= labels
        assert "s ago" in dash.figures["handshake"] and "/s" in dash.figures["in now"]
        assert "over the last 1 min" in dash.figures["TCP retransmissions"]
        assert "wgmagic-tile" in dash.tiles.value and "udp_rx_bytes" not in dash.tiles.value
        first_waterfall = dash.queries_plot.value
        assert first_waterfall[:8] == b"\x89PNG\r\n\x1a\n"
        assert shell.run_cell("%%wgsql {dash_dsn} --alias dash\nSELECT pg_sleep(0.1)").success
        assert poll(lambda: dash.queries_plot.value != first_waterfall, 10), "the waterfall was not redrawn"
        assert poll(lambda: "<thead>" in dash.connections.value, 10)  # the SQL session's TCP connection
        dash.sort.value = "remote"
        assert "TCP connections" in dash.connections_title.value
    finally:
        dash.close()


def test_drop_reasons_read_as_words():
    from wgmagic.notebook.dashboard import drop_words

    assert drop_words("ip.tcp_no_connection") == "packets for connections already closed"
    assert drop_words("wireguard.something_new") == "something new"
