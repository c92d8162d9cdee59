"""ConnectorX through an in-process tunnel's `tunnel.url(dsn)` (issue 22, item 3): the Arrow path works; the
pandas path holds the GIL while it waits on the forward's socket, so the tunnel's thread never runs (a known
failure, strict xfail: when it starts passing, the xfail goes). `wgmagic.connect(conf, share=True)` serves both:
the key's host process relays the forward (test_shared_tunnel.py)."""

from __future__ import annotations

import pytest

from wgmagic.runtime.tunnel import connect

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

cx = pytest.importorskip("connectorx")
SQL = "SELECT g AS id, g * 0.5 AS half, 'row ' || g AS label FROM generate_series(1, 1000) g ORDER BY g"


@pytest.fixture(scope="module")
def tunnel(testbed):
    with connect(testbed.client_config(identity=4)) as tun:
        yield tun


@pytest.mark.parametrize("return_type", ["arrow", pytest.param("pandas", marks=pytest.mark.xfail(
    strict=True, raises=RuntimeError,
    reason="in-process tunnel: ConnectorX's pandas path holds the GIL while it waits on the forward's socket; "
           "wgmagic.connect(conf, share=True) serves it from the key's host process (test_shared_tunnel.py)"))])
def test_connectorx_read_sql_through_tunnel_url(tunnel, testbed, return_type):
    frame = cx.read_sql(tunnel.url(testbed.dsn()), SQL, return_type=return_type)
    if return_type == "arrow":
        frame = frame.to_pandas()
    assert list(frame.columns) == ["id", "half", "label"]
    assert len(frame) == 1000
    assert frame["id"].tolist() == list(range(1, 1001))
    assert frame["half"].tolist() == [g * 0.5 for g in range(1, 1001)]
    assert frame["label"].iloc[-1] == "row 1000"
