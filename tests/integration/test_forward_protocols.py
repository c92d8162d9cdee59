"""A forward speaks its caller's protocol, never its port's (wgmagic/proto/forwarding.py), and %%wgsql's new
connection resolves its server's name once: against the test bed's PostgreSQL and dnsmasq."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess

import psycopg
import pytest

from wgmagic import platform
from wgmagic.connstr import parse_dsn
from wgmagic.proto.forwarding import NEUTRAL
from wgmagic.proto.postgres import POSTGRES
from wgmagic.runtime.tunnel import connect
from wgmagic.sql.dialects import dialect_for

pytestmark = pytest.mark.integration
UNIX_ONLY = "Unix sockets are off (WGMAGIC_PORTABLE)"
CLOSED_PORT = 5999  # nothing listens there on the bed's peer: the connect is refused
SSL_REQUEST = bytes.fromhex("0000000804d2162f")


def _recv_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


@pytest.mark.skipif(not platform.enabled("unix_sockets"), reason=UNIX_ONLY)
def test_socket_names_follow_the_protocol(testbed, tunnel):
    postgres = tunnel.forward("db.internal:5432")  # no protocol named: PostgreSQL's, by its port
    neutral = tunnel.forward("db.internal:5432", protocol=NEUTRAL)
    named = tunnel.forward(f"db.internal:{CLOSED_PORT}", protocol=POSTGRES)
    try:
        assert os.path.basename(postgres.local_address) == ".s.PGSQL.5432"
        assert os.path.basename(neutral.local_address) == "5432.sock"
        assert os.path.basename(named.local_address) == f".s.PGSQL.{CLOSED_PORT}"
        with psycopg.connect(**postgres.libpq_params(), user="app", password=testbed.db_password, dbname="app",
                             connect_timeout=15) as db:
            assert db.execute("SELECT 1").fetchone() == (1,)
        # The neutral forward relays the same bytes: an SSLRequest reaches the real server, which answers it.
        with socket.socket(socket.AF_UNIX) as client:
            client.settimeout(15)
            client.connect(neutral.local_address)
            client.sendall(SSL_REQUEST)
            assert client.recv(1) in (b"S", b"N")
    finally:
        for forward in (postgres, neutral, named):
            tunnel.close_forward(forward)


def test_a_refused_target_in_each_protocols_words(testbed, tunnel):
    postgres = tunnel.forward(f"db.internal:{CLOSED_PORT}", local=0, protocol=POSTGRES)
    neutral = tunnel.forward(f"db.internal:{CLOSED_PORT}", local=0, protocol=NEUTRAL)
    try:
        # libpq (sslmode=prefer: an SSLRequest first, answered "N") shows the forward's ErrorResponse verbatim,
        # also when the refusal comes back before the SSLRequest has arrived (the forward waits for it), so
        # this runs a few times.
        for _ in range(5):
            with pytest.raises(psycopg.OperationalError, match="refused"):
                psycopg.connect(**postgres.libpq_params(), user="app", password=testbed.db_password, dbname="app",
                                connect_timeout=15)
        # The neutral forward closes without a word, whatever the client sent.
        with socket.create_connection(neutral.local_address[:2], timeout=15) as client:
            client.sendall(SSL_REQUEST)
            try:
                said = _recv_all(client)
            except ConnectionResetError:  # the close overtook the client's bytes: a reset, still no word
                said = b""
            assert said == b""
        assert neutral.failed >= 1 and postgres.failed >= 1
    finally:
        tunnel.close_forward(postgres)
        tunnel.close_forward(neutral)


def test_tunnel_url_picks_the_protocol_by_scheme(testbed, tunnel):
    tunnel.url("mysql+pymysql://app@mariadb.internal:5432/app")  # MySQL on PostgreSQL's port: still neutral
    tunnel.url(testbed.dsn().replace(":5432/", ":6432/"))
    tunnel.url(f"host=db.internal port={CLOSED_PORT} dbname=app")
    made = {(f.spec.remote_host, f.spec.remote_port): f.spec.protocol for f in tunnel.forwards}
    assert made[("mariadb.internal", 5432)] is NEUTRAL
    assert made[("db.internal", 6432)] is POSTGRES
    assert made[("db.internal", CLOSED_PORT)] is POSTGRES


def test_a_new_wgsql_connection_resolves_its_server_once(testbed, tmp_path):
    """One resolution per new connection: counted as the resolutions asked of the tunnel, and as the DNS
    queries on the wire (a capture of the tunnel read back by tshark)."""
    if shutil.which("tshark") is None:
        pytest.skip("tshark is not installed")
    name = "bulk.internal"  # a name no other test of this module resolves; the tunnel below is this test's own
    with connect(testbed.client_config(identity=2), name="dns-once") as tunnel:
        assert tunnel.holders == 1
        asked: list[str] = []
        resolve_addresses = tunnel.resolve_addresses

        def counting(host: str):
            asked.append(host)
            return resolve_addresses(host)

        tunnel.resolve_addresses = counting  # type: ignore[method-assign]
        path = tmp_path / "dns.pcapng"
        capture = tunnel.capture(path, seconds=120, payload=True)
        dsn = parse_dsn(testbed.dsn(name))
        connection = dialect_for(dsn).connection(dsn, "once", lambda: tunnel)
        try:
            connection.ensure()
            assert connection.run(connection.statements("SELECT 1 AS v", None))[0] is not None
        finally:
            connection.close()
        capture.stop()
        assert asked == [name]
        rows = subprocess.run(["tshark", "-r", str(path), "-n", "-T", "fields", "-e", "dns.qry.name", "-e",
                               "dns.qry.type", "-Y", "dns.flags.response == 0"], capture_output=True, text=True,
                              timeout=60, check=True).stdout.split("\n")
        queries = sorted(tuple(r.split("\t")) for r in rows if r.strip())
        assert queries == [(name, "1"), (name, "28")], queries  # one A and one AAAA query, once
