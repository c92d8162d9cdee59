"""Fly.io's WireGuard gateways over WebSocket (issue 23 item 1), on the bed with real programs on every hop.

The client runs in the bed's namespace whose outbound UDP nft drops (tests/testbed/wsclient.py, as for issue 13).
On the other side, in front of the bed's wireguard-go: `tests/testbed/flyserver.py`, an independent server of the
framing that cuts its messages at seeded random places (plain, or with TLS on port 443 as Fly's gateways listen),
and `wgmagic relay --framing fly` / `wgmagic gateway --websocket --framing fly`. The relay's fly mode is also
checked by a client written here from the framing's description with the `websockets` package's raw client.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import threading

import pytest

from tests.integration.helpers import assert_big_table_intact, big_table_aggregates
from tests.integration.test_websocket import client, download_across_a_relay_restart, write_config
from tests.testbed import streams, wsbed
from tests.testbed.bed import MTU, PEER6, REPO, client_addresses, free_udp_port, keypair
from tests.testbed.tls import write_ca_and_server_cert

pytestmark = pytest.mark.integration

MiB = 1 << 20
PYTHON = sys.executable
FLY_MAGIC = struct.pack(">I", 0x2FACED77)
# The bed's own IPv6 prefix stands in for Fly's 6PN (fdaa::/16): the /48 `fly wireguard create` routes.
BED_48 = "fd77:6d61:6769::/48"
FULL = os.environ.get("WGMAGIC_QUICK") != "1"


def start_flyserver(listen_host: str, upstream_port: int, seed: int, *extra: str) -> tuple[subprocess.Popen, str]:
    """tests/testbed/flyserver.py in front of the bed's wireguard-go; returns (process, "HOST:PORT")."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([PYTHON, "-m", "tests.testbed.flyserver", listen_host, f"127.0.0.1:{upstream_port}",
                                str(seed), *extra], env=env, cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    if "flyserver listening on" not in line:
        process.kill()
        raise RuntimeError(f"flyserver did not start: {line!r} {process.communicate(timeout=10)[1][-2000:]}")
    return process, line.split()[-1]


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        process.communicate(timeout=10)


@pytest.fixture(scope="module")
def blocked(testbed):
    return testbed.blocked_namespace()


@pytest.fixture(scope="module")
def flyserver(testbed, blocked):
    process, where = start_flyserver(blocked.host_ip, testbed.port, 23)
    testbed.processes.append(process)
    yield f"fly+ws://{where}/"
    stop(process)


@pytest.fixture(scope="module")
def fly_relay(testbed, blocked):
    relay = wsbed.relay_process(testbed.dir, blocked.host_ip, testbed.port, path="/", extra=("--framing", "fly"))
    yield relay
    relay.stop()


def fly_shaped_config(testbed, endpoint: str, identity: int = 0, via: str | None = None) -> str:
    """A client config shaped as `fly wireguard create` writes it (one IPv6 address in a /120, DNS on the private
    network, AllowedIPs one /48, PersistentKeepalive 15), with the bed's addresses in place of Fly's 6PN."""
    _, v6 = client_addresses(identity)
    comment = f"#@wgmagic Via = {via}\n" if via else ""
    return (f"[Interface]\nPrivateKey = {testbed.clients[identity][0]}\nAddress = {v6}/120\nDNS = {PEER6}\n"
            f"MTU = {MTU}\n\n[Peer]\nPublicKey = {testbed.peer_public}\nAllowedIPs = {BED_48}\n{comment}"
            f"Endpoint = {endpoint}\nPersistentKeepalive = 15\n")


