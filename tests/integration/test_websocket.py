"""WireGuard over WebSocket where UDP is blocked (issue 13), with real programs on every hop.

The client runs as its own process inside a namespace whose outbound UDP nft drops (the test process cannot
move itself into a namespace): `tests/testbed/wsclient.py`, or `wgmagic up`. On the other side: `wgmagic
relay` in front of the bed's wireguard-go, nginx terminating TLS, tinyproxy with Basic authentication, and
`wgmagic gateway --websocket`; garbage comes from the `websockets` package's own client.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.integration.helpers import assert_big_table_intact, big_table_aggregates
from tests.testbed import streams, wsbed
from tests.testbed.bed import REPO, free_udp_port, keypair

pytestmark = pytest.mark.integration

MiB = 1 << 20
# What garbage may cost `wgmagic gateway --websocket` at most (docs/layers.md, "WebSocket transport"): 300
# connections at once, each holding at most one frame being read and 64 KiB waiting to be sent.
GARBAGE_RSS_BOUND_MIB = 64
PYTHON = sys.executable


@pytest.fixture(scope="module")
def blocked(testbed):
    return testbed.blocked_namespace()


@pytest.fixture(scope="module")
def relay(testbed, blocked):
    process = wsbed.relay_process(testbed.dir, blocked.host_ip, testbed.port)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def loopback_relay(testbed):
    """A relay only this machine's loopback reaches: the namespace gets to it through nginx or tinyproxy."""
    process = wsbed.relay_process(testbed.dir, "127.0.0.1", testbed.port)
    yield process
    process.stop()


def write_config(testbed, blocked, text: str | None = None, name: str = "client.conf") -> str:
    path = testbed.dir / name
    path.write_text(text if text is not None else testbed.client_config(f"{blocked.host_ip}:{testbed.port}"))
    path.chmod(0o600)
    return str(path)


def client(blocked, *args: str, env: dict | None = None, timeout: float = 300) -> dict:
    """Run tests.testbed.wsclient inside the blocked namespace; its last line of output, parsed."""
    environment = {k: v for k, v in os.environ.items() if k.lower() not in ("https_proxy", "http_proxy", "no_proxy",
                                                                           "all_proxy", "wgmagic_via",
                                                                           "wgmagic_via_ca")}
    environment.update(PYTHONPATH=str(REPO), **(env or {}))
    result = blocked.run(PYTHON, "-m", "tests.testbed.wsclient", *args, env=environment, cwd=REPO, check=False,
                         timeout=timeout)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines, f"wsclient printed no result: {result.stdout[-2000:]} {result.stderr[-3000:]}"
    report = json.loads(lines[-1])
    report["_output"] = result.stdout + result.stderr
    return report


def test_udp_is_blocked_and_the_big_table_comes_through_the_relay_intact(testbed, blocked, relay):
    expected = big_table_aggregates(testbed)
    config = write_config(testbed, blocked)
    report = client(blocked, "sql", config, relay.url, testbed.dsn(), timeout=600)
    assert report["ok"], report
    assert report["transport"].startswith(f"WebSocket {relay.url}")
    assert_big_table_intact(report, expected)
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    assert report["at_first"] == (start + datetime.timedelta(seconds=1)).isoformat()
    assert report["dtypes"]["id"] == "Int32" or report["dtypes"]["id"].lower().startswith("int")
    assert report["counters"].get("udp_tx_datagrams", 0) == 0  # not one datagram went out over UDP


def test_udp_alone_gets_no_answer_there(testbed, blocked):
    config = write_config(testbed, blocked, name="udp-only.conf")
    report = client(blocked, "connect", config, "udp", "4")
    assert not report["ok"] and report["error"] == "HandshakeTimeoutError"
    assert "blocked" in report["message"]


def test_auto_switches_to_the_websocket_by_itself_and_says_so(testbed, blocked, relay):
    text = testbed.client_config(f"{blocked.host_ip}:{testbed.port}").replace(
        "AllowedIPs", f"#@wgmagic Via = {relay.url}\nAllowedIPs")
    config = write_config(testbed, blocked, text, "auto.conf")
    report = client(blocked, "connect", config, "auto")
    assert report["ok"], report
    assert report["transport"].startswith("WebSocket")
    assert any("switching to the WebSocket" in note and "within 3 s" in note for note in report["notes"])


