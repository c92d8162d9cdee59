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
    time.sleep(dash.interval * 2)
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
