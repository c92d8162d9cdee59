"""Every data tool through the tunnel, against the real servers of the test bed (issue 14): SQLAlchemy engines
(psycopg, pg8000 with TLS verified), pandas.read_sql, JupySQL's %sql, polars (ConnectorX and ADBC) and ADBC on
the 1,000,000-row table, httpx to a private HTTPS name, and an engine that outlives a peer restart."""

from __future__ import annotations

import asyncio
import os
import ssl

import numpy as np
import pandas as pd
import pytest

from wgmagic.runtime.tunnel import connect

pytestmark = pytest.mark.integration

IDENTITY = 7  # this module's own client key: its tunnel stays up beside other tests' tunnels
ROWS = 1_000_000
BIG = "SELECT id, x, label, at, flag FROM big"


@pytest.fixture(scope="module")
def tunnel(testbed):
    testbed.ensure_big_table(ROWS)
    with connect(testbed.client_config(identity=IDENTITY), name="tools") as tun:
        yield tun


def _psycopg_url(testbed) -> str:
    return testbed.dsn().replace("postgresql://", "postgresql+psycopg://")


def _check_big(ids, x, labels, at, flag) -> None:
    """The table as ensure_big_table wrote it, value for value: id i, x = i/2, 'row i', 2026-01-01 + i s,
    i even."""
    ids = np.asarray(ids, dtype=np.int64)
    order = np.argsort(ids)
    ids = ids[order]
    assert len(ids) == ROWS and np.array_equal(ids, np.arange(1, ROWS + 1))
    assert np.array_equal(np.asarray(x, dtype=np.float64)[order], ids * 0.5)
    assert list(np.asarray(labels, dtype=object)[order]) == [f"row {i}" for i in ids]
    seconds = pd.to_datetime(pd.Series(np.asarray(at)[order]), utc=True)
    expected = pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(ids, unit="s")
    assert (seconds.to_numpy() == pd.Series(expected).to_numpy()).all()
    assert np.array_equal(np.asarray(flag, dtype=bool)[order], ids % 2 == 0)


def test_pandas_read_sql_with_an_engine(testbed, tunnel):
    engine = tunnel.engine(_psycopg_url(testbed))
    frame = pd.read_sql("SELECT id, sensor, value FROM measurements WHERE id <= 5 ORDER BY id", engine)
    assert frame["id"].tolist() == [1, 2, 3, 4, 5]
    assert frame["value"].tolist() == [1.5, 3.0, 4.5, 6.0, 7.5]
    assert testbed.db_password not in repr(engine) and testbed.db_password not in str(engine.url)
    engine.dispose()


def test_an_engine_from_libpq_keywords_and_a_plain_url(testbed, tunnel):
    for url in (testbed.dsn(), f"host=db.internal user=app dbname=app password={testbed.db_password}"):
        engine = tunnel.engine(url)
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM measurements").scalar_one() == 100
        engine.dispose()


def test_pg8000_engine_verifies_tls_against_the_real_name(testbed, tunnel):
    pytest.importorskip("pg8000")
    context = ssl.create_default_context(cafile=str(testbed.ca_file))  # check_hostname on
    url = testbed.dsn().replace("postgresql://", "postgresql+pg8000://")
    engine = tunnel.engine(url, connect_args={"ssl_context": context})
    frame = pd.read_sql("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", engine)
    assert frame["ssl"].tolist() == [True]
    engine.dispose()
    # The certificate does not name wrong.internal (it resolves to the same server): refused.
    wrong = tunnel.engine(url.replace("db.internal", "wrong.internal"), connect_args={"ssl_context": context})
    with pytest.raises(Exception, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        pd.read_sql("SELECT 1", wrong)
    wrong.dispose()


def test_libpq_url_with_verify_full_keeps_the_real_name(testbed, tunnel):
    import psycopg

    url = tunnel.url(f"{testbed.dsn()}?sslmode=verify-full&sslrootcert={testbed.ca_file}")
    assert "@db.internal:" in url and "hostaddr=127.0.0.1" in url
    with psycopg.connect(url) as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("SELECT count(*) FROM measurements").fetchone()[0] == 100


def test_forwards_are_reused_and_closed_with_the_tunnel(testbed):
    with connect(testbed.client_config(identity=IDENTITY - 1), name="tools-short") as tun:
        first = tun.url(testbed.dsn(), local="unix")
        again = tun.url("host=db.internal port=5432 user=app dbname=app")
        tcp = tun.url(testbed.dsn())
        assert tun.url(testbed.dsn()) == tcp
        assert len(tun.forwards) == 2  # one Unix socket, one TCP port
        directory = first.split("host=")[1].split("&")[0]
        assert f"host={directory}" in again and os.path.exists(directory)
        assert testbed.db_password not in repr(tun.forwards)
    assert not os.path.exists(directory)


def test_jupysql_with_an_engine_and_with_a_url(testbed, tunnel):
    pytest.importorskip("sql")
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "sql")
    try:
        shell.run_line_magic("config", "SqlMagic.autopandas = True")
        shell.run_line_magic("config", "SqlMagic.displaylimit = 5")
        shell.user_ns["engine"] = tunnel.engine(_psycopg_url(testbed))
        shell.run_line_magic("sql", "engine --alias tunnelled")
        frame = shell.run_line_magic("sql", "SELECT id, value FROM measurements WHERE id <= 3 ORDER BY id")
        assert frame["id"].tolist() == [1, 2, 3] and frame["value"].tolist() == [1.5, 3.0, 4.5]
        url = tunnel.url(_psycopg_url(testbed))
        shell.run_line_magic("sql", f"{url} --alias by_url")
        frame = shell.run_line_magic("sql", "SELECT count(*) AS n FROM measurements")
        assert frame["n"].tolist() == [100]
        listing = str(shell.run_line_magic("sql", "--connections"))
        assert testbed.db_password not in listing
    finally:
        for alias in ("tunnelled", "by_url"):
            try:
                shell.run_line_magic("sql", f"--close {alias}")
            except Exception:
                pass


