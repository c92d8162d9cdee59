"""One end-to-end tunnel query each way, small enough to run on every Python the package declares (issue 21,
item 5): `scripts/test` runs this module under each extra CPython the machine has, beside the whole suite under
the main one.

Over UDP: a bulk (binary COPY) `%%wgsql` SELECT of timestamps, dates and intervals with NULLs, through the
tunnel to the bed's PostgreSQL, equal to the row path's DataFrame (the pandas and NumPy each Python gets
differ: pandas 2 on 3.10, 3 on 3.11+). Over a WebSocket: `wgmagic relay` started as its own process in front of
the bed's wireguard-go, `connect(via="ws://...")` to it, and a query through it (the websockets release each
Python gets differs too: 16 on 3.10, 17 on 3.11+).
"""

from __future__ import annotations

import datetime
import sys

import pandas as pd
import pytest

from tests.testbed import wsbed
from wgmagic.connstr import parse_dsn
from wgmagic.runtime.tunnel import connect
from wgmagic.sql.dialects import dialect_for
from wgmagic.sql.results import run_statement

pytestmark = pytest.mark.integration

# its own key: the modules it runs beside use identities 0-7 too, but never at the same time as this one
IDENTITY = 3
TIMES = ("SELECT n, CASE WHEN n % 3 = 0 THEN NULL ELSE timestamp '2026-01-01' + n * interval '1 hour' END AS ts, "
         "CASE WHEN n % 4 = 0 THEN NULL ELSE timestamptz '2026-01-01 00:00+00' + n * interval '1 day' END AS tz, "
         "CASE WHEN n % 5 = 0 THEN NULL ELSE date '2026-01-01' + n END AS d, "
         "CASE WHEN n % 2 = 0 THEN NULL ELSE n * interval '1 day 1 second' END AS iv "
         "FROM generate_series(1, 12) AS n ORDER BY n")


def _query(tunnel, dsn: str, sql: str, *, bulk: bool) -> pd.DataFrame:
    parsed = parse_dsn(dsn)
    session = dialect_for(parsed).connection(parsed, "smoke", lambda: tunnel)
    try:
        session.ensure()
        result = run_statement(session.raw, sql, None, bulk=bulk)
        assert result.bulk == bulk
        return result.frame
    finally:
        session.close()


def test_bulk_query_through_the_tunnel(testbed):
    with connect(testbed.client_config(identity=IDENTITY)) as tunnel:
        bulk = _query(tunnel, testbed.dsn(), TIMES, bulk=True)
        rows = _query(tunnel, testbed.dsn(), TIMES, bulk=False)
    pd.testing.assert_frame_equal(bulk, rows, check_exact=True)
    assert [str(t) for t in bulk.dtypes][1:] == ["datetime64[us]", "datetime64[us, UTC]", "datetime64[us]",
                                                 "timedelta64[us]"]
    assert bulk["ts"].isna().tolist() == [n % 3 == 0 for n in range(1, 13)]
    assert bulk["iv"].isna().tolist() == [n % 2 == 0 for n in range(1, 13)]
    assert bulk["ts"][0] == pd.Timestamp("2026-01-01 01:00")
    assert bulk["tz"][0] == pd.Timestamp("2026-01-02", tz="UTC")
    assert bulk["d"][0] == pd.Timestamp("2026-01-02")
    assert bulk["iv"][0] == pd.Timedelta(datetime.timedelta(days=1, seconds=1))


def test_query_over_a_websocket_through_wgmagic_relay(testbed):
    relay = wsbed.relay_process(testbed.dir, "127.0.0.1", testbed.port)  # `python -m wgmagic relay`
    try:
        assert relay.url.startswith("ws://127.0.0.1:")
        with connect(testbed.client_config(identity=IDENTITY), via=relay.url, timeout=30) as tunnel:
            assert tunnel.transport_description.startswith(f"WebSocket {relay.url}")
            frame = _query(tunnel, testbed.dsn(), "SELECT count(*) AS n, sum(value) AS total FROM measurements",
                           bulk=False)
            counters = tunnel.stats()["counters"]
        assert frame["n"].tolist() == [100]
        assert counters.get("udp_tx_datagrams", 0) == 0  # not one datagram went out over UDP
        assert counters["ws_rx_messages"] > 0 and counters["ws_tx_messages"] > 0
    finally:
        stats = relay.stop()
    assert stats.get("accepted", 0) >= 1, (stats, relay.log.read_text()[-2000:])
    print(f"python {sys.version.split()[0]}: relay {stats}")
