"""Address selection (issue 11, item 4): a name with A and AAAA records on an IPv6-only tunnel reaches its
AAAA address on every path; attempts move to the next address (RFC 8305); "no route" only when no address is
routable, at the right stage; the peer Endpoint's addresses are tried in turn."""

from __future__ import annotations

import asyncio
import gc
import logging
import shutil
import socket
import subprocess
import time

import psycopg
import pytest

from tests.integration.helpers import magic_shell, poll
from tests.testbed.bed import PEER4, PEER6
from wgmagic.errors import MessageTooLongError, NoRouteError
from wgmagic.runtime import endpoint_lookup
from wgmagic.runtime.relay import HappyEyeballs
from wgmagic.runtime.tunnel import connect
from wgmagic.sql.messages import ConnectionStageError
from wgmagic.wireguard.timers import Timers

pytestmark = pytest.mark.integration

IDENTITY = 4


@pytest.fixture(scope="module")
def v6tunnel(testbed):
    with connect(testbed.client_config(ipv6_only=True, identity=IDENTITY), name="v6only") as tun:
        yield tun


def test_resolution_keeps_the_address_the_tunnel_routes(v6tunnel):
    assert [str(a) for a in v6tunnel.resolve("db.internal")] == [PEER4, PEER6]  # A first, as resolved
    assert [str(a) for a in v6tunnel.resolve_addresses("db.internal")] == [PEER6]


def test_open_connection_and_asyncio_streams_reach_the_aaaa_address(v6tunnel):
    with v6tunnel.open_connection("db.internal", 9001, timeout=10) as sock:
        sock.sendall(b"over ipv6")
        assert sock.recv(64) == b"over ipv6"

    async def main() -> bytes:
        reader, writer = await v6tunnel.open_connection_async("db.internal", 9001, timeout=10)
        writer.write(b"async")
        await writer.drain()
        answer = await reader.readexactly(5)
        writer.close()
        await writer.wait_closed()
        return answer

    assert asyncio.run(main()) == b"async"


def test_forwards_reach_the_aaaa_address(testbed, v6tunnel):
    for local in (None, 0):
        forward = v6tunnel.forward("db.internal:5432", local=local)
        try:
            with psycopg.connect(**forward.libpq_params(), user="app", password=testbed.db_password,
                                 dbname="app", sslmode="disable") as conn:
                assert conn.execute("select inet_server_addr()::text").fetchone()[0] == f"{PEER6}/128"
        finally:
            v6tunnel.close_forward(forward)


def test_socks5_connect_by_name_reaches_the_aaaa_address(v6tunnel):
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    server = v6tunnel.socks(port=0)  # TCP: with the credentials generated for it
    result = subprocess.run(["curl", "-s", "--max-time", "20", "--proxy", server.proxy_url(reveal=True),
                             "http://db.internal:8080/"], capture_output=True, text=True, timeout=30)
    assert result.stdout == "hello from the private network\n"


def test_ping_by_name_uses_the_aaaa_address(v6tunnel):
    replies = v6tunnel.ping("db.internal", 1, timeout=5)
    assert replies[0].host == PEER6 and replies[0].rtt is not None


def test_a_name_with_no_routable_address_is_no_route(v6tunnel):
    with pytest.raises(NoRouteError, match=r"no route to bulk\.internal .*198\.18\.0\.1: the \[Interface\] has "
                                           r"no IPv4 Address"):
        v6tunnel.open_connection("bulk.internal", 9001, timeout=5)
    with pytest.raises(NoRouteError, match="no route"):
        v6tunnel.forward("bulk.internal:5432")


def test_wgsql_on_an_ipv6_only_tunnel_and_the_stage_of_no_route(testbed, capsys):
    with magic_shell(testbed, v6config=testbed.client_config(ipv6_only=True, identity=2)) as shell:
        result = shell.run_cell("%wg connect {v6config} --name v6magic")
        assert result.success, result.error_in_exec
        shell.user_ns["v6dsn"] = testbed.dsn()
        shell.user_ns["v4only_dsn"] = testbed.dsn("bulk.internal")
        result = shell.run_cell("%%wgsql {v6dsn} --alias v6db --tunnel v6magic\nSELECT inet_server_addr()::text AS a")
        assert result.success, (result.error_in_exec, capsys.readouterr())
        assert result.result["a"][0] == f"{PEER6}/128"
        result = shell.run_cell("%%wgsql {v4only_dsn} --alias v4db --tunnel v6magic\nSELECT 1")
        out = capsys.readouterr()
        assert isinstance(result.error_in_exec, ConnectionStageError), out
        assert result.error_in_exec.stage == "TCP connect"
        assert "no route to bulk.internal" in str(result.error_in_exec)
        assert testbed.db_password not in out.out + out.err
        shell.run_cell("%wgsql v6db --close")