def test_marked_comment_is_valid_for_wg(testbed, blocked, relay, tmp_path):
    """wg(8) itself accepts a config carrying the `#@wgmagic Via` comment."""
    private, _ = keypair()
    _, public = keypair()
    text = (f"[Interface]\nPrivateKey = {private}\n\n[Peer]\nPublicKey = {public}\n"
            f"#@wgmagic Via = {relay.url}\nEndpoint = 127.0.0.1:1\nAllowedIPs = 198.18.99.0/24\n")
    path = tmp_path / "wgq.conf"
    path.write_text(text)
    stripped = subprocess.run(["wg-quick", "strip", str(path)], capture_output=True, text=True, check=True)
    interface = f"wgmtq{testbed.id}"
    process = testbed._start_wireguard_go(interface)
    try:
        applied = subprocess.run(["wg", "setconf", interface, "/dev/stdin"], input=stripped.stdout,
                                 capture_output=True, text=True, check=False)
        assert applied.returncode == 0, applied.stderr
        shown = subprocess.run(["wg", "show", interface, "peers"], capture_output=True, text=True).stdout
        assert public in shown
    finally:
        process.kill()
        process.wait(10)
    from wgmagic.config import parse_config

    assert parse_config(text).peers[0].via == relay.url


def test_cli_up_with_the_environment_variable(testbed, blocked, relay):
    config = write_config(testbed, blocked, name="cli.conf")
    env = {**os.environ, "PYTHONPATH": str(REPO), "WGMAGIC_VIA": relay.url}
    process = subprocess.Popen(blocked.command(PYTHON, "-m", "wgmagic", "up", config, "-q"), env=env, cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "tunnel up" in line, line + process.stdout.read() if process.poll() is not None else line
    finally:
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=15)
    assert "tunnel closed" in out


def test_wss_through_nginx_with_the_test_ca(testbed, blocked, loopback_relay):
    nginx, port, ca = wsbed.start_nginx(testbed.dir, blocked.host_ip, loopback_relay.port)
    testbed.processes.append(nginx)
    try:
        config = write_config(testbed, blocked, name="wss.conf")
        url = f"wss://{blocked.host_ip}:{port}/wg"
        size = 8 * MiB
        report = client(blocked, "download", config, url, str(size), env={"WGMAGIC_VIA_CA": str(ca)})
        assert report["ok"] and report["sha256"] == streams.stream_sha256(size), report
        assert report["transport"].startswith(f"WebSocket {url}")
        # Without the CA the certificate is not trusted: a clear TLS error, no handshake attempted in vain.
        report = client(blocked, "connect", config, url)
        assert not report["ok"] and report["error"] == "TransportError"
        assert "TLS" in report["message"] and "not trusted" in report["message"]
    finally:
        nginx.kill()
        nginx.wait(10)


def test_http_proxy_connect_with_basic_auth(testbed, blocked, loopback_relay):
    password = "pw-" + os.urandom(6).hex()
    proxy, port = wsbed.start_tinyproxy(testbed.dir, blocked.host_ip, "alice", password)
    testbed.processes.append(proxy)
    try:
        config = write_config(testbed, blocked, name="proxy.conf")
        size = 8 * MiB
        # A ws:// URL takes HTTP_PROXY, as curl reads it (HTTPS_PROXY is for wss://).
        good = {"HTTP_PROXY": f"http://alice:{password}@{blocked.host_ip}:{port}"}
        report = client(blocked, "download", config, loopback_relay.url, str(size), env=good)
        assert report["ok"] and report["sha256"] == streams.stream_sha256(size), report
        # A wrong password: the proxy's refusal, naming the proxy, never showing either password.
        bad = {"http_proxy": f"http://alice:wrong-{password}@{blocked.host_ip}:{port}"}
        report = client(blocked, "connect", config, loopback_relay.url, env=bad)
        assert not report["ok"] and report["error"] == "TransportError", report
        assert f"HTTP proxy {blocked.host_ip}:{port} refused" in report["message"]
        assert "HTTP 40" in report["message"] and "password" in report["message"]
        assert password not in report["_output"]
        # NO_PROXY: the relay's host is reached directly (and from inside the namespace nothing is there).
        report = client(blocked, "connect", config, loopback_relay.url, env={**good, "NO_PROXY": "127.0.0.1"})
        assert not report["ok"] and "proxy" not in report["message"], report
        assert password not in report["_output"]
    finally:
        proxy.kill()
        proxy.wait(10)