# ---- the client through the independent server -------------------------------------------------------------
def test_fly_shaped_config_runs_a_million_rows_through_flyserver(testbed, blocked, flyserver):
    """`%wg connect` with a config shaped as flyctl writes it, over Fly's framing through a server that splits
    its messages at random places; `%%wgsql` of the bed's big table (db.internal over the 6PN-style DNS, IPv6
    only) checked against PostgreSQL's own aggregates."""
    expected = big_table_aggregates(testbed)
    config = write_config(testbed, blocked, fly_shaped_config(testbed, f"{blocked.host_ip}:{testbed.port}"),
                          "fly-shaped.conf")
    report = client(blocked, "sql", config, flyserver, testbed.dsn(), timeout=900)
    assert report["ok"], report
    assert report["transport"].startswith(f"WebSocket {flyserver}")
    assert_big_table_intact(report, expected)
    counters = report["counters"]
    assert counters.get("udp_tx_datagrams", 0) == 0  # not one datagram went out over UDP
    assert counters.get("ws_rx_fly_bad_magic", 0) == 0 and counters.get("ws_rx_fly_record_too_long", 0) == 0
    print(f"1,000,000 rows through flyserver: query {report['query_seconds']:.1f} s")


@pytest.mark.parametrize("mode, service", [("download", "bulk"), ("upload", "sink")])
def test_both_directions_through_flyserver(testbed, blocked, flyserver, mode, service):
    size = (16 if FULL else 4) * MiB
    config = write_config(testbed, blocked, name=f"fly-{mode}.conf")
    report = client(blocked, mode, config, flyserver, str(size))
    assert report["ok"], report
    if mode == "download":
        assert report["sha256"] == streams.stream_sha256(size)
    assert report["transport"].startswith(f"WebSocket {flyserver}")
    print(f"{mode} through flyserver: {report['mb_s']:.1f} MB/s")


# ---- the client through wgmagic's own relay in fly mode ----------------------------------------------------
@pytest.mark.parametrize("mode", ["download", "upload"])
def test_both_directions_through_the_relay_in_fly_mode(testbed, blocked, fly_relay, mode):
    assert fly_relay.url.startswith("fly+ws://") and fly_relay.url.endswith("/")
    size = (16 if FULL else 4) * MiB
    config = write_config(testbed, blocked, name=f"fly-relay-{mode}.conf")
    report = client(blocked, mode, config, fly_relay.url, str(size))
    assert report["ok"], report
    if mode == "download":
        assert report["sha256"] == streams.stream_sha256(size)
    assert report["transport"].startswith(f"WebSocket {fly_relay.url}")
    print(f"{mode} through the relay in fly mode: {report['mb_s']:.1f} MB/s")


def test_via_fly_dials_the_endpoint_host_on_443_without_verifying(testbed, blocked, tmp_path):
    """`--via fly`: wss://<Endpoint host>:443/, as flyctl dials it, the certificate not verified (its CA is
    nowhere); with a CA given (--via-ca / $WGMAGIC_VIA_CA) it is verified: the right CA passes, another fails."""
    ca, cert, key = write_ca_and_server_cert(tmp_path, ["gateway.wgmagic.test"], [blocked.host_ip])
    (tmp_path / "other").mkdir()
    other_ca, _, _ = write_ca_and_server_cert(tmp_path / "other", ["gateway.wgmagic.test"], [blocked.host_ip])
    process, where = start_flyserver(blocked.host_ip, testbed.port, 5, "--port", "443", "--tls", str(cert), str(key))
    try:
        assert where == f"{blocked.host_ip}:443"
        text = fly_shaped_config(testbed, f"{blocked.host_ip}:{testbed.port}", via="fly")
        config = write_config(testbed, blocked, text, "fly-443.conf")
        report = client(blocked, "connect", config, "")  # the Via comment says fly
        assert report["ok"], report
        assert report["transport"].startswith(f"WebSocket fly+wss://{blocked.host_ip}:443/")
        report = client(blocked, "connect", config, "fly", env={"WGMAGIC_VIA_CA": str(ca)})
        assert report["ok"], report
        report = client(blocked, "connect", config, "fly", env={"WGMAGIC_VIA_CA": str(other_ca)})
        assert not report["ok"] and report["error"] == "TransportError", report
        assert "TLS" in report["message"] and "not trusted" in report["message"]
        # `auto` knows a Fly gateway by AllowedIPs inside fdaa::/16 (a /48 of fd00::/8 that only the config holds:
        # the handshake sends nothing there): UDP gets no answer, then Fly's WebSocket to the Endpoint's host.
        text = fly_shaped_config(testbed, f"{blocked.host_ip}:{testbed.port}").replace(BED_48, "fdaa:0:23::/48")
        config = write_config(testbed, blocked, text, "fly-auto-6pn.conf")
        report = client(blocked, "connect", config, "auto")
        assert report["ok"], report
        assert report["transport"].startswith(f"WebSocket fly+wss://{blocked.host_ip}:443/")
        assert any("switching to the WebSocket fly+wss://" in note for note in report["notes"]), report["notes"]
    finally:
        stop(process)


