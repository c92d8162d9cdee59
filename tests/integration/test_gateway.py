"""wgmagic gateway: a rootless WireGuard responder in front of local services (issue 7).

Reached by the test bed's wireguard-go client (kernel TCP against our passive open) and by wgmagic's own
client, through the impairment relay, and flooded with handshake initiations.
"""

from __future__ import annotations

import hashlib
import os
import resource
import socket
import struct
import time

import pytest

from tests.integration.helpers import wait_for
from tests.testbed import streams
from tests.testbed.bed import REF4, REF6, keypair, run
from tests.testbed.local import closed_tcp_port, loopback_services
from wgmagic.addresses import parse_expose, parse_name
from wgmagic.demo.localdb import LocalPostgres
from wgmagic.runtime.services.gateway import Gateway
from wgmagic.runtime.tunnel import connect

pytestmark = pytest.mark.integration

GW4, GW6 = "198.19.0.1", "fd77:6d61:6769:6400::1"
CL4, CL6 = "198.19.0.2", "fd77:6d61:6769:6400::2"
NET4, NET6 = "198.19.0.0/24", "fd77:6d61:6769:6400::/64"
MiB = 1 << 20


@pytest.fixture(scope="module")
def local_services():
    """The bulk/echo/sink services on this machine's loopback (ports the kernel chose): the gateway's targets,
    and a port of ours that refuses connections."""
    with loopback_services("127.0.0.1") as ports, closed_tcp_port("127.0.0.1") as closed:
        yield {**ports, "closed": closed}


@pytest.fixture(scope="module")
def postgres():
    with LocalPostgres() as pg:
        yield pg


@pytest.fixture(scope="module")
def gateway(testbed, local_services, postgres):
    gw_private, gw_public = keypair()
    client_private, client_public = keypair()
    config = (f"[Interface]\nPrivateKey = {gw_private}\nAddress = {GW4}/32, {GW6}/128\n\n"
              f"[Peer]\nPublicKey = {client_public}\nAllowedIPs = {CL4}/32, {CL6}/128\n\n"
              f"[Peer]\nPublicKey = {testbed.ref_public}\nAllowedIPs = {REF4}/32, {REF6}/128\n")
    # The tunnel side's ports (9000...) are on the gateway's own tunnel addresses; the local side's are the
    # kernel's choice.
    exposes = [parse_expose(f"5432=127.0.0.1:{postgres.port}"),
               parse_expose(f"9000=127.0.0.1:{local_services['bulk']}"),
               parse_expose(f"9001=127.0.0.1:{local_services['echo']}"),
               parse_expose(f"9002=127.0.0.1:{local_services['sink']}"),
               parse_expose(f"9009=127.0.0.1:{local_services['closed']}")]  # ours, not listening: refused
    names = dict([parse_name(f"db.internal={GW4},{GW6}")])
    gw = Gateway(config, exposes, names)  # no ListenPort: the kernel picks the UDP port
    port = gw.listen_port
    gw.client_config = lambda endpoint=None: (  # type: ignore[attr-defined]
        f"[Interface]\nPrivateKey = {client_private}\nAddress = {CL4}/32, {CL6}/128\nDNS = {GW4}\n\n"
        f"[Peer]\nPublicKey = {gw_public}\nEndpoint = {endpoint or f'127.0.0.1:{port}'}\n"
        f"AllowedIPs = {NET4}, {NET6}\n")
    gw.public = gw_public  # type: ignore[attr-defined]
    gw.port = port  # type: ignore[attr-defined]
    # The bed's wireguard-go reference client (a TUN in its own namespace) gets the gateway as a second peer.
    run("wg", "set", testbed.ref_if, "peer", gw_public, "endpoint", f"127.0.0.1:{port}", "allowed-ips",
        f"{NET4},{NET6}", ns=testbed.ref_ns)
    run("ip", "route", "add", NET4, "dev", testbed.ref_if, ns=testbed.ref_ns)
    run("ip", "-6", "route", "add", NET6, "dev", testbed.ref_if, ns=testbed.ref_ns)
    try:
        yield gw
    finally:
        run("wg", "set", testbed.ref_if, "peer", gw_public, "remove", ns=testbed.ref_ns, check=False)
        run("ip", "route", "del", NET4, ns=testbed.ref_ns, check=False)
        run("ip", "-6", "route", "del", NET6, ns=testbed.ref_ns, check=False)
        gw.close()


