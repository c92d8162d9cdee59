"""Path-MTU black holes (issue 23 item 4): through the bed's relay dropping every outer datagram over 1372 bytes
(a path MTU of 1400 whose ICMP "fragmentation needed" never arrives), downloads, uploads and a 1,000,000-row
%%wgsql complete intact, `%wg status` shows the MSS the connections settled on, and the doctor names the MTU.

The limit is on the UDP payload the relay forwards (WireGuard's datagram): 1372 bytes carry an inner packet of
at most 1340 bytes, and since WireGuard pads to 16 bytes the largest that passes is 1328 (+ 32 = 1360).
"""

from __future__ import annotations

import os
import re
import time

import pytest

from tests.integration.helpers import magic_shell
from tests.integration.test_tcp_transfer import PEER_V4, PEER_V6, download, upload
from tests.testbed import streams
from wgmagic.runtime.tunnel import connect
from wgmagic.tools.doctor import FAIL, run_doctor

pytestmark = pytest.mark.integration

LIMIT = 1372  # the relay's largest outer datagram (UDP payload), both directions
LARGEST_INNER = 1328  # the largest inner packet that fits once WireGuard has padded it to 16 bytes
MiB = 1024 * 1024
SIZE = 4 * MiB
ROWS = 1_000_000 if os.environ.get("WGMAGIC_QUICK") != "1" else 100_000
IDENTITY = 3  # and 4, 5: keys (and addresses) of this module's own


@pytest.fixture(scope="module")
def black_hole(testbed):
    with testbed.relay(max_size=LIMIT) as relay:
        yield relay


@pytest.fixture(scope="module")
def tunnel(testbed, black_hole):
    with connect(testbed.client_config(endpoint=black_hole.endpoint, identity=IDENTITY)) as tun:
        yield tun


def _bed_is_a_black_hole(tun) -> None:
    """The path really drops big packets: a full-size echo vanishes while a small one passes."""
    assert tun.ping(PEER_V4, 1, timeout=2.0, size=56)[0].rtt is not None
    assert all(reply.rtt is None for reply in tun.ping(PEER_V4, 2, timeout=1.0, size=1420 - 28, interval=0.1))


def test_status_shows_the_mss_each_connection_settled_on(tunnel):
    # First in the module: once a host was told of the black hole (an ICMP too-big from this address), its
    # kernel keeps the lower path MTU for 10 minutes and new connections start small, with no hole to find.
    from wgmagic.notebook.status import TunnelStatus

    with tunnel.open_connection(PEER_V4, 9001, timeout=30) as sock:  # the echo service: both directions
        block = bytes(range(256)) * 256
        for _ in range(16):
            sock.sendall(block)
            assert streams.recv_exactly(sock, len(block)) == block
        conns = [c for c in tunnel.stats()["tcp_connections"] if c["remote"].endswith(":9001")]
        assert conns and conns[0]["mss"] <= LARGEST_INNER - 40
        status = TunnelStatus.of(tunnel)
        text = repr(status)
        print(text)
        row = status.rows[0]["tcp mss"]
        assert re.search(rf"{PEER_V4}:9001 (\d+)", str(row))
        assert int(re.search(rf"{PEER_V4}:9001 (\d+)", str(row)).group(1)) <= LARGEST_INNER - 40
        assert "black hole" in str(row)


@pytest.mark.parametrize("host", [PEER_V4, PEER_V6])
def test_download_completes_through_a_black_hole(tunnel, host):
    _bed_is_a_black_hole(tunnel)
    before = tunnel.stats()["totals"]
    started = time.monotonic()
    digest = download(tunnel, host, SIZE)
    elapsed = time.monotonic() - started
    assert digest == streams.stream_sha256(SIZE)
    sent = tunnel.runtime_engine.stack.counters["tcp_too_big_sent"]
    print(f"download {SIZE / MiB:.0f} MiB from {host} through a {LIMIT}-byte black hole: {elapsed:.2f} s "
          f"({SIZE / elapsed / 1e6:.1f} MB/s); ICMP too-big sent so far {sent}; drops {before['drops']}")
    assert sent >= 1


@pytest.mark.parametrize("host", [PEER_V4, PEER_V6])
def test_upload_completes_through_a_black_hole(tunnel, host):
    started = time.monotonic()
    local, remote = upload(tunnel, host, SIZE)
    elapsed = time.monotonic() - started
    assert local == remote
    print(f"upload {SIZE / MiB:.0f} MiB to {host} through a {LIMIT}-byte black hole: {elapsed:.2f} s "
          f"({SIZE / elapsed / 1e6:.1f} MB/s)")


def test_doctor_names_the_mtu_to_set(testbed, black_hole):
    # Its own key and address: a host that was told of the black hole fragments its echo replies above the
    # MTU it was told for 10 minutes, and the doctor would measure that instead of the path.
    config = testbed.client_config(endpoint=black_hole.endpoint, identity=IDENTITY + 2)
    report = run_doctor(config, target="db.internal:5432", timeout=20)
    mtu = next(c for c in report.checks if c.name == "path MTU")
    print(mtu)
    assert mtu.verdict == FAIL and "black hole" in mtu.detail
    assert re.search(r"MTU = (\d+)", mtu.fix).group(1) == str(LARGEST_INNER)


def test_a_million_row_wgsql_completes_through_a_black_hole(testbed, black_hole):
    testbed.ensure_big_table(1_000_000)
    config = testbed.client_config(endpoint=black_hole.endpoint, identity=IDENTITY + 1)
    expected = testbed.psql_admin(f"SELECT count(*), sum(id), sum(x) FROM big WHERE id <= {ROWS}",
                                  database="app").strip()
    with magic_shell(testbed, hole_config=config, dsn=testbed.dsn()) as sh:
        result = sh.run_cell("%wg connect {hole_config} --name hole")
        assert result.success, result.error_in_exec
        started = time.monotonic()
        result = sh.run_cell(f"%%wgsql {{dsn}} --tunnel hole\nSELECT id, x, label, at, flag FROM big "
                             f"WHERE id <= {ROWS}")
        elapsed = time.monotonic() - started
        assert result.success, result.error_in_exec
        frame = result.result
        count, total, xs = expected.split("|")
        assert len(frame) == int(count) == ROWS
        assert int(frame["id"].sum()) == int(total)
        assert float(frame["x"].sum()) == pytest.approx(float(xs))
        print(f"%%wgsql of {ROWS} rows through a {LIMIT}-byte black hole: {elapsed:.2f} s")
