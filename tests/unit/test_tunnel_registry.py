"""One key, one peer, one tunnel per process: a second one would take the first one's replies at the peer.

No peer is needed: a Tunnel starts its engine without waiting for a handshake, and the endpoint is a loopback
port nobody answers on.
"""

from __future__ import annotations

import os
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


# ---- holders: connecting again hands the running tunnel back ------------------------------------------------
def test_share_hands_back_the_running_tunnel_and_the_last_holder_closes_it(silent_port, tmp_path, monkeypatch):
    from wgmagic.config import load_config
    from wgmagic.runtime import registry

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    ours, _ = keypair()
    _, peer = keypair()
    config = _config(ours, peer, silent_port)
    assert registry.share(load_config(config)) is None  # nothing up: connect() starts a tunnel
    with Tunnel(load_config(config), name="held") as tunnel:
        assert tunnel.holders == 1
        with registry.share(load_config(config)) as again:  # what a second connect() gets
            assert again is tunnel and tunnel.holders == 2
        assert not tunnel.closed and tunnel.holders == 1  # the inner `with` let go, the outer holds it
        assert registry.share(load_config(config)) is tunnel
        tunnel.close()
        assert not tunnel.closed
    assert tunnel.closed and tunnel.holders == 0 and registry.find_twin(load_config(config)) is None
    assert tunnel not in registry.open_tunnels()


def test_force_closes_whoever_holds_it(silent_port, tmp_path, monkeypatch):
    from wgmagic.config import load_config
    from wgmagic.runtime import registry

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    ours, _ = keypair()
    _, peer = keypair()
    config = _config(ours, peer, silent_port)
    tunnel = Tunnel(load_config(config), name="forced")
    assert registry.share(load_config(config)) is tunnel
    tunnel.close(force=True)
    assert tunnel.closed and registry.holders(tunnel) == 0
    with pytest.raises(Exception, match=r"is closed: wgmagic.connect\(config\) \(or %wg connect\)"):
        tunnel.resolve("db.internal")


def test_the_same_key_with_another_config_is_refused_with_both_ways_out(silent_port, tmp_path, monkeypatch):
    from wgmagic.config import load_config
    from wgmagic.runtime import registry

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    ours, _ = keypair()
    _, peer = keypair()
    config = _config(ours, peer, silent_port)
    with Tunnel(load_config(config), name="mine"):
        with pytest.raises(TunnelConflictError) as caught:
            registry.share(load_config(config.replace("198.18.9.2/32", "198.18.9.3/32")))
        text = str(caught.value)
        assert "wgmagic.get_tunnel('mine').close()" in text and "%wg disconnect mine" in text and ours not in text
        with pytest.raises(TunnelConflictError) as caught:
            Tunnel(load_config(_config(keypair()[0], peer, silent_port)), name="mine")
        assert "wgmagic.get_tunnel('mine').close()" in str(caught.value) and "--name" in str(caught.value)


# ---- lock files: in the user's runtime dir, gone when nothing holds them -------------------------------------
def test_lock_files_are_removed_when_the_tunnel_closes(silent_port, tmp_path, monkeypatch):
    from wgmagic.config import load_config
    from wgmagic.runtime import keylock

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    directory = tmp_path / "wgmagic"
    ours, _ = keypair()
    _, peer = keypair()
    _, peer_b = keypair()
    config = _config(ours, peer, silent_port)
    with Tunnel(load_config(config), name="one"):
        assert keylock.runtime_dir() == str(directory)
        assert directory.stat().st_mode & 0o777 == 0o700
        with Tunnel(load_config(_config(ours, peer_b, silent_port).replace("198.18.9.", "198.18.8.")),
                    name="two"):
            assert len(list(directory.glob("*.lock"))) == 2
        assert len(list(directory.glob("*.lock"))) == 1  # the other tunnel's file stays, and so the directory
    assert not directory.exists()
    for _round in range(3):  # a key used again and again leaves nothing behind either
        with Tunnel(load_config(config)):
            pass
    assert not directory.exists()


def test_without_xdg_runtime_dir_the_lock_lives_in_the_temp_dir(monkeypatch, tmp_path):
    import sys
    import tempfile

    from wgmagic.runtime import keylock

    if not sys.platform.startswith("linux"):
        pytest.skip("the fallback applies where $XDG_RUNTIME_DIR is the platform's place")
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert keylock.runtime_dir() == str(tmp_path / f"wgmagic-{os.getuid()}")


def test_a_lock_file_removed_between_open_and_lock_is_not_trusted(tmp_path, monkeypatch):
    """unlink-after-flock: a holder that closes removes its file while still holding the lock; whoever opened
    the file just before then locks an inode that is no longer in the directory. The claim must notice (the
    path names another inode, or none) and start over on the file that is there."""
    import fcntl

    from wgmagic.runtime import keylock

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    name = keylock.lock_name(b"a" * 32, b"b" * 32)
    path = tmp_path / "wgmagic" / name
    real_flock = fcntl.flock
    calls: list[int] = []

    def flock_after_the_holder_left(fd: int, operation: int) -> None:
        calls.append(fd)
        if len(calls) == 1:  # the first lock: the previous holder unlinks its file just before we get it
            os.unlink(path)
        real_flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", flock_after_the_holder_left)
    held = keylock._lock_one(name, "peer")
    assert held is not None
    lock_path, fd = held
    try:
        assert len(calls) == 2  # the first lock was on a removed file: dropped, and the claim went round again
        assert lock_path == str(path) and os.fstat(fd).st_ino == path.stat().st_ino
        assert path.read_text() == str(os.getpid())
    finally:
        keylock.KeyLock([held]).release()
    assert not path.exists()


def test_leftover_lock_files_nobody_holds_are_swept_and_held_ones_kept(silent_port, tmp_path, monkeypatch):
    """A process killed outright cannot remove its lock file: the next claim in that directory does, and
    never one a live tunnel holds."""
    import fcntl

    from wgmagic.config import load_config
    from wgmagic.runtime import keylock

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    directory = tmp_path / "wgmagic"
    directory.mkdir(mode=0o700)
    stale = [directory / keylock.lock_name(bytes([n]) * 32, b"p" * 32) for n in range(5)]
    for path in stale:
        path.write_text("12345")
    held_path = directory / keylock.lock_name(b"h" * 32, b"p" * 32)
    held_fd = os.open(held_path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(held_fd, fcntl.LOCK_EX)  # a live tunnel's lock (another open file description: it conflicts)
    unrelated = directory / "notes.txt"
    unrelated.write_text("not a lock file")
    try:
        ours, _ = keypair()
        _, peer = keypair()
        with Tunnel(load_config(_config(ours, peer, silent_port)), name="sweeper"):
            assert not any(path.exists() for path in stale)
            assert held_path.exists() and unrelated.exists()
    finally:
        os.close(held_fd)