def test_polars_connectorx_gets_the_big_table_intact(testbed, tunnel):
    pl = pytest.importorskip("polars")
    pytest.importorskip("connectorx")
    frame = pl.read_database_uri(BIG, tunnel.url(testbed.dsn()))  # ConnectorX, polars' default engine
    _check_big(frame["id"].to_numpy(), frame["x"].to_numpy(), frame["label"].to_numpy(),
               frame["at"].to_numpy(), frame["flag"].to_numpy())


def test_adbc_gets_the_big_table_intact(testbed, tunnel):
    dbapi = pytest.importorskip("adbc_driver_postgresql.dbapi")
    with dbapi.connect(tunnel.url(testbed.dsn())) as conn, conn.cursor() as cursor:
        cursor.execute(BIG)
        table = cursor.fetch_arrow_table()
    _check_big(table["id"].to_numpy(), table["x"].to_numpy(), table["label"].to_numpy(zero_copy_only=False),
               table["at"].to_numpy(), table["flag"].to_numpy(zero_copy_only=False))


def test_polars_adbc_engine(testbed, tunnel):
    pl = pytest.importorskip("polars")
    pytest.importorskip("adbc_driver_postgresql")
    frame = pl.read_database_uri("SELECT count(*) AS n, sum(id) AS s FROM big", tunnel.url(testbed.dsn()),
                                 engine="adbc")
    assert frame["n"].to_list() == [ROWS] and frame["s"].to_list() == [ROWS * (ROWS + 1) // 2]


def test_http_client_verifies_the_private_name(testbed, tunnel):
    httpx = pytest.importorskip("httpx")
    with tunnel.http_client(verify=ssl.create_default_context(cafile=str(testbed.ca_file)), timeout=20) as client:
        answer = client.get("https://api.internal/hello")
        assert answer.status_code == 200 and answer.json() == {"hello": "from the private network",
                                                                 "host": "api.internal"}
        assert client.get("https://api.internal/rows", params={"n": 50000}).json()["rows"] == list(range(50000))
        body = os.urandom(300_000)
        assert client.post("https://api.internal/echo", content=body).content == body
        with pytest.raises(httpx.ConnectError, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
            client.get("https://wrong.internal/hello")  # same server, a name its certificate does not hold
    with tunnel.http_client(timeout=20) as client, pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY"):
        client.get("https://api.internal/hello")  # the system's CAs do not know the bed's CA
    with tunnel.http_client(timeout=20) as client, pytest.raises(httpx.ConnectError, match=r"198\.18\.0\.1:9009"):
        client.get("http://198.18.0.1:9009/")  # nothing listens there: refused, named


def test_async_http_client(testbed, tunnel):
    pytest.importorskip("httpx")

    async def fetch() -> list:
        context = ssl.create_default_context(cafile=str(testbed.ca_file))
        async with tunnel.async_http_client(verify=context, timeout=20) as client:
            answers = await asyncio.gather(*(client.get("https://api.internal/rows", params={"n": n})
                                             for n in (1, 10, 100)))
            return [a.json()["rows"] for a in answers]

    assert asyncio.run(fetch()) == [list(range(1)), list(range(10)), list(range(100))]


def test_engine_survives_a_peer_restart(testbed, tunnel):
    engine = tunnel.engine(_psycopg_url(testbed), pool_size=2)
    assert pd.read_sql("SELECT count(*) AS n FROM measurements", engine)["n"].tolist() == [100]
    testbed.kill_peer()
    testbed.restart_peer()
    # No user action: the pool's pre-ping replaces a connection the restart broke, the tunnel re-handshakes.
    assert pd.read_sql("SELECT count(*) AS n FROM measurements", engine)["n"].tolist() == [100]
    assert pd.read_sql("SELECT 2 AS two", engine)["two"].tolist() == [2]
    engine.dispose()
