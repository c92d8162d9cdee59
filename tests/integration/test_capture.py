"""Packet capture (issue 16): `%wg capture` during a `%%wgsql` query, read back by tshark."""

from __future__ import annotations

import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from tests.integration.helpers import magic_shell
from tests.testbed.bed import PEER4, PEER6
from wgmagic.runtime.tunnel import connect

pytestmark = pytest.mark.integration
IDENTITY = 5

if shutil.which("tshark") is None:
    pytest.skip("tshark is not installed: run scripts/install-system-deps", allow_module_level=True)


def tshark(path, *fields: str, display_filter: str | None = None, extra: tuple[str, ...] = ()) -> list[list[str]]:
    """One row per packet of the capture, with the fields tshark decodes (raw IP link type)."""
    command = ["tshark", "-r", str(path), "-n", "-T", "fields", "-E", "separator=|", *extra]
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


# ---- issue 21 item 2: the file it named, as private as it said; lengths tshark can decode -------------------


def test_a_relative_file_is_the_one_named_when_the_capture_started(shell, tmp_path, monkeypatch, capsys):
    (tmp_path / "work").mkdir()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    expected = tmp_path.resolve() / "work" / "support.pcapng"
    result = shell.run_cell("%wg capture --file support.pcapng")
    assert result.success, result.error_in_exec
    assert f"capturing to {expected} " in capsys.readouterr().out
    assert shell.run_cell("%cd ../elsewhere").success
    assert shell.run_cell(f"%wg ping {PEER4} -c 2").success
    result = shell.run_cell("%wg capture --stop")
    assert result.success, result.error_in_exec
    assert f"written to {expected} " in capsys.readouterr().out
    assert list((tmp_path / "elsewhere").iterdir()) == []
    assert expected.stat().st_mode & 0o777 == 0o600
    icmp = tshark(expected, "icmp.type", display_filter="icmp")
    assert sorted(row[0] for row in icmp) == ["0", "0", "8", "8"]


