"""Is it the network or the database, read off the bed's real servers: MariaDB statements appear in the query
timeline with their stages (PyMySQL talks through a tunnel socket, not a forward), a PostgreSQL session over TLS
shows its TLS stage, and `%wg status`, the dashboard and the doctor say the tunnel's health in the one verdict's
words (wgmagic.runtime.health). Structural checks only: no speed threshold."""

from __future__ import annotations

import pytest

from tests.integration.helpers import magic_shell, poll
from wgmagic.notebook.plots import stage_line, waterfall_figure
from wgmagic.notebook.prefetch import PREFETCH
from wgmagic.runtime.health import WORDS
from wgmagic.sql import timeline

pytestmark = pytest.mark.integration

IDENTITY = 3  # the key this module keeps a tunnel up with


@pytest.fixture(scope="module")
def shell(testbed):
    testbed.ensure_mariadb()
    tls_dsn = f"{testbed.dsn()}?sslmode=verify-full&sslrootcert={testbed.ca_file}"
    with magic_shell(testbed, IDENTITY, name="views", maria_url=testbed.mariadb_url(), tls_dsn=tls_dsn) as sh:
        # the first cell would wait for %wg connect's prefetch of pandas, which its timeline charges to it
        PREFETCH.wait(PREFETCH.frames)
        yield sh


def _cell(shell, source: str) -> timeline.QueryTimeline:
    before = timeline.recorded()
    result = shell.run_cell(source)
    assert result.success, result.error_in_exec
    assert timeline.recorded() == before + 1, "the statement was not recorded in the query timeline"
    return timeline.recent(1)[0]


def test_mariadb_statements_are_in_the_query_timeline_with_their_stages(shell):
    first = _cell(shell, "%%wgsql {maria_url} --alias maria --tunnel views\nSELECT SLEEP(0.3) AS slept")
    print(first.row())
    assert "SLEEP(0.3)" in first.statement and first.alias == "maria"
    assert first.connect_ms > 0 and first.auth_ms > 0  # it opened the session, through the tunnel's socket
    assert first.server_ms is not None and first.server_ms >= 250  # the server slept 300 ms of it
    assert first.verdict == "database", timeline.explain(first)
    again = _cell(shell, "%%wgsql maria\nSELECT 1 AS one")
    print(again.row())
    assert again.connect_ms == again.auth_ms == 0  # the opening is charged once
    assert again.rtt_ms is not None and again.bytes is not None and again.bytes > 0
    assert again.decode_ms is not None and again.verdict in timeline.VERDICTS
    frame = shell.run_cell("%wg queries --last 2 --no-chart").result
    assert list(frame["alias"]) == ["maria", "maria"]
    line = stage_line(first)
    assert "connect" in line and "server" in line and line.endswith(" ms")
    from matplotlib.text import Text

    texts = [t.get_text() for t in waterfall_figure([first, again]).findobj(Text)]
    assert line in texts


def test_a_tls_session_shows_its_tls_stage(shell):
    first = _cell(shell, "%%wgsql {tls_dsn} --alias pgtls --tunnel views\nSELECT 1 AS one")
    print(first.row())
    assert first.tls_ms > 0 and first.connect_ms > 0 and first.auth_ms > 0
    assert "TLS" in stage_line(first)


def test_status_dashboard_and_doctor_speak_the_one_verdict(shell):
    import wgmagic
    from wgmagic.notebook.status import health_of

    tunnel = wgmagic.get_tunnel("views")
    status = shell.run_cell("%wg status views").result
    shown = str(status.rows[0]["health"])
    assert shown.split(":")[0] in WORDS and "health" in status._repr_html_()
    assert shown.split(":")[0] == health_of(tunnel).word
    board = shell.run_cell("%wg diag --window 1m").result
    try:
        assert poll(lambda: board.redraws >= 2, 10)
        health_tile = board.figures["health"]
        assert health_tile.split(" ")[0] in WORDS and health_tile.split(" ")[0] == health_of(tunnel, 60.0).word
        assert "smoothed RTT (RFC 6298)" in board.figures["TCP round trip"]
        assert "ping" not in board.figures["TCP round trip"]
        assert "ICMP echo" in board.figures["ping round trip"] or "no echo" in board.figures["ping round trip"]
        assert "over the last 1 min" in board.figures["TCP retransmissions"]
        title_line, table = board.connections_box.children
        assert board.sort in title_line.children and table is board.connections
        assert poll(lambda: "<thead>" in board.connections.value, 10)  # the SQL sessions' TCP connections
        board._doctor()  # what the Doctor button runs, here on this thread
        shown = board.doctor_result.value
        assert any(shown.startswith(f"<p><b>doctor: {word}") for word in WORDS), shown[:200]
    finally:
        board.close()