def test_auto_falls_back_to_fly_framing_and_says_so(testbed, blocked, flyserver):
    config = write_config(testbed, blocked, name="fly-auto.conf")
    report = client(blocked, "connect", config, f"auto {flyserver}")
    assert report["ok"], report
    assert report["transport"].startswith(f"WebSocket {flyserver}")
    assert any("switching to the WebSocket" in note and flyserver in note for note in report["notes"])


def test_wss_to_a_gateway_serving_plain_ws_says_it_did_not_speak_tls(testbed, blocked, flyserver):
    """`--via fly+wss://` against a server that speaks plain ws: the message says why (it stopped at a colon,
    the library's exception having no message)."""
    config = write_config(testbed, blocked, name="fly-not-tls.conf")
    report = client(blocked, "connect", config, flyserver.replace("fly+ws://", "fly+wss://"))
    assert not report["ok"] and report["error"] == "TransportError", report
    message = report["message"]
    assert "did not speak TLS" in message and "ws://" in message, message
    assert not message.rstrip().endswith(":") and ": \n" not in message and ": ;" not in message, message


def test_gateway_serves_fly_framing(testbed, blocked):
    """`wgmagic gateway --websocket ... --framing fly`: a wgmagic client over Fly's framing reaches a service the
    gateway exposes."""
    loop_ip = f"127.{random.randrange(64, 250)}.{random.randrange(1, 250)}.{random.randrange(1, 250)}"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    services = subprocess.Popen([PYTHON, "-m", "tests.testbed.services", loop_ip], env=env, cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    gw_private, gw_public = keypair()
    client_private, client_public = keypair()
    port = free_udp_port()
    gw_conf = testbed.dir / "gw-fly.conf"
    gw_conf.write_text(f"[Interface]\nPrivateKey = {gw_private}\nListenPort = {port}\nAddress = 198.18.0.1/32\n\n"
                       f"[Peer]\nPublicKey = {client_public}\nAllowedIPs = 198.18.0.2/32\n")
    gw_conf.chmod(0o600)
    gateway = subprocess.Popen([PYTHON, "-m", "wgmagic", "gateway", str(gw_conf), "--expose",
                                f"9000={loop_ip}:9000", "-q", "--websocket", f"{blocked.host_ip}:0", "--framing",
                                "fly"], env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)
    try:
        assert services.stdout is not None and "ready" in services.stdout.readline()
        assert gateway.stdout is not None
        url = None
        for _ in range(10):
            line = gateway.stdout.readline()
            if "WebSocket clients on" in line:
                url = line.split()[-1]
                break
        assert url and url.startswith("fly+ws://") and url.endswith("/"), url
        config = write_config(testbed, blocked, (
            f"[Interface]\nPrivateKey = {client_private}\nAddress = 198.18.0.2/32\n\n"
            f"[Peer]\nPublicKey = {gw_public}\nEndpoint = {blocked.host_ip}:{port}\n"
            f"AllowedIPs = 198.18.0.1/32\n"), "gw-fly-client.conf")
        size = 4 * MiB
        report = client(blocked, "download", config, url, str(size))
        assert report["ok"] and report["sha256"] == streams.stream_sha256(size), report
        assert report["transport"].startswith(f"WebSocket {url}")
    finally:
        gateway.send_signal(signal.SIGTERM)
        with contextlib.suppress(Exception):
            gateway.communicate(timeout=15)
        stop(gateway)
        stop(services)


# ---- the relay's fly mode against a client written from the framing ----------------------------------------
class UdpEcho:
    """A UDP echo on loopback answering b"echo:" + datagram, recording who sent."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.seen: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            self.seen.append(data)
            self.sock.sendto(b"echo:" + data, addr)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


def read_records(ws, count: int) -> tuple[list[bytes], int]:
    """Read `count` records from the server's text messages taken as one byte stream; (datagrams, keepalives)."""
    stream = b""
    out: list[bytes] = []
    keepalives = 0
    while len(out) < count:
        message = ws.recv(timeout=10, decode=False)
        assert isinstance(message, bytes)
        stream += message
        while len(stream) >= 4:
            (length,) = struct.unpack(">I", stream[:4])
            if len(stream) < 4 + length:
                break
            if length:
                out.append(stream[4:4 + length])
            else:
                keepalives += 1
            stream = stream[4 + length:]
    return out, keepalives


def test_relay_fly_mode_against_a_client_written_from_the_framing(tmp_path):
    """Magic and records sent as text messages of raw bytes (not UTF-8), cut at odd places (inside the magic,
    inside a length, several records in one message); replies read as one stream; keepalives skipped; a wrong
    magic and an over-long record close the client with 1002 and are counted."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect as ws_connect

    echo = UdpEcho()
    relay = wsbed.relay_process(tmp_path, "127.0.0.1", echo.port, path="/", extra=("--framing", "fly"))
    try:
        assert relay.url.startswith("fly+ws://")
        url = relay.url.replace("fly+", "", 1)
        rng = random.Random(23)
        datagrams = [b"\xff\xfe\x80" + rng.randbytes(rng.randrange(1, 1500)) for _ in range(40)]
        stream = FLY_MAGIC + b"\x00\x00\x00\x00" + b"".join(struct.pack(">I", len(d)) + d for d in datagrams)
        with ws_connect(url, open_timeout=10, max_size=None, origin="https://example.test") as ws:
            cuts = sorted([*rng.sample(range(1, len(stream)), 60), 2, 6, 9])  # inside the magic and a length
            for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
                if end > start:
                    ws.send(stream[start:end], text=True)  # raw bytes in a text frame
            replies, _ = read_records(ws, len(datagrams))
        assert replies == [b"echo:" + d for d in datagrams]
        assert echo.seen == datagrams
        # A wrong magic: closed as a protocol error; nothing forwarded.
        with ws_connect(url, open_timeout=10) as ws:
            ws.send(b"GET / HTTP/1.1\r\n", text=True)
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1002
        # A record longer than any datagram: closed too.
        with ws_connect(url, open_timeout=10) as ws:
            ws.send(FLY_MAGIC + struct.pack(">I", 1 << 20), text=True)
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1002
        # Binary frames are part of the same stream too.
        with ws_connect(url, open_timeout=10) as ws:
            ws.send(FLY_MAGIC + struct.pack(">I", 3))
            ws.send(b"abc")
            assert read_records(ws, 1)[0] == [b"echo:abc"]
    finally:
        stats = relay.stop()
        echo.close()
    assert stats["up_messages"] == len(datagrams) + 1 and stats["down_messages"] == len(datagrams) + 1
    assert stats["fly_keepalives"] == 1 and stats["fly_bad_magic"] == 1 and stats["fly_record_too_long"] == 1
    assert stats["protocol_error"] == 2


def test_relay_fly_path_and_cli(tmp_path):
    """--framing fly serves "/" by default (flyctl's path) and prints a URL --via takes as it is."""
    echo = UdpEcho()
    try:
        relay = wsbed.relay_process(tmp_path, "127.0.0.1", echo.port, path="", extra=("--framing", "fly"))
        stats = relay.stop()
        assert relay.url.startswith("fly+ws://127.0.0.1:") and relay.url.endswith("/"), relay.url
        assert stats.get("accepted", 0) == 0
    finally:
        echo.close()
    result = subprocess.run([PYTHON, "-m", "wgmagic", "relay", "--listen", "127.0.0.1:0", "--to", "127.0.0.1:9",
                             "--framing", "morse"], capture_output=True, text=True, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
    assert result.returncode != 0 and "morse" in result.stderr



def test_fly_relay_killed_and_restarted_mid_transfer(testbed, blocked):
    """The WebSocket drops mid-download: the client reconnects with backoff, writes the magic again on the new
    WebSocket, and the transfer completes intact."""
    relay = wsbed.relay_process(testbed.dir, blocked.host_ip, testbed.port, path="/", extra=("--framing", "fly"))
    config = write_config(testbed, blocked, name="fly-restart.conf")
    stats = download_across_a_relay_restart(blocked, relay, config, (32 if FULL else 8) * MiB)
    assert stats.get("fly_bad_magic", 0) == 0  # the new WebSocket began with the magic


def test_keepalive_records_after_a_second_with_nothing_sent(tmp_path):
    """The transport itself, idle on a WebSocket to the relay in fly mode and to flyserver: it writes zero-length
    records (counted by the relay), and skips those flyserver writes."""
    import asyncio
    from collections import Counter

    from wgmagic.runtime.websocket import WebSocketTransport

    echo = UdpEcho()
    relay = wsbed.relay_process(tmp_path, "127.0.0.1", echo.port, path="/", extra=("--framing", "fly"))
    server, where = start_flyserver("127.0.0.1", echo.port, 3)
    try:
        async def idle(url: str, keepalives_back: bool) -> Counter[str]:
            counters: Counter[str] = Counter()
            received: list[bytes] = []
            transport = WebSocketTransport(asyncio.get_running_loop(), url, ("peer", 0),
                                           lambda data, addr, now: received.append(data), lambda now: None, counters)
            transport.open()
            transport.send([(b"\x01hello", ("peer", 0))])
            for _ in range(200):  # at most 20 s; done as soon as both ways have had a keepalive
                if counters["ws_tx_keepalives"] >= 2 and received and (
                        not keepalives_back or counters["ws_rx_fly_keepalives"] >= 1):
                    break
                await asyncio.sleep(0.1)
            transport.close()
            assert received == [b"echo:\x01hello"]
            return counters

        to_relay = asyncio.run(idle(relay.url, False))  # the relay writes none: the client's keep the path up
        to_flyserver = asyncio.run(idle(f"fly+ws://{where}/", True))
    finally:
        stats = relay.stop()
        stop(server)
        echo.close()
    assert to_relay["ws_tx_keepalives"] >= 2 and to_flyserver["ws_tx_keepalives"] >= 2
    assert to_flyserver["ws_rx_fly_keepalives"] >= 1 and to_flyserver["ws_rx_messages"] == 1
    assert stats["fly_keepalives"] >= 2 and stats["up_messages"] == 1


def test_fly_framing_through_an_http_proxy(testbed, blocked, tmp_path):
    """A gateway only this machine's loopback reaches, wss with a certificate no one trusts: the client gets to
    it through HTTPS_PROXY (tinyproxy, Basic authentication), unverified as flyctl, and a download completes."""
    _, cert, key = write_ca_and_server_cert(tmp_path, ["gateway.wgmagic.test"], ["127.0.0.1"])
    server, where = start_flyserver("127.0.0.1", testbed.port, 11, "--tls", str(cert), str(key))
    password = "pw-" + os.urandom(6).hex()
    proxy, port = wsbed.start_tinyproxy(tmp_path, blocked.host_ip, "alice", password)
    try:
        config = write_config(testbed, blocked, name="fly-proxy.conf")
        size = 4 * MiB
        url = f"fly+wss://{where}/"
        env = {"HTTPS_PROXY": f"http://alice:{password}@{blocked.host_ip}:{port}"}
        report = client(blocked, "download", config, url, str(size), env=env)
        assert report["ok"] and report["sha256"] == streams.stream_sha256(size), report
        assert report["transport"].startswith(f"WebSocket {url} through the HTTP proxy {blocked.host_ip}:{port}")
        assert password not in report["_output"]
    finally:
        proxy.kill()
        proxy.wait(10)
        stop(server)