def test_kernel_client_reaches_postgres_through_the_gateway(testbed, gateway, postgres):
    for host in (GW4, GW6):
        done = testbed.run_in_reference(
            "env", f"PGPASSWORD={postgres.password}", "psql", "-X", "-At", "-h", host, "-p", "5432", "-U", "app",
            "-d", "app", "-c", "SELECT count(*) FROM measurements", check=False, timeout=60)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "2000"
    ping = testbed.run_in_reference("ping", "-c", "2", "-W", "2", GW4, check=False)
    assert ping.returncode == 0, ping.stdout


def test_wgmagic_client_through_the_gateway(gateway, postgres):
    import psycopg

    with connect(gateway.client_config()) as tunnel:
        assert [str(a) for a in tunnel.resolve("db.internal")] == [GW4, GW6]
        with pytest.raises(Exception, match="not"):
            tunnel.resolve("nothere.internal")
        assert tunnel.ping(GW4, 1)[0].rtt is not None
        forward = tunnel.forward("db.internal:5432")
        with psycopg.connect(**forward.libpq_params(), user="app", password=postgres.password, dbname="app") as db:
            assert db.execute("SELECT count(*) FROM measurements").fetchone()[0] == 2000
        with pytest.raises(ConnectionRefusedError):
            tunnel.open_connection(GW4, 9009, timeout=10)
        assert gateway.stats()["counters"]["gateway_local_connect_ECONNREFUSED"] >= 1  # why, for the operator
        with tunnel.open_connection(GW4, 9001, timeout=10) as sock:
            for i in range(200):
                sock.sendall(struct.pack("!I", i))
                assert sock.recv(4) == struct.pack("!I", i)


def _download(tunnel, size: int) -> str:
    digest = hashlib.sha256()
    with tunnel.open_connection(GW4, 9000, timeout=60) as sock:
        sock.sendall(struct.pack("!Q", size))
        received = 0
        buffer = bytearray(256 * 1024)
        while received < size:
            n = sock.recv_into(buffer)
            assert n, f"EOF after {received} bytes"
            digest.update(memoryview(buffer)[:n])
            received += n
    return digest.hexdigest()


