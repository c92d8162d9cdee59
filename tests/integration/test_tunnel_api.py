"""The Tunnel as drivers use it: TLS through a forward, SQLAlchemy, pg8000, asyncio streams, other users kept
out, closing under load, and a peer that goes away and comes back (issue 4)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import subprocess
import threading
import time

import psycopg
import pytest

from wgmagic import platform
from wgmagic.errors import PeerNotRespondingError
from wgmagic.runtime.tunnel import connect

pytestmark = pytest.mark.integration
UNIX_ONLY = "Unix sockets are off (WGMAGIC_PORTABLE): test_portable.py checks the loopback guard instead"


def test_tls_verify_full_through_a_tcp_forward(testbed, tunnel):
    forward = tunnel.forward("db.internal:5432", local=0)
    try:
        params = forward.libpq_params()
        assert params["host"] == "db.internal" and params["hostaddr"] == "127.0.0.1"
        with psycopg.connect(**params, user="app", password=testbed.db_password, dbname="app",
                             sslmode="verify-full", sslrootcert=str(testbed.ca_file)) as conn:
            assert conn.pgconn.ssl_in_use
            assert conn.execute("select ssl from pg_stat_ssl where pid = pg_backend_pid()").fetchone()[0]
            assert conn.execute("select count(*) from measurements").fetchone()[0] == 100
        # The certificate names db.internal: a client asking for another name must refuse the server.
        wrong = {**params, "host": "elsewhere.internal"}
        with pytest.raises(psycopg.OperationalError, match=r"does not match|certificate"):
            psycopg.connect(**wrong, user="app", password=testbed.db_password, dbname="app",
                            sslmode="verify-full", sslrootcert=str(testbed.ca_file), connect_timeout=10)
    finally:
        tunnel.close_forward(forward)


def test_sqlalchemy_with_psycopg_through_a_forward(testbed, tunnel):
    sqlalchemy = pytest.importorskip("sqlalchemy")
    forward = tunnel.forward("db.internal:5432")
    try:
        engine = sqlalchemy.create_engine("postgresql+psycopg://", connect_args={
            **forward.libpq_params(), "user": "app", "password": testbed.db_password, "dbname": "app"})
        with engine.connect() as conn:
            total = conn.execute(sqlalchemy.text("select sum(value) from measurements where id <= :n"),
                                 {"n": 4}).scalar_one()
        engine.dispose()
        assert total == pytest.approx(1.5 * (1 + 2 + 3 + 4))
    finally:
        tunnel.close_forward(forward)


def test_pg8000_over_open_connection(testbed, tunnel):
    pg8000 = pytest.importorskip("pg8000.native")
    sock = tunnel.open_connection("db.internal", 5432, timeout=15)
    conn = pg8000.Connection("app", password=testbed.db_password, database="app", sock=sock)
    try:
        assert conn.run("select sensor, count(*) from measurements group by sensor order by sensor") == [
            [f"s{i}", 20] for i in range(5)]
    finally:
        conn.close()


def test_asyncio_streams(testbed, tunnel):
    async def main() -> list[bytes]:
        reader, writer = await tunnel.open_connection_async("198.18.0.1", 9001, timeout=10)
        answers = []
        for word in (b"alpha", b"beta", b"gamma"):
            writer.write(word)
            await writer.drain()
            answers.append(await reader.readexactly(len(word)))
        writer.close()
        await writer.wait_closed()
        with pytest.raises(ConnectionRefusedError):
            await tunnel.open_connection_async("198.18.0.1", 9009, timeout=5)
        return answers

    assert asyncio.run(main()) == [b"alpha", b"beta", b"gamma"]


@pytest.mark.skipif(not platform.enabled("unix_sockets"), reason=UNIX_ONLY)
def test_another_user_cannot_use_a_unix_socket_forward(testbed, tunnel):
    forward = tunnel.forward("db.internal:5432")
    try:
        params = forward.libpq_params()
        env = {"PATH": os.environ["PATH"], "PGPASSWORD": testbed.db_password, "PGCONNECT_TIMEOUT": "5"}
        result = subprocess.run(["runuser", "-u", "nobody", "--", "psql", "-X", "-h", params["host"], "-p",
                                 params["port"], "-U", "app", "-d", "app", "-c", "select 1"],
                                capture_output=True, text=True, env=env, timeout=30, cwd="/")
        assert result.returncode != 0
        assert "Permission denied" in result.stderr
        with psycopg.connect(**params, user="app", password=testbed.db_password, dbname="app") as conn:
            assert conn.execute("select 1").fetchone()[0] == 1  # while its owner can
    finally:
        tunnel.close_forward(forward)


def test_closing_the_tunnel_while_queries_run(testbed):
    def wgmagic_threads() -> set[str]:
        return {t.name for t in threading.enumerate() if t.name.startswith("wgmagic")}

    time.sleep(0.2)
    threads_before, fds_before = wgmagic_threads(), set(os.listdir("/proc/self/fd"))
    tun = connect(testbed.client_config(identity=2))  # the module's tunnel is up with identity 0
    forward = tun.forward("db.internal:5432")
    params = forward.libpq_params()
    started = threading.Barrier(6)

    def query() -> tuple[str, float]:
        with psycopg.connect(**params, user="app", password=testbed.db_password, dbname="app") as conn:
            started.wait(30)
            began = time.monotonic()
            try:
                conn.execute("select pg_sleep(30)")
            except psycopg.Error as exc:
                return type(exc).__name__, time.monotonic() - began
            return "finished", time.monotonic() - began

    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        futures = [pool.submit(query) for _ in range(5)]
        started.wait(30)
        time.sleep(0.5)
        tun.close()
        outcomes = [f.result(timeout=20) for f in futures]
    assert all(kind == "OperationalError" and waited < 10 for kind, waited in outcomes), outcomes
    time.sleep(0.3)
    assert wgmagic_threads() == threads_before
    assert set(os.listdir("/proc/self/fd")) <= fds_before
    assert not os.path.exists(params["host"])


@pytest.fixture
def fresh_bed(testbed):
    """A bed whose peer was never restarted. On the shared bed, after an earlier module's kill-and-restart of the
    peer, a second restart sometimes left wireguard-go listening on another UDP port than the one the clients
    send to (seen in `wg show`; not yet explained), and nothing could recover then."""
    from tests.testbed.bed import TestBed

    bed = TestBed().up()
    try:
        yield bed
    finally:
        bed.down()


def test_peer_outage_fails_clearly_and_recovers_by_itself(fresh_bed):
    testbed = fresh_bed
    with connect(testbed.client_config(identity=3)) as tun:
        forward = tun.forward("db.internal:5432")
        params = {**forward.libpq_params(), "user": "app", "password": testbed.db_password, "dbname": "app"}
        with psycopg.connect(**params) as conn:
            assert conn.execute("select 1").fetchone()[0] == 1
        testbed.kill_peer()
        killed = time.monotonic()
        try:
            def through_forward() -> tuple[str, float]:
                began = time.monotonic()
                try:
                    psycopg.connect(**params, connect_timeout=25).close()
                except psycopg.OperationalError as exc:
                    return str(exc), time.monotonic() - began
                return "connected", time.monotonic() - began

            def through_socket() -> tuple[str, float]:
                began = time.monotonic()
                try:
                    tun.open_connection("db.internal", 5432, timeout=12).close()
                except PeerNotRespondingError as exc:
                    return f"PeerNotRespondingError: {exc}", time.monotonic() - began
                except OSError as exc:
                    return f"{type(exc).__name__}: {exc}", time.monotonic() - began
                return "connected", time.monotonic() - began

            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                via_forward = pool.submit(through_forward)
                via_socket = pool.submit(through_socket)
                message, waited = via_forward.result(timeout=60)
                assert "peer is not answering" in message and waited < 25, (message, waited)
                message, waited = via_socket.result(timeout=60)
                assert message.startswith("PeerNotRespondingError") and waited < 12 + 3, (message, waited)
            time.sleep(max(0.0, 20 - (time.monotonic() - killed)))
        finally:
            testbed.restart_peer()
        # No action from the user: the tunnel's own handshake retries bring it back.
        with psycopg.connect(**params, connect_timeout=30) as conn:
            assert conn.execute("select count(*) from measurements").fetchone()[0] == 100
