"""Issue 26 item 1: the query timeline of %%wgsql statements (wgmagic.sql.timeline) over the bed's Postgres.

Structural checks, not speed thresholds: over the impairment relay with a 40 ms one-way delay a `SELECT 1` is
the network's (its server time well below the round trip the tunnel's TCP measured); `pg_sleep(0.5)` on the
clean path is the database's (server_ms at least 450: the server slept that long); a 1,000,000-row result's
stages add up to its total within 10%. Then the magic: `%wg queries` (table and waterfall) and `--timing`; and a
cell's first statement right after `%wg connect`, while the prefetch is still importing: its stages add up to the
cell's time, dns_ms is the lookup alone, and the login's CPU stands apart from its round trips (checked against a
capture of the tunnel read by tshark, and the process's CPU clock).
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid

import pytest

from tests.integration.helpers import magic_shell
from wgmagic.connstr import parse_dsn
from wgmagic.notebook.cmd import tunnels as tunnels_command
from wgmagic.notebook.cmd import wgsql as wgsql_command
from wgmagic.notebook.prefetch import Prefetch
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
            login = timeline.setup_split(first)  # over 80 ms round trips the login's turns outweigh its CPU
            assert first.setup_round_trips >= 3 and login["network"] > login["cpu"] > 0
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


# A module the prefetch imports last in its driver stage, which a cell waits for before anything else: busy on
# the CPU (holding the interpreter lock as an import does) for 0.3 s of its thread's CPU time, so the first cell
# after %wg connect surely waits for the prefetch.
SLOW_IMPORT = "import time\nend = time.thread_time() + 0.3\nwhile time.thread_time() < end:\n    pass\n"


def _tshark(path, *fields: str, display_filter: str) -> list[list[str]]:
    command = ["tshark", "-r", str(path), "-n", "-T", "fields", "-E", "separator=|", "-Y", display_filter]
    for field in fields:
        command += ["-e", field]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    return [line.split("|") for line in result.stdout.splitlines() if line.strip()]


def _client_flights(rows: list[list[str]]) -> int:
    """The client's request flights on the database's TCP stream: payload to port 5432 after payload from it
    (or the first), as the forward relay counts requests."""
    flights, last = 0, None
    for _, _, dstport, length in rows:
        if int(length or 0) == 0:
            continue
        up = dstport == "5432"
        if up and last is not True:
            flights += 1
        last = up
    return flights


@pytest.fixture
def slow_prefetch(tmp_path, monkeypatch):
    """A fresh prefetch for the magic (the process's own ran long ago) whose driver stage ends with SLOW_IMPORT."""
    name = f"wgmagic_slow_import_{uuid.uuid4().hex}"
    (tmp_path / f"{name}.py").write_text(SLOW_IMPORT)
    monkeypatch.syspath_prepend(str(tmp_path))
    prefetch = Prefetch()
    prefetch.DRIVER = (*Prefetch.DRIVER, name)
    monkeypatch.setattr(tunnels_command, "PREFETCH", prefetch)
    monkeypatch.setattr(wgsql_command, "PREFETCH", prefetch)
    return prefetch


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
@pytest.mark.parametrize("options", ["", "?sslmode=require"], ids=["unix-socket", "tls"])
def test_first_statement_after_a_prefetched_opening(testbed, slow_prefetch, tmp_path, options, capsys):
    path = tmp_path / "first.pcapng"
    with magic_shell(testbed, bed_config=testbed.client_config(identity=4), dsn=testbed.dsn() + options,
                     capture_file=str(path)) as sh:
        assert sh.run_cell("%wg connect {bed_config} --name bed").success
        assert sh.run_cell("%wg capture --file {capture_file} --seconds 120").success
        before, cpu0, cell0 = timeline.recorded(), time.process_time(), time.monotonic()
        result = sh.run_cell("%%wgsql {dsn} --alias first\nSELECT 1 AS one")
        cell_ms, cpu_ms = (time.monotonic() - cell0) * 1000, (time.process_time() - cpu0) * 1000
        assert result.success, result.error_in_exec
        assert sh.run_cell("%wg capture --stop").success
        assert timeline.recorded() == before + 1
        t = timeline.recent(1)[0]
        with capsys.disabled():
            print(f"\ncell {cell_ms:.1f} ms, process CPU {cpu_ms:.1f} ms:", t.row())
            print(timeline.explain(t))
    stages = t.stages()
    # the stages add up to the total, and the total is the cell's: only IPython's work around the magic (and
    # the frame's display) is outside it, less than the prefetch's import the cell waited for
    assert abs(sum(stages.values()) - t.total_ms) < 1e-6 and t.total_ms <= cell_ms
    assert t.import_ms > 0 and cell_ms - t.total_ms < t.import_ms, (cell_ms, t.row())
    assert t.wait_ms >= 0 and t.client_ms > 0
    # dns_ms is the lookup alone: it holds the DNS messages on the wire and is not the prefetch's wait
    dns = [float(r[0]) for r in _tshark(path, "frame.time_relative", display_filter="udp.port == 53")]
    syn = [float(r[0]) for r in _tshark(path, "frame.time_relative",
                                        display_filter="tcp.dstport == 5432 && tcp.flags.syn == 1")]
    assert dns and syn and max(dns) < min(syn)  # looked up before the connection (the forward's own: cached)
    assert (max(dns) - min(dns)) * 1000 <= t.dns_ms < t.import_ms
    # the login: its CPU (this thread's, within the process's), its round trips (as on the wire) and the rest
    assert 0 < t.auth_cpu_ms <= t.tls_ms + t.auth_ms and t.auth_cpu_ms < cpu_ms
    assert (t.tls_ms > 0) == bool(options)
    rows = _tshark(path, "frame.time_relative", "tcp.srcport", "tcp.dstport", "tcp.len",
                   display_filter="tcp.port == 5432")
    assert _client_flights(rows) == t.setup_round_trips + t.exchanges  # the login's turns, then the statement's
    assert t.setup_round_trips >= (5 if options else 3)  # (SSLRequest, ClientHello,) startup, SCRAM's two
    split = timeline.setup_split(t)
    assert split["cpu"] == t.auth_cpu_ms and t.rtt_ms is not None
    assert abs(split["network"] - min(t.setup_round_trips * t.rtt_ms, t.tls_ms + t.auth_ms - split["cpu"]
                                      - split["server"])) < 1e-6
    assert abs(sum(split.values()) - (t.tls_ms + t.auth_ms)) < 1e-6
    assert split["network"] < t.tls_ms + t.auth_ms  # the login is no longer all the network's
    earlier = min(t.send_ms or 0.0, (t.exchanges - 1) * t.rtt_ms)
    network = t.dns_ms + min(t.connect_ms, t.rtt_ms) + split["network"] + (t.latency_ms or 0.0) + earlier
    assert abs(timeline.shares(t)["network"] - network) < 1e-6
    assert "login CPU" in timeline.explain(t)