def test_64_mib_through_the_gateway_over_an_impaired_link(testbed, gateway):
    size = int(os.environ.get("WGMAGIC_GATEWAY_MIB", "64")) * MiB
    with testbed.relay(loss=0.03, reorder=0.10, delay=0.002, seed=5, target_port=gateway.port) as relay, \
            connect(gateway.client_config(endpoint=relay.endpoint)) as tunnel:
        assert _download(tunnel, size) == streams.stream_sha256(size)
        with tunnel.open_connection(GW4, 9002, timeout=60) as sock:
            local = hashlib.sha256()
            for chunk in streams.iter_stream(size // 4):
                local.update(chunk)
                sock.sendall(chunk)
            sock.shutdown(socket.SHUT_WR)
            answer = sock.recv(64)
        assert answer.decode() == local.hexdigest()


def test_handshake_flood_gets_cookies_while_sessions_keep_working(gateway):
    from wgmagic.wireguard import crypto
    from wgmagic.wireguard.cookie import CookieGenerator
    from wgmagic.wireguard.handshake import create_initiation

    gw_public = __import__("base64").b64decode(gateway.public)
    attacker = crypto.StaticKey(os.urandom(32))  # a key the gateway does not know: mac1 is valid, nothing else
    message, _state = create_initiation(attacker, gw_public, 1234, time.time(), attacker.dh(gw_public))
    datagram = CookieGenerator(gw_public).add_macs(message, len(message) - 32, time.monotonic())
    with connect(gateway.client_config()) as tunnel, tunnel.open_connection(GW4, 9001, timeout=10) as sock:
        before = gateway.stats()["device"]["cookie_replies_sent"]
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        flood = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        flood.setblocking(False)
        started = time.monotonic()
        for i in range(10_000):
            try:
                flood.sendto(datagram, ("127.0.0.1", gateway.port))
            except BlockingIOError:
                time.sleep(0.001)
            if i % 500 == 0:  # the established session keeps answering during the flood
                sock.sendall(b"x")
                assert sock.recv(1) == b"x"
        flood.close()
        elapsed = time.monotonic() - started
        time.sleep(0.5)
        sock.sendall(b"y")
        assert sock.recv(1) == b"y"
        cookies = gateway.stats()["device"]["cookie_replies_sent"] - before
        grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
        print(f"flood: 10,000 initiations in {elapsed:.1f} s, {cookies} cookie replies, max RSS +{grown:.0f} MiB")
        assert cookies > 1000
        assert grown < 64


def _own_gateway(exposes, **kwargs):
    """A gateway of the test's own (fresh keys, kernel-chosen UDP port) and the wg-quick text of its client."""
    gw_private, gw_public = keypair()
    client_private, client_public = keypair()
    config = (f"[Interface]\nPrivateKey = {gw_private}\nAddress = {GW4}/32, {GW6}/128\n\n"
              f"[Peer]\nPublicKey = {client_public}\nAllowedIPs = {CL4}/32, {CL6}/128\n")
    gw = Gateway(config, exposes, name=f"gateway-{os.urandom(3).hex()}", **kwargs)
    client = (f"[Interface]\nPrivateKey = {client_private}\nAddress = {CL4}/32, {CL6}/128\n\n"
              f"[Peer]\nPublicKey = {gw_public}\nEndpoint = 127.0.0.1:{gw.listen_port}\nAllowedIPs = {NET4}, {NET6}\n")
    return gw, client


def _slow_target():
    """A local target whose connect() hangs until the test lets it through, with real packets: a listener whose
    accept queue (listen(0)) is full holds one connection nobody accepted yet, so the kernel drops every new SYN
    to it; accepting that one makes room, and the next SYN gets through."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    filler = socket.create_connection(listener.getsockname(), timeout=5)
    return listener, filler


def test_a_slow_local_target_holds_its_syn_and_stalls_no_one_else(local_services):
    """Issue 12: the gateway connects to a local target without blocking its loop. While one peer's SYN waits
    for a target that does not answer, pings and another connection through the same gateway are served."""
    import threading

    listener, filler = _slow_target()
    slow_port = listener.getsockname()[1]
    gw, client = _own_gateway([parse_expose(f"9003=127.0.0.1:{slow_port}"),
                               parse_expose(f"9001=127.0.0.1:{local_services['echo']}")], connect_timeout=60)
    outcome: dict[str, object] = {}
    try:
        with connect(client) as tunnel:
            def slow_connect() -> None:
                try:
                    outcome["sock"] = tunnel.open_connection(GW4, 9003, timeout=60)
                except Exception as exc:  # reported by the assertions below
                    outcome["error"] = exc

            worker = threading.Thread(target=slow_connect)
            worker.start()
            wait_for(lambda: gw.stats()["connecting"] == 1, 10, "the gateway to hold the SYN", interval=0.01)
            rtts = [reply.rtt for reply in tunnel.ping_iter(GW4, 50, interval=0.0, timeout=5)]
            with tunnel.open_connection(GW4, 9001, timeout=10) as other:
                for i in range(20):
                    other.sendall(struct.pack("!I", i))
                    assert other.recv(4) == struct.pack("!I", i)
            # All of that happened while the slow connect was still pending, on both sides.
            assert gw.stats()["connecting"] == 1 and worker.is_alive() and not outcome
            answered = [rtt for rtt in rtts if rtt is not None]
            print(f"during a held SYN: {len(answered)}/50 pings answered, max RTT {max(answered) * 1000:.2f} ms, "
                  f"median {sorted(answered)[len(answered) // 2] * 1000:.2f} ms; 20 echo round trips on a second "
                  "connection")
            assert len(answered) >= 20
            # Let the target accept: the held SYN is answered with a SYN-ACK and the connection carries data.
            listener.accept()[0].close()
            worker.join(60)
            assert "error" not in outcome, outcome.get("error")
            with outcome["sock"] as sock, listener.accept()[0] as target:  # type: ignore[union-attr]
                sock.sendall(b"hello")
                assert target.recv(5) == b"hello"
                target.sendall(b"world")
                assert sock.recv(5) == b"world"
            assert gw.stats()["connecting"] == 0
    finally:
        gw.close()
        filler.close()
        listener.close()


def test_a_local_target_that_never_answers_gets_the_peer_a_reset_after_the_timeout(local_services):
    listener, filler = _slow_target()
    gw, client = _own_gateway([parse_expose(f"9003=127.0.0.1:{listener.getsockname()[1]}")], connect_timeout=1.0)
    try:
        with connect(client) as tunnel:
            with pytest.raises(ConnectionRefusedError):
                tunnel.open_connection(GW4, 9003, timeout=30)
            stats = gw.stats()
            assert stats["refused"] == 1 and stats["connecting"] == 0
            assert stats["counters"]["gateway_local_connect_timeouts"] == 1
    finally:
        gw.close()
        filler.close()
        listener.close()


def test_target_host_names_resolve_once_at_start_with_a_clear_error():
    from wgmagic.runtime.services.expose import resolve_target

    addresses = resolve_target(parse_expose("80=localhost:8080"))
    assert addresses and all(sockaddr[1] == 8080 for _, sockaddr in addresses)
    with pytest.raises(ValueError, match=r"nothere\.invalid.*does not resolve"):
        _own_gateway([parse_expose("80=nothere.invalid:8080")])
