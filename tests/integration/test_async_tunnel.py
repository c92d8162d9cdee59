"""A tunnel on the test's own asyncio loop (wgmagic.runtime.aio.connect_async): no runtime thread, the same engine,
queried through a TCP connection and through a forward that psycopg's AsyncConnection uses on that loop."""

from __future__ import annotations

import asyncio
import struct
import threading

import psycopg
import pytest

from wgmagic.errors import TunnelClosedError
from wgmagic.runtime.aio import connect_async

pytestmark = pytest.mark.integration
IDENTITY = 5  # a client key of the bed's (test_address_selection's too; the modules run one after the other)
SSL_REQUEST = struct.pack("!ii", 8, 80877103)  # PostgreSQL's SSLRequest (protocol 3, section 55.2.10)


def runtime_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("wgmagic")]


def test_a_tunnel_on_the_tests_own_loop_queries_postgres_without_a_runtime_thread(testbed):
    before = runtime_threads()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with await connect_async(testbed.client_config(identity=IDENTITY), timeout=20) as tunnel:
            assert tunnel.engine.loop is loop and runtime_threads() == before
            # A raw TCP connection through the tunnel: PostgreSQL answers an SSLRequest with one byte.
            reader, writer = await tunnel.open_connection("db.internal", 5432)
            writer.write(SSL_REQUEST)
            await writer.drain()
            assert await asyncio.wait_for(reader.readexactly(1), 20) == b"S"  # the bed's server has TLS
            writer.close()
            await writer.wait_closed()
            # A forward served on this loop, and psycopg's async driver on the same loop.
            forward = await tunnel.forward("db.internal:5432")
            async with await psycopg.AsyncConnection.connect(
                    **forward.libpq_params(), user="app", password=testbed.db_password, dbname="app",
                    connect_timeout=20) as conn:
                cursor = await conn.execute("select count(*), sum(value) from measurements")
                count, total = await cursor.fetchone()
            assert count == 100 and total == pytest.approx(1.5 * 100 * 101 / 2)
            assert runtime_threads() == before
            assert tunnel.engine.counters["udp_rx_datagrams"] > 0
        assert tunnel.closed and tunnel.engine.closed
        with pytest.raises(TunnelClosedError):
            await tunnel.open_connection("db.internal", 5432)

    asyncio.run(main())
