"""The command line as a new user met it (2026-11-30 trial), against the real bed: listeners that cannot bind
name the option and the address, WGMAGIC_PRIVATE_KEY works for every command, a peer key of small order is a
config error with its own fix line, and tunnels are named after their file."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration

IDENTITY = 5  # one process at a time here, each closing its tunnel before the next


def _wgmagic(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wgmagic.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)


def _a_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def good(testbed, tmp_path):
    path = tmp_path / "good.conf"
    path.write_text(testbed.client_config(identity=IDENTITY))
    path.chmod(0o600)
    return path


@pytest.mark.parametrize("option, spec", [("-L", "{port}:db.internal:5432"), ("-D", "{port}"),
                                          ("-L", "udp:{port}:db.internal:53")])
def test_a_listener_that_cannot_bind_names_its_option_and_address(good, option, spec):
    spec = spec.format(port=_a_port())
    port = spec.split(":")[1] if spec.startswith("udp:") else spec.split(":")[0]
    done = _wgmagic("up", str(good), "-q", option, spec, option, spec)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith(f"wgmagic: {option} {spec}: cannot listen on 127.0.0.1:{port} for "), done.stderr
    assert "Address already in use" in done.stderr and "[Errno" not in done.stderr
    assert "Traceback" not in done.stderr


def test_an_expose_that_cannot_listen_names_its_option(good):
    spec = f"{_a_port()}:127.0.0.1:9"
    done = _wgmagic("up", str(good), "-q", "-R", spec, "-R", spec)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith(f"wgmagic: -R {spec}: cannot listen on TCP port {spec.split(':')[0]} of any "
                                  "tunnel address to expose 127.0.0.1:9"), done.stderr


def test_relay_and_gateway_listeners_that_cannot_bind_name_their_option(testbed, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        where = f"127.0.0.1:{taken.getsockname()[1]}"
        relay = _wgmagic("relay", "--listen", where, "--to", "127.0.0.1:9")
        assert relay.returncode == 2
        assert relay.stderr.startswith(f"wgmagic: --listen {where}: cannot listen on {where} for WebSocket "
                                       "clients: Address already in use"), relay.stderr
        server = tmp_path / "gateway.conf"
        server.write_text(f"[Interface]\nPrivateKey = {testbed.ref_private}\nAddress = 198.18.0.1/24\n"
                          f"ListenPort = 0\n\n[Peer]\nPublicKey = {testbed.client_public}\n"
                          "AllowedIPs = 198.18.0.2/32\n")
        gateway = _wgmagic("gateway", str(server), "-q", "--expose", "5432=127.0.0.1:9", "--websocket", where)
        assert gateway.returncode == 2
        assert gateway.stderr.startswith(f"wgmagic: --websocket {where}: cannot listen on {where} for WebSocket "
                                         "clients"), gateway.stderr


def test_private_key_from_the_environment_for_every_command(testbed, tmp_path):
    path = tmp_path / "nopriv.conf"
    path.write_text(re.sub(r"PrivateKey = \S+\n", "", testbed.client_config(identity=IDENTITY)))
    private = testbed.clients[IDENTITY][0]
    without = _wgmagic("status", str(path))
    assert without.returncode == 2 and "PrivateKey: is missing" in without.stderr
    assert "WGMAGIC_PRIVATE_KEY" in without.stderr
    for command in (["status", str(path)], ["ping", str(path), "198.18.0.1", "-c", "1"]):
        done = _wgmagic(*command, env={"WGMAGIC_PRIVATE_KEY": private})
        assert done.returncode == 0, done.stderr
        assert private not in done.stdout + done.stderr
    doctor = _wgmagic("doctor", str(path), env={"WGMAGIC_PRIVATE_KEY": private})
    assert "✔ config" in doctor.stdout and "✔ handshake" in doctor.stdout, doctor.stdout


def test_doctor_on_a_small_order_peer_key(testbed, tmp_path):
    path = tmp_path / "wrongkey.conf"
    path.write_text(testbed.client_config(identity=IDENTITY).replace(testbed.peer_public, "A" * 43 + "="))
    done = _wgmagic("doctor", str(path))
    assert done.returncode == 1
    assert "✘ config" in done.stdout and "is not a usable Curve25519 key" in done.stdout
    assert "fix: copy the peer's real public key" in done.stdout
    assert "never retrieved" not in done.stderr and "Error computing shared key" not in done.stdout + done.stderr


def test_connect_names_the_tunnel_after_its_file(good):
    from wgmagic.runtime.tunnel import connect

    with connect(str(good)) as tunnel:
        assert tunnel.name == "good"
