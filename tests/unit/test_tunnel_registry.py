"""One key, one peer, one tunnel per process: a second one would take the first one's replies at the peer.

No peer is needed: a Tunnel starts its engine without waiting for a handshake, and the endpoint is a loopback
port nobody answers on.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.testbed.bed import keypair
from wgmagic.errors import TunnelConflictError
from wgmagic.runtime.tunnel import Tunnel, find_twin


def _config(private: str, peer_public: str, port: int) -> str:
    return (f"[Interface]\nPrivateKey = {private}\nAddress = 198.18.9.2/32\n\n"
            f"[Peer]\nPublicKey = {peer_public}\nEndpoint = 127.0.0.1:{port}\nAllowedIPs = 198.18.9.0/24\n")


@pytest.fixture
def silent_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def test_second_tunnel_with_same_key_and_peer_is_refused(silent_port):
    from wgmagic.config import load_config

    ours, _ = keypair()
    _, peer = keypair()
    config = _config(ours, peer, silent_port)
    with Tunnel(load_config(config), name="first") as first:
        with pytest.raises(TunnelConflictError) as caught:
            Tunnel(load_config(config), name="second")
        assert "'first'" in str(caught.value) and ours not in str(caught.value)
        assert find_twin(load_config(config)) is first
        other_key, _ = keypair()
        with pytest.raises(TunnelConflictError, match="named 'first'"):
            Tunnel(load_config(_config(other_key, peer, silent_port)), name="first")
        with Tunnel(load_config(_config(other_key, peer, silent_port)), name="third") as third:
            assert not third.closed
    assert find_twin(load_config(config)) is None
    with Tunnel(load_config(config), name="again"):  # closing the first frees the key
        pass


def test_another_process_holding_the_key_is_named(silent_port, tmp_path):
    from wgmagic.config import load_config

    ours, _ = keypair()
    _, peer = keypair()
    config = _config(ours, peer, silent_port)
    path = tmp_path / "wg.conf"
    path.write_text(config)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, wgmagic.runtime.tunnel as t, wgmagic.config as c\n"
         f"tun = t.Tunnel(c.load_config({str(path)!r}))\nprint('up', flush=True)\nsys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2])
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "up"
        with pytest.raises(TunnelConflictError) as caught:
            Tunnel(load_config(config), name="here")
        assert f"process {holder.pid}" in str(caught.value) and ours not in str(caught.value)
    finally:
        holder.communicate("", timeout=10)
    with Tunnel(load_config(config), name="after"):  # the holder exited: its lock went with it
        pass


def test_a_lock_directory_open_to_others_is_not_used(silent_port, tmp_path, monkeypatch):
    from wgmagic.config import load_config
    from wgmagic.runtime.keylock import KeyLock

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    planted = tmp_path / "wgmagic"
    planted.mkdir(mode=0o777)
    planted.chmod(0o777)  # as if another user had made it first in a shared /tmp
    ours, _ = keypair()
    _, peer = keypair()
    assert KeyLock.claim(load_config(_config(ours, peer, silent_port))).held == []
    assert list(planted.iterdir()) == []