def download_across_a_relay_restart(blocked, relay, config: str, size: int, pause: float = 0.0) -> dict:
    """wsclient downloads `size` bytes through `relay`, which is killed once the transfer is under way and
    restarted `pause` seconds later on its port: the transfer must complete intact over a new WebSocket.
    Returns the relay's stats (relay.stop())."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        blocked.command(PYTHON, "-m", "tests.testbed.wsclient", "download", config, relay.url, str(size)),
        env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("progress"), line + (process.stderr.read() if process.stderr else "")
        relay.kill()  # mid-transfer: the WebSocket drops
        time.sleep(pause)
        relay.restart()
        out, err = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        stats = relay.stop()
    report = json.loads([x for x in out.splitlines() if x.startswith("{")][-1])
    assert report["ok"], (report, err[-2000:])
    assert report["sha256"] == streams.stream_sha256(size)
    assert report["counters"].get("ws_reconnects", 0) >= 1
    return stats


def test_relay_killed_and_restarted_mid_transfer(testbed, blocked):
    relay = wsbed.relay_process(testbed.dir, blocked.host_ip, testbed.port)
    config = write_config(testbed, blocked, name="restart.conf")
    download_across_a_relay_restart(blocked, relay, config, 48 * MiB, pause=1.0)


@pytest.fixture(scope="module")
def gateway_ws(testbed, blocked):
    """`wgmagic gateway --websocket` on the host end of the blocked namespace's veth, exposing the bed's TCP
    services (run on a loopback address of their own) to a client of its own."""
    loop_ip = f"127.{random.randrange(64, 250)}.{random.randrange(1, 250)}.{random.randrange(1, 250)}"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    services = subprocess.Popen([PYTHON, "-m", "tests.testbed.services", loop_ip], env=env, cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                start_new_session=True)
    testbed.processes.append(services)
    assert services.stdout is not None and "ready" in services.stdout.readline()
    gw_private, gw_public = keypair()
    client_private, client_public = keypair()
    port = free_udp_port()
    gw_conf = testbed.dir / "gw-ws.conf"
    gw_conf.write_text(f"[Interface]\nPrivateKey = {gw_private}\nListenPort = {port}\nAddress = 198.18.0.1/32\n\n"
                       f"[Peer]\nPublicKey = {client_public}\nAllowedIPs = 198.18.0.2/32\n")
    gw_conf.chmod(0o600)
    exposes = [arg for p in (9000, 9001, 9002) for arg in ("--expose", f"{p}={loop_ip}:{p}")]
    gateway = subprocess.Popen([PYTHON, "-m", "wgmagic", "gateway", str(gw_conf), *exposes, "-q",
                                "--websocket", f"{blocked.host_ip}:0"], env=env, cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    testbed.processes.append(gateway)
    assert gateway.stdout is not None
    url = None
    for _ in range(10):
        line = gateway.stdout.readline()
        if "WebSocket clients on" in line:
            url = line.split()[-1]
            break
    assert url, "the gateway did not report its WebSocket listener"
    client_conf = write_config(testbed, blocked, (
        f"[Interface]\nPrivateKey = {client_private}\nAddress = 198.18.0.2/32\n\n"
        f"[Peer]\nPublicKey = {gw_public}\nEndpoint = {blocked.host_ip}:{port}\n"
        f"#@wgmagic Via = {url}\nAllowedIPs = 198.18.0.1/32\n"), "gw-client.conf")
    yield gateway, url, client_conf
    gateway.send_signal(signal.SIGTERM)
    with contextlib.suppress(Exception):
        gateway.communicate(timeout=15)
    services.terminate()


def test_gateway_websocket_serves_the_client_directly(blocked, gateway_ws):
    _, url, config = gateway_ws
    size = 16 * MiB
    report = client(blocked, "download", config, "", str(size))  # the Via comes from the config
    assert report["ok"] and report["sha256"] == streams.stream_sha256(size), report
    assert report["transport"].startswith(f"WebSocket {url}")


def test_gateway_websocket_survives_garbage_within_its_memory_bound(blocked, gateway_ws):
    from websockets.exceptions import ConnectionClosed, InvalidStatus
    from websockets.sync.client import connect as ws_connect

    gateway, url, config = gateway_ws
    host, port = url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)
    before = wsbed.rss_kib(gateway.pid)
    rng = random.Random(13)
    held: list = []
    stack = contextlib.ExitStack()
    try:
        # Text messages, random binary (not WireGuard), an oversized message, a wrong path, raw junk.
        for round_ in range(20):
            with ws_connect(url, max_size=None, open_timeout=10) as ws:
                for _ in range(50):
                    ws.send("not a datagram " * 10)
                    ws.send(rng.randbytes(rng.randrange(1, 1500)))
                if round_ % 5 == 0:
                    with contextlib.suppress(ConnectionClosed):
                        ws.send(bytes(2 * MiB))  # over the 64 KiB limit: this client is closed (1009)
                        ws.recv(timeout=5)
        with pytest.raises(InvalidStatus):
            ws_connect(url.rsplit("/", 1)[0] + "/elsewhere", open_timeout=10)
        for _ in range(50):
            with socket.create_connection((host, int(port)), timeout=5) as raw:
                raw.sendall(rng.randbytes(4096))
                with contextlib.suppress(OSError):
                    raw.recv(1024)
        # Many clients at once, idle, and half-open upgrades.
        for _ in range(250):
            stack.enter_context(ws_connect(url, open_timeout=10))
        for _ in range(50):
            raw = socket.create_connection((host, int(port)), timeout=5)
            raw.sendall(b"GET /wg HTTP/1.1\r\nHost: x\r\n")  # never finished
            held.append(raw)
        during = wsbed.rss_kib(gateway.pid)
    finally:
        for item in held:
            with contextlib.suppress(Exception):
                item.close()
        with contextlib.suppress(Exception):
            stack.close()
    print(f"gateway RSS before {before} KiB, with 300 garbage and idle connections {during} KiB")
    assert gateway.poll() is None, "the gateway died"
    grown_mib = (during - before) / 1024
    assert grown_mib < GARBAGE_RSS_BOUND_MIB, f"gateway RSS grew {grown_mib:.1f} MiB"
    # And it still serves its real client.
    size = 4 * MiB
    report = client(blocked, "download", config, "", str(size))
    assert report["ok"] and report["sha256"] == streams.stream_sha256(size), report


def test_doctor_tells_udp_blocked_from_neither_works(testbed, blocked, relay):
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(PYTHONPATH=str(REPO), WGMAGIC_VIA="udp")
    for url, expected in ((relay.url, "UDP is blocked on this network"),
                          (f"ws://{blocked.host_ip}:1/wg", "neither works")):
        text = testbed.client_config(f"{blocked.host_ip}:{testbed.port}").replace(
            "AllowedIPs", f"#@wgmagic Via = {url}\nAllowedIPs")
        config = write_config(testbed, blocked, text, "doctor.conf")
        result = blocked.run(PYTHON, "-m", "wgmagic", "doctor", config, "--timeout", "3", env=env, cwd=REPO,
                             check=False, timeout=120)
        assert expected in result.stdout, result.stdout + result.stderr


def test_relay_counts_and_drops_what_is_not_a_datagram(tmp_path):
    """`wgmagic relay` against a UDP echo on loopback and the `websockets` package's client: datagrams go
    through both ways; text, a wrong path and an oversized message are refused and counted."""
    import threading

    from websockets.exceptions import ConnectionClosed, InvalidStatus
    from websockets.sync.client import connect as ws_connect

    echo = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    echo.bind(("127.0.0.1", 0))
    echo.settimeout(0.2)
    seen: list[tuple[str, int]] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, addr = echo.recvfrom(65535)
            except TimeoutError:
                continue
            seen.append(addr)
            echo.sendto(b"echo:" + data, addr)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    relay = wsbed.relay_process(tmp_path, "127.0.0.1", echo.getsockname()[1])
    try:
        with ws_connect(relay.url, open_timeout=10) as one, ws_connect(relay.url, open_timeout=10) as two:
            one.send(b"\x01datagram")
            assert one.recv(timeout=10) == b"echo:\x01datagram"
            two.send(b"\x02other")
            assert two.recv(timeout=10) == b"echo:\x02other"
            one.send("text is not a datagram")
            one.send(b"\x03after")
            assert one.recv(timeout=10) == b"echo:\x03after"
        assert len(set(seen)) == 2  # one UDP socket, so one endpoint at the server, per client
        with pytest.raises(InvalidStatus) as refused:
            ws_connect(relay.url.rsplit("/", 1)[0] + "/other", open_timeout=10)
        assert refused.value.response.status_code == 404
        with ws_connect(relay.url, open_timeout=10, max_size=None) as big:
            big.send(bytes(70_000))
            with pytest.raises(ConnectionClosed) as closed:
                big.recv(timeout=10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    finally:
        stats = relay.stop()
        stop.set()
        thread.join(5)
        echo.close()
    assert stats["up_messages"] == 3 and stats["down_messages"] == 3
    assert stats["not_binary"] == 1 and stats["refused_path"] == 1 and stats["oversized"] == 1
