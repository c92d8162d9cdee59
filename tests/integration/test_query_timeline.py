"""Issue 26 item 1: the query timeline of %%wgsql statements (wgmagic.sql.timeline) over the bed's Postgres.

Structural checks, not speed thresholds: over the impairment relay with a 40 ms one-way delay a `SELECT 1` is
the network's (its server time well below the round trip the tunnel's TCP measured); `pg_sleep(0.5)` on the
clean path is the database's (server_ms at least 450: the server slept that long); a 1,000,000-row result's
stages add up to its total within 10%. Then the magic: `%wg queries` (table and waterfall) and `--timing`.
"""

from __future__ import annotations

import pytest

from tests.integration.helpers import magic_shell
from wgmagic.connstr import parse_dsn
from wgmagic.runtime.tunnel import connect
from wgmagic.sql import timeline
from wgmagic.sql.dialects import dialect_for
from wgmagic.sql.parameters import split_statements

pytestmark = pytest.mark.integration

STAGE_COLUMNS = ("dns_ms", "connect_ms", "tls_ms", "auth_ms", "send_ms", "latency_ms", "server_ms", "transfer_ms",
                 "decode_ms")


def _run(sql_conn, text: str) -> timeline.QueryTimeline:
    before = timeline.recorded()
    sql_conn.run(split_statements(text, None))
    assert timeline.recorded() == before + 1
    return timeline.recent(1)[0]


def _session(testbed, tunnel, alias: str):
    dsn = parse_dsn(testbed.dsn())
    return dialect_for(dsn).connection(dsn, alias, lambda: tunnel)


def test_select_1_over_a_long_path_is_the_network(testbed):
    with testbed.relay(delay=0.040, seed=3) as relay, \
            connect(testbed.client_config(endpoint=relay.endpoint, identity=1)) as tunnel:
        sql = _session(testbed, tunnel, "long")
        try:
            first = _run(sql, "SELECT 1")
            print(first.row())
            assert first.dns_ms > 0 and first.connect_ms > 0 and first.auth_ms > 0  # it paid for the opening
            assert first.verdict in timeline.VERDICTS  # the first may pay for pandas' import too: this machine
            for _ in range(3):
                t = _run(sql, "SELECT 1")
                print(t.row())
                assert t.dns_ms == t.connect_ms == t.auth_ms == 0  # the opening is charged once
                assert t.rtt_ms is not None and t.rtt_ms >= 80 * 0.9  # two 40 ms legs, as TCP measured them
                assert t.server_ms is not None and t.server_ms < t.rtt_ms / 2  # well below: under half of it
                assert t.verdict == "network", timeline.explain(t)
                assert "network" in timeline.explain(t)
        finally:
            sql.close()


@pytest.fixture(scope="module")
def clean(testbed):
    with connect(testbed.client_config(identity=2)) as tunnel:
        sql = _session(testbed, tunnel, "clean")
        try:
            yield sql
        finally:
            sql.close()


def test_pg_sleep_is_the_database(clean):
    _run(clean, "SELECT 1")  # the opening goes to this one
    t = _run(clean, "SELECT pg_sleep(0.5)")
    print(t.row())
    assert t.server_ms is not None and t.server_ms >= 450
    assert t.verdict == "database", timeline.explain(t)


def test_a_million_rows_stages_add_up_to_the_total(clean):
    _run(clean, "SELECT 1")
    t = _run(clean, "SELECT g AS i, g::float8 AS f, 'row ' || g AS t FROM generate_series(1, 1000000) AS g")
    print(t.row())
    assert t.rows == 1_000_000
    assert t.bytes is not None and t.bytes > 1_000_000 * 10  # at least the rows' data came through the forward
    assert t.transfer_ms is not None and t.transfer_ms > 0 and t.decode_ms is not None and t.decode_ms > 0
    assert t.exchanges >= 2  # the bulk path: the describe, then the COPY
    stages = sum(getattr(t, name) or 0.0 for name in STAGE_COLUMNS)
    assert abs(stages - t.total_ms) <= 0.10 * t.total_ms


def test_wg_queries_and_timing(testbed, capsys):
    with magic_shell(testbed, bed_config=testbed.client_config(identity=3), dsn=testbed.dsn()) as sh:
        assert sh.run_cell("%wg connect {bed_config} --name bed").success
        capsys.readouterr()
        result = sh.run_cell("%%wgsql {dsn} --timing\nSELECT pg_sleep(0.2) AS slept, 'password=hunter2' AS x")
        assert result.success, result.error_in_exec
        out = capsys.readouterr().out
        assert "timing:" in out and out.strip().splitlines()[-1].startswith("timing:")
        result = sh.run_cell("%wg queries --last 5")
        assert result.success, result.error_in_exec
        frame = result.result
        for column in ("statement", "rows", "bytes", "dns_ms", "connect_ms", "tls_ms", "auth_ms", "server_ms",
                       "transfer_ms", "decode_ms", "total_ms", "rtt_ms", "verdict"):
            assert column in frame.columns
        last = frame.iloc[-1]
        assert "pg_sleep" in last["statement"] and "hunter2" not in last["statement"]
        assert last["verdict"] == "database"
        shown = capsys.readouterr()
        assert "hunter2" not in shown.out + shown.err
        from wgmagic.notebook.cmd.queries import waterfall

        png = waterfall(timeline.recent(5)).data
        assert png.startswith(b"\x89PNG")
        # the statement as written in the cell, not the driver's rewrite (%(lim)s), for both parameter forms
        sh.user_ns["lim"] = 3
        for written in ("SELECT {lim}::int AS x", "SELECT :lim::int AS x", "SELECT 'a:b' AS y, {lim} AS x"):
            result = sh.run_cell(f"%%wgsql {{dsn}}\n{written}")
            assert result.success and result.result["x"][0] == 3, result.error_in_exec
            statement = sh.run_cell("%wg queries --last 1 --no-chart").result["statement"].iloc[-1]
            assert statement == written and "%(" not in statement, statement
        assert set(frame.columns) == set(timeline.COLUMNS)  # what the README lists
        capsys.readouterr()
        result = sh.run_cell("%wg queries --clear")
        assert result.success and "cleared" in capsys.readouterr().out and timeline.recent() == []