@pytest.mark.parametrize("before", ["file 0644", "symlink", "nothing"])
def test_the_capture_replaces_what_was_at_its_path_and_is_0600(testbed, tmp_path, monkeypatch, before):
    monkeypatch.chdir(tmp_path)
    victim = tmp_path / "notes.txt"
    victim.write_text("the user's own file")
    victim.chmod(0o644)
    target = tmp_path / "support.pcapng"
    if before == "file 0644":
        target.write_bytes(b"an older capture")
        target.chmod(0o644)
    elif before == "symlink":
        target.symlink_to(victim)
    with connect(testbed.client_config(identity=IDENTITY)) as tunnel:
        capture = tunnel.capture("support.pcapng")
        assert capture.path == tmp_path.resolve() / "support.pcapng"
        assert tunnel.ping(PEER4, 1)[0].rtt is not None
        assert capture.stop() == tmp_path.resolve() / "support.pcapng"
    assert not target.is_symlink() and stat.S_IMODE(target.stat().st_mode) == 0o600
    assert victim.read_text() == "the user's own file" and stat.S_IMODE(victim.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    assert len(tshark(target, "icmp.type", display_filter="icmp")) == 2


def test_a_capture_into_a_missing_directory_fails_at_start_naming_the_absolute_path(testbed, tmp_path,
                                                                                     monkeypatch):
    monkeypatch.chdir(tmp_path)
    with connect(testbed.client_config(identity=IDENTITY)) as tunnel:
        with pytest.raises(FileNotFoundError) as caught:
            tunnel.capture("missing/support.pcapng")
        assert caught.value.filename == str(tmp_path.resolve() / "missing" / "support.pcapng")
        assert tunnel.captures == []


def _traffic(tunnel) -> None:
    """ICMP, DNS (UDP) and a TCP download through `tunnel`, each with a payload a cut capture leaves out."""
    assert [r.rtt is not None for r in tunnel.ping(PEER4, 2, interval=0.1)] == [True, True]
    assert tunnel.resolve("db.internal")
    with tunnel.open_connection(PEER4, 9000) as sock:  # the bulk source: N bytes
        sock.sendall((20_000).to_bytes(8, "big"))
        received = 0
        while chunk := sock.recv(65536):
            received += len(chunk)
    assert received == 20_000


@pytest.mark.parametrize("outer", [True, False], ids=["outer", "inner-only"])
@pytest.mark.parametrize("payload", [False, True], ids=["headers-only", "payload"])
def test_outer_and_inner_packets_keep_their_original_lengths_and_decode(testbed, tmp_path, payload, outer):
    path = tmp_path / "decode.pcapng"
    with connect(testbed.client_config(identity=IDENTITY)) as tunnel:
        capture = tunnel.capture(path, outer=outer, payload=payload)
        _traffic(tunnel)
        capture.stop()
    decode = ("-d", f"udp.port=={testbed.port},wg")
    if not outer:
        assert tshark(path, "frame.number", display_filter="frame.interface_id == 1") == []
    # Outer (interface 1): IPv4 + UDP headers as on the wire, the WireGuard message decoded, with and without
    # telling tshark the port (its heuristic finds WireGuard by the message's length and type).
    fields = ("frame.len", "frame.cap_len", "ip.len", "udp.length", "wg.type", "wg.receiver", "wg.counter",
              "udp.srcport", "udp.dstport", "_ws.col.Protocol", "_ws.col.Info")
    for extra in (decode, ()) if outer else ():
        datagrams = tshark(path, *fields, display_filter="frame.interface_id == 1", extra=extra)
        assert datagrams
        data = [row for row in datagrams if row[4] == "4"]
        assert data and all(row[5] and row[6] for row in data), datagrams[:5]
        for row in datagrams:
            assert row[9] == "WireGuard" and "Len=" not in row[10], row
            assert int(row[2]) == int(row[0]) and int(row[3]) == int(row[0]) - 20, row
            assert testbed.port in (int(row[7]), int(row[8]))
        if payload:
            assert all(row[0] == row[1] for row in datagrams)
        else:  # cut after WireGuard's 16-byte header; the original length kept in the block and the headers
            assert all(int(row[1]) == 20 + 8 + 16 < int(row[0]) for row in data), data[:5]
    # Inner (interface 0): every packet's IP length is its original length, whatever was kept.
    inner = tshark(path, "frame.len", "frame.cap_len", "ip.len", "ipv6.plen", "udp.length", "tcp.len",
                   "icmp.type", "dns.qry.name", "udp.port", display_filter="frame.interface_id == 0")
    assert inner
    for row in inner:
        ip_length = int(row[2]) if row[2] else 40 + int(row[3])
        assert ip_length == int(row[0]), row
    dns = [row for row in inner if "53" in row[8].split(",")]
    assert any(row[7] == "db.internal" for row in dns) == payload  # the query name is payload
    tcp = [row for row in inner if row[5] and int(row[5]) > 0]
    icmp = [row for row in inner if row[6] in ("0", "8")]
    assert dns and tcp and len(icmp) == 4
    for row in dns:
        assert int(row[4]) == int(row[0]) - (20 if row[2] else 40)
    assert sum(int(row[5]) for row in tcp) >= 20_000
    if payload:
        assert all(row[0] == row[1] for row in inner)
    else:
        assert all(int(row[1]) < int(row[0]) for row in tcp + icmp), (tcp + icmp)[:5]


README = Path(__file__).resolve().parents[2] / "README.md"


def readme_capture_example() -> list[tuple[str, str]]:
    """The fenced blocks of README.md's "Packet captures" section, in order: (language, text as printed)."""
    section = README.read_text().split("\n### Packet captures\n", 1)[1].split("\n### ", 1)[0]
    return re.findall(r"^```(\w+)\n(.*?)^```$", section, re.S | re.M)


def test_the_readme_capture_example_runs_as_printed(testbed, tmp_path, monkeypatch, capsys):
    blocks = readme_capture_example()
    assert [language for language, _ in blocks] == ["python", "sql", "python", "sh"], blocks
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PGPASSWORD", testbed.db_password)  # the README's DSN has no password
    with magic_shell(testbed, IDENTITY, name="readme") as sh:
        for _, cell in blocks[:-1]:  # the notebook cells
            result = sh.run_cell(cell)
            assert result.success, (cell, result.error_in_exec)
    out = capsys.readouterr().out
    path = tmp_path.resolve() / "support.pcapng"
    assert f"capturing to {path} " in out and f"written to {path} " in out, out
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    shown = subprocess.run(blocks[-1][1], shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=60,
                           check=True).stdout  # the shell line as printed
    lines = shown.splitlines()
    assert any(" TCP " in line and "5432" in line for line in lines), shown  # the query's connection
    assert any("WireGuard" in line and "Transport Data" in line for line in lines), shown
    # every outer datagram decodes as WireGuard: none left as bare UDP to or from the peer's port
    assert not [line for line in lines if " UDP " in line and str(testbed.port) in line], shown
