"""Packet capture (issue 16): `%wg capture` during a `%%wgsql` query, read back by tshark."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.integration.helpers import magic_shell
from tests.testbed.bed import PEER4, PEER6
from wgmagic.runtime.tunnel import connect

pytestmark = pytest.mark.integration
IDENTITY = 5

if shutil.which("tshark") is None:
    pytest.skip("tshark is not installed: run scripts/install-system-deps", allow_module_level=True)


def tshark(path, *fields: str, display_filter: str | None = None) -> list[list[str]]:
    """One row per packet of the capture, with the fields tshark decodes (raw IP link type)."""
    command = ["tshark", "-r", str(path), "-n", "-T", "fields", "-E", "separator=|"]
    for field in fields:
        command += ["-e", field]
    if display_filter:
        command += ["-Y", display_filter]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    return [line.split("|") for line in result.stdout.splitlines() if line.strip()]


@pytest.fixture
def shell(testbed):
    with magic_shell(testbed, IDENTITY, name="capturing", dsn=testbed.dsn(),
                     plain_dsn=testbed.dsn() + "?sslmode=disable") as sh:
        yield sh


def test_capture_during_wgsql_shows_the_handshake_and_the_queries(shell, tmp_path, capsys):
    path = tmp_path / "query.pcapng"
    shell.user_ns["capture_file"] = str(path)
    result = shell.run_cell("%wg capture --file {capture_file} --seconds 120")
    assert result.success, result.error_in_exec
    assert "capturing to" in capsys.readouterr().out
    result = shell.run_cell("%%wgsql {dsn} --alias cap -o frame\nSELECT id, sensor FROM measurements ORDER BY id")
    assert result.success, result.error_in_exec
    assert len(shell.user_ns["frame"]) == 100
    result = shell.run_cell("%wg capture --stop")
    assert result.success, result.error_in_exec
    assert path.stat().st_mode & 0o777 == 0o600
    rows = tshark(path, "ip.src", "ipv6.src", "ip.dst", "ipv6.dst", "tcp.srcport", "tcp.dstport",
                  "tcp.flags.syn", "tcp.flags.ack", "tcp.len", "frame.cap_len", "frame.len",
                  display_filter="tcp.port == 5432")
    database = {PEER4, PEER6}
    syn = [r for r in rows if r[5] == "5432" and r[6] in ("1", "True") and r[7] in ("0", "False")]
    syn_ack = [r for r in rows if r[4] == "5432" and r[6] in ("1", "True") and r[7] in ("1", "True")]
    assert syn and (syn[0][2] in database or syn[0][3] in database), rows[:5]
    assert syn_ack, rows[:5]
    to_db = [r for r in rows if r[5] == "5432" and int(r[8] or 0) > 0]
    from_db = [r for r in rows if r[4] == "5432" and int(r[8] or 0) > 0]
    assert to_db and from_db  # the queries and the rows (TLS records)
    # no payload by default: each packet cut after its TCP header
    assert all(int(r[9]) < int(r[10]) for r in to_db + from_db)
    assert b"measurements" not in path.read_bytes()


def test_payload_capture_holds_the_query_text(shell, tmp_path):
    path = tmp_path / "payload.pcapng"
    shell.user_ns["capture_file"] = str(path)
    assert shell.run_cell("%wg capture --file {capture_file} --payload --outer").success
    result = shell.run_cell("%%wgsql {plain_dsn} --alias plain\nSELECT count(*) AS n FROM measurements")
    assert result.success, result.error_in_exec
    assert shell.run_cell("%wg capture --stop").success
    queries = tshark(path, "pgsql.query", display_filter="pgsql.query")
    assert any("FROM measurements" in q[0] for q in queries), queries
    # the outer datagrams: interface 1, UDP to the peer's port, WireGuard messages tshark decodes
    outer = tshark(path, "frame.interface_id", "udp.dstport", "udp.srcport", display_filter="frame.interface_id == 1")
    assert outer and all(row[0] == "1" for row in outer)
    types = tshark(path, "wg.type", display_filter="frame.interface_id == 1 && wg")
    assert types, "tshark decodes the outer datagrams as WireGuard"


def test_capture_stops_at_its_bound(testbed, tmp_path):
    path = tmp_path / "bounded.pcapng"
    with connect(testbed.client_config(identity=IDENTITY)) as tunnel:
        capture = tunnel.capture(path, max_packets=25)
        with tunnel.open_connection(PEER4, 9000) as sock:  # the bulk source: 1 MB
            sock.sendall((1 << 20).to_bytes(8, "big"))
            received = 0
            while chunk := sock.recv(65536):
                received += len(chunk)
        assert received == 1 << 20
        assert capture.wait(30) == path
        assert capture.stopped_by == "packets" and capture.written == 25
    assert len(tshark(path, "frame.number")) == 25


def test_one_capture_at_a_time_and_close_writes_the_file(testbed, tmp_path):
    with connect(testbed.client_config(identity=IDENTITY)) as tunnel:
        capture = tunnel.capture(tmp_path / "first.pcapng")
        with pytest.raises(RuntimeError, match="already has a capture running"):
            tunnel.capture(tmp_path / "second.pcapng")
        assert not (tmp_path / "second.pcapng").exists()
        assert [r.rtt is not None for r in tunnel.ping(PEER4, 2, interval=0.1)] == [True, True]
    # closing the tunnel stopped the capture and wrote what it held
    assert capture.wait(30) == tmp_path / "first.pcapng" and capture.stopped_by == "closed"
    icmp = tshark(tmp_path / "first.pcapng", "icmp.type", display_filter="icmp")
    assert sorted(row[0] for row in icmp) == ["0", "0", "8", "8"]
