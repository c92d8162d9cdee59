"""The tunnel's cross-process key lock files (wgmagic/runtime/keylock.py `KeyLock.claim`) go through
wgmagic.files.open_private (issue 21, item 2): 0600 whatever mode an older one had, never opened through a
symlink, and the lock still works (same inode kept)."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from tests.testbed.bed import keypair
from wgmagic.config import load_config
from wgmagic.runtime import keylock
from wgmagic.wireguard.crypto import public_key


@pytest.fixture
def config(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    ours, _ = keypair()
    _, peer = keypair()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield load_config(f"[Interface]\nPrivateKey = {ours}\nAddress = 198.18.9.2/32\n\n[Peer]\nPublicKey = "
                          f"{peer}\nEndpoint = 127.0.0.1:{sock.getsockname()[1]}\nAllowedIPs = 198.18.9.0/24\n")


def _lock_path(tmp_path, config):
    directory = Path(keylock.runtime_dir())
    assert directory.is_relative_to(tmp_path)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    return directory / keylock.lock_name(public_key(config.interface.private_key), config.peers[0].public_key)


def test_an_older_lock_file_with_a_loose_mode_is_made_0600_and_still_locks(tmp_path, config):
    lock = _lock_path(tmp_path, config)
    lock.write_text("1")
    lock.chmod(0o644)
    claimed = keylock.KeyLock.claim(config)
    try:
        assert len(claimed.held) == 1 and os.fstat(claimed.held[0][1]).st_ino == lock.stat().st_ino
        assert stat.S_IMODE(lock.stat().st_mode) == 0o600
        assert lock.read_text() == str(os.getpid())
    finally:
        claimed.release()


def test_a_symlink_where_the_lock_file_goes_is_not_followed(tmp_path, config):
    victim = tmp_path / "victim"
    victim.write_text("keep")
    victim.chmod(0o644)
    _lock_path(tmp_path, config).symlink_to(victim)
    claimed = keylock.KeyLock.claim(config)
    held = list(claimed.held)
    claimed.release()
    assert held == [] and victim.read_text() == "keep" and stat.S_IMODE(victim.stat().st_mode) == 0o644
