"""Connecting again is not an error: a second `connect()` for a config already up in this process hands the
running tunnel back, and it closes when its last holder closes it (re-run cells, marimo re-runs, nested
`with` blocks). The tunnel's lock files are gone once it closes."""

from __future__ import annotations

import os

import psycopg
import pytest

import wgmagic
from wgmagic.errors import TunnelConflictError
from wgmagic.runtime import keylock

pytestmark = pytest.mark.integration
IDENTITY = 4  # a key no other tunnel of this module has up at the same time


def _query(tunnel: wgmagic.Tunnel, testbed) -> int:
    with psycopg.connect(tunnel.url(testbed.dsn()), connect_timeout=15) as conn:
        return int(conn.execute("select count(*) from measurements").fetchone()[0])


@pytest.fixture
def runtime_dir(tmp_path, monkeypatch):
    base = tmp_path / "run"
    base.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(base))
    return base / "wgmagic"


def test_connect_twice_returns_the_same_tunnel_and_one_close_keeps_it_up(testbed, runtime_dir):
    config = testbed.client_config(identity=IDENTITY)
    first = wgmagic.connect(config, timeout=15)
    try:
        again = wgmagic.connect(config, timeout=15)  # a re-run cell
        assert again is first and first.holders == 2
        again.close()
        assert not first.closed and first.holders == 1
        assert _query(first, testbed) == 100
        assert len(list(runtime_dir.glob("*.lock"))) == 1
    finally:
        first.close()
    assert first.closed and first.holders == 0
    assert not runtime_dir.exists() or not list(runtime_dir.iterdir())  # no lock file left behind
    with wgmagic.connect(config, timeout=15) as back:  # and a new one comes up on the same key
        assert back is not first and _query(back, testbed) == 100


def test_nested_with_blocks_share_one_tunnel(testbed, runtime_dir):
    config = testbed.client_config(identity=IDENTITY)
    with wgmagic.connect(config, timeout=15) as outer:
        with wgmagic.connect(config, timeout=15) as inner:
            assert inner is outer and _query(inner, testbed) == 100
        assert not outer.closed  # the inner block let go; the outer still holds it
        assert _query(outer, testbed) == 100
    assert outer.closed
    assert not runtime_dir.exists() or not list(runtime_dir.iterdir())


def test_another_config_on_the_same_key_names_both_ways_out(testbed, runtime_dir):
    config = testbed.client_config(identity=IDENTITY)
    other = config.replace("DNS = ", "DNS = 198.18.0.53, ")  # the same key and peer, another [Interface]
    with wgmagic.connect(config, name="shared", timeout=15) as tunnel:
        with pytest.raises(TunnelConflictError) as caught:
            wgmagic.connect(other, timeout=5)
        text = str(caught.value)
        assert "wgmagic.get_tunnel('shared').close()" in text and "%wg disconnect shared" in text
        assert testbed.clients[IDENTITY][0] not in text
        assert tunnel.holders == 1


def test_the_lock_lives_in_the_user_runtime_dir_and_is_private(testbed, runtime_dir):
    with wgmagic.connect(testbed.client_config(identity=IDENTITY), timeout=15):
        assert keylock.runtime_dir() == str(runtime_dir)
        assert os.stat(runtime_dir).st_mode & 0o777 == 0o700
        (lock,) = runtime_dir.glob("*.lock")
        assert lock.read_text() == str(os.getpid())
    assert not runtime_dir.exists()


def test_a_tunnel_closed_and_opened_again_at_once_needs_one_initiation(testbed, runtime_dir):
    """A WireGuard peer drops an initiation within 20 ms of the last one it took (its flood check), and the
    initiator then retries only after REKEY_TIMEOUT (5 s): connect, close and connect again at once used to
    take 5 s. The second tunnel waits out keylock.FLOOD_GUARD instead, and its first initiation is answered."""
    config = testbed.client_config(identity=IDENTITY)
    for _ in range(3):
        tunnel = wgmagic.connect(config, timeout=15)
        try:
            assert tunnel.stats()["totals"]["handshake_initiations_sent"] == 1
        finally:
            tunnel.close()
