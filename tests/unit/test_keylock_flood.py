"""keylock's flood guard: a tunnel opened on a key right after one of ours closed waits FLOOD_GUARD after that
tunnel's last handshake before it initiates (WireGuard peers drop an initiation within 20 ms of the last)."""

from __future__ import annotations

import pytest

from wgmagic.runtime import keylock
from wgmagic.runtime.keylock import FLOOD_GUARD, KeyLock


def test_the_wait_is_the_rest_of_the_guard_after_the_last_handshake(monkeypatch):
    monkeypatch.setattr(keylock, "_LAST_HANDSHAKE", {})
    first, second, other = KeyLock(names=["a", "b"]), KeyLock(names=["b"]), KeyLock(names=["c"])
    assert first.initiation_wait(100.0) == 0.0  # nothing closed yet
    first.handshaken(None)  # a tunnel that never had a session leaves nothing
    assert second.initiation_wait(100.0) == 0.0
    first.handshaken(100.0)
    assert second.initiation_wait(100.0) == pytest.approx(FLOOD_GUARD)
    assert second.initiation_wait(100.0 + FLOOD_GUARD / 2) == pytest.approx(FLOOD_GUARD / 2)
    assert second.initiation_wait(100.0 + FLOOD_GUARD) == 0.0
    assert other.initiation_wait(100.0) == 0.0  # another key pair: no wait
    first.handshaken(99.0)  # an older handshake never moves the time back
    assert second.initiation_wait(100.0) == pytest.approx(FLOOD_GUARD)
    assert second.initiation_wait(50.0) == FLOOD_GUARD  # a clock read before the handshake: at most the guard