def _happy_eyeballs(tun, addresses: list[str], port: int) -> tuple[HappyEyeballs, dict[str, object]]:
    import ipaddress

    outcome: dict[str, object] = {}

    def start() -> HappyEyeballs:
        return HappyEyeballs(tun._engine, [ipaddress.ip_address(a) for a in addresses], port, 10.0,
                             lambda conn: outcome.setdefault("conn", conn),
                             lambda error: outcome.setdefault("error", error))

    attempt = tun._thread.call(start)
    poll(lambda: bool(outcome), 30)
    return attempt, outcome


def test_happy_eyeballs_moves_on_from_a_silent_and_from_a_refusing_address(testbed):
    with connect(testbed.client_config(identity=5)) as tun:
        # 198.18.0.200 is inside AllowedIPs but nobody has it: the peer's kernel drops what is sent there, so
        # the first attempt stays unanswered and the next address is tried after the Connection Attempt Delay.
        attempt, outcome = _happy_eyeballs(tun, ["198.18.0.200", PEER6], 9001)
        assert str(outcome["conn"].remote[0]) == PEER6
        tun._thread.call(outcome["conn"].abort, time.monotonic())
        # A refusal moves on at once; when every address refuses, the first address's error is the answer.
        attempt, outcome = _happy_eyeballs(tun, [PEER4, PEER6], 9009)
        assert isinstance(outcome["error"], ConnectionRefusedError)
        assert sorted(index for index, _ in attempt.errors) == [0, 1]


def test_pinging_a_family_the_tunnel_has_no_address_for_is_no_route_and_leaves_no_warning(testbed, caplog):
    # AllowedIPs cover IPv4 too, but the [Interface] has an IPv6 Address only.
    text = testbed.client_config(ipv6_only=True, identity=1).replace(
        "AllowedIPs = fd77", "AllowedIPs = 198.18.0.0/24, fd77")
    with caplog.at_level(logging.ERROR, logger="asyncio"), connect(text) as tun:
        with pytest.raises(NoRouteError, match=r"no route to 198\.18\.0\.1: .*no IPv4 Address"):
            tun.ping(PEER4, 1, timeout=1)
        with pytest.raises(NoRouteError):
            tun.open_connection(PEER4, 9001, timeout=2)
    gc.collect()
    assert "never retrieved" not in caplog.text


def test_a_1300_byte_ping_on_mtu_576_is_refused_clearly(testbed):
    text = testbed.client_config(identity=1).replace("MTU = 1420", "MTU = 576")
    with connect(text) as tun:
        with pytest.raises(MessageTooLongError, match=r"message too long: .*1300 data bytes.*MTU is 576.*at most 548"):
            tun.ping(PEER4, 1, size=1300)
        assert tun.ping(PEER4, 1, size=548, timeout=5)[0].rtt is not None  # the largest that fits


def test_the_endpoint_name_s_next_address_is_tried_when_one_gets_no_answer(testbed, monkeypatch):
    # A name whose first address swallows datagrams (a bound UDP socket that never answers), as an
    # unreachable AAAA of a dual-stack Endpoint does; the second is the peer.
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        order = [("127.0.0.1", silent.getsockname()[1]), ("127.0.0.1", testbed.port)]
        monkeypatch.setattr(endpoint_lookup, "resolve_endpoint", lambda host, port: list(order))
        with connect(testbed.client_config(identity=5), timers=Timers(rekey_timeout=1.0), timeout=20) as tun:
            assert tun.stats()["counters"]["endpoint_next_address"] >= 1
            with tun.open_connection(PEER4, 9001, timeout=10) as sock:
                sock.sendall(b"moved")
                assert sock.recv(16) == b"moved"
        silent.setblocking(False)
        assert silent.recv(2048)  # the handshake initiation went there first
    finally:
        silent.close()
