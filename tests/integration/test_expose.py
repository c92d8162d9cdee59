"""Reverse forwards (issue 16): `%wg expose` / `tunnel.expose` put a listener on the tunnel address inside this
process's stack; programs on the private network reach a local HTTP server through it with curl."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest

from tests.integration.helpers import magic_shell
from tests.testbed.bed import NET4, NET6, PEER4, PEER6, REF4, client_addresses
from wgmagic.runtime.tunnel import connect

pytestmark = pytest.mark.integration
IDENTITY = 4
BODY = b"hello from the notebook\n"


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.server.requests.append(self.client_address)  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[http.server.ThreadingHTTPServer]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.requests = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _curl(testbed, where: str, url: str, *extra: str):
    run = testbed.run_in_peer if where == "peer" else testbed.run_in_reference
    return run("curl", "-sS", "-g", "--max-time", "8", *extra, url, check=False, timeout=30)


def test_curl_in_the_peer_namespace_reaches_an_http_server_in_this_process(testbed, http_server):
    v4, v6 = client_addresses(IDENTITY)
    port = http_server.server_address[1]
    with connect(testbed.client_config(identity=IDENTITY)) as tunnel:
        exposed = tunnel.expose(f"8088=127.0.0.1:{port}")
        assert [str(a) for a in exposed.addresses] == [v4, v6]
        for url in (f"http://{v4}:8088/", f"http://[{v6}]:8088/"):
            result = _curl(testbed, "peer", url)
            assert result.returncode == 0, result.stderr
            assert result.stdout.encode() == BODY
        assert exposed.describe()["accepted"] == 2
        from wgmagic.notebook.status import TunnelStatus

        text = repr(TunnelStatus.of(tunnel))
        assert f"*:8088 -> 127.0.0.1:{port}" in text and "2 accepted" in text
        exposed.close()
        # no longer listening: the stack answers the SYN with a reset
        result = _curl(testbed, "peer", f"http://{v4}:8088/")
        assert result.returncode == 7, result.stderr  # curl: "Failed to connect" (connection refused)
    assert len(http_server.requests) == 2


def test_a_connection_from_outside_allowed_ips_is_refused(testbed, http_server):
    """The reference client (198.18.0.3) is a machine on the private network. A config whose AllowedIPs leave
    it out never lets its packets in (cryptokey routing); an expose with --allow narrower than AllowedIPs
    answers it with a reset."""
    with testbed.forwarding():
        _outside_allowed_ips(testbed, http_server)


def _outside_allowed_ips(testbed, http_server) -> None:
    v4, _ = client_addresses(IDENTITY)
    port = http_server.server_address[1]
    narrow = testbed.client_config(identity=IDENTITY).replace(
        f"AllowedIPs = {NET4}, {NET6}", f"AllowedIPs = {PEER4}/32, {PEER6}/128")
    with connect(narrow) as tunnel:
        tunnel.expose(8088, f"127.0.0.1:{port}")
        result = _curl(testbed, "reference", f"http://{v4}:8088/", "--max-time", "3")
        assert result.returncode != 0
        drops = tunnel.stats()["device_drops"]
        assert sum(drops.values()) > 0, drops
        assert _curl(testbed, "peer", f"http://{v4}:8088/").returncode == 0  # the peer itself is inside them
    assert len(http_server.requests) == 1
    with connect(testbed.client_config(identity=IDENTITY)) as tunnel:
        exposed = tunnel.expose(8088, f"127.0.0.1:{port}", allow=[f"{PEER4}/32"])
        result = _curl(testbed, "reference", f"http://{v4}:8088/")
        assert result.returncode == 7, (result.returncode, result.stderr)  # refused: a reset
        assert exposed.describe()["refused"] == 1
        assert tunnel.stats()["counters"]["expose_refused_not_allowed"] == 1
        exposed.close()
        # without the narrower rule the reference client gets through: the path itself works
        tunnel.expose(8088, f"127.0.0.1:{port}")
        result = _curl(testbed, "reference", f"http://{v4}:8088/")
        assert result.returncode == 0, result.stderr
        assert http_server.requests[-1][0] == "127.0.0.1"
    assert len(http_server.requests) == 2
    assert REF4 not in {host for host, _ in http_server.requests}  # the local side sees a local connection


def test_wg_expose_magic(testbed, http_server, capsys):
    v4, _ = client_addresses(IDENTITY)
    with magic_shell(testbed, IDENTITY, name="exposing") as sh:
        port = http_server.server_address[1]
        result = sh.run_cell(f"%wg expose 8089=127.0.0.1:{port}")
        assert result.success, result.error_in_exec
        assert f"{v4}:8089" in capsys.readouterr().out
        curl = _curl(testbed, "peer", f"http://{v4}:8089/")
        assert curl.returncode == 0 and curl.stdout.encode() == BODY
        status = sh.run_cell("%wg status exposing").result
        assert ":8089 -> 127.0.0.1" in repr(status) + status._repr_html_()
        assert sh.run_cell("%wg expose --close 8089").success
        assert _curl(testbed, "peer", f"http://{v4}:8089/").returncode == 7
        bad = sh.run_cell("%wg expose 8089")
        assert not bad.success


def test_wgmagic_up_dash_r(testbed, http_server, tmp_path):
    import signal
    import subprocess
    import sys

    config = tmp_path / "client.conf"
    config.write_text(testbed.client_config(identity=IDENTITY))
    port = http_server.server_address[1]
    process = subprocess.Popen([sys.executable, "-m", "wgmagic.cli", "up", str(config), "-q",
                                "-R", f"8090:127.0.0.1:{port}"], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(2)]
        assert any("tunnel up" in line for line in lines), lines
        v4, _ = client_addresses(IDENTITY)
        assert any(f"{v4}:8090" in line for line in lines), lines
        result = _curl(testbed, "peer", f"http://{v4}:8090/")
        assert result.returncode == 0 and result.stdout.encode() == BODY, result.stderr
    finally:
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=15)
    assert process.returncode == 0 and "tunnel closed" in out


@pytest.mark.parametrize(("spec", "expected"), [
    ("8080:127.0.0.1:8000", "8080=127.0.0.1:8000"),
    ("198.18.0.2:8080:localhost:8000", "198.18.0.2:8080=localhost:8000"),
    ("8080=127.0.0.1:8000", "8080=127.0.0.1:8000"),
])
def test_dash_r_syntax(spec, expected):
    from wgmagic.cli.common import parse_remote_spec

    assert parse_remote_spec(spec) == expected
