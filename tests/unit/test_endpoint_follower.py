"""EndpointFollower (runtime/endpoints.py): when a peer's Endpoint name gets new addresses, the tunnel moves."""

from __future__ import annotations

import asyncio
from collections import Counter
from types import SimpleNamespace

import pytest

from wgmagic.runtime.endpoints import EndpointFollower, is_name
from wgmagic.runtime.engine import PeerRuntime

KEY = b"k" * 32


class FakeDevicePeer:
    def __init__(self, endpoint):
        self.endpoint = endpoint
        self.retransmit_at = None
        self.session = True
        self.initiated = 0

    def has_session(self, now):
        return self.session


def _engine(endpoint=("127.0.0.1", 51820), name=("wg.example.test", 51820)):
    peer = FakeDevicePeer(endpoint)
    runtime = PeerRuntime(KEY, name, endpoint, [endpoint])
    device = SimpleNamespace(peer=lambda key: peer,
                             initiate_handshake=lambda key, now: setattr(peer, "initiated", peer.initiated + 1))
    engine = SimpleNamespace(peers={KEY: runtime}, device=device, counters=Counter(), closed=False,
                             pump=lambda now=None: None, loop=None)
    return engine, peer, runtime


def test_is_name():
    assert is_name("wg.example.test") and is_name("localhost")
    assert not is_name("127.0.0.1") and not is_name("fd00::1") and not is_name("[fd00::1]")


def test_a_new_address_moves_the_peer_and_an_unchanged_one_does_not():
    engine, peer, runtime = _engine()
    follower = EndpointFollower(engine, lambda h, p: [])
    follower.apply(KEY, [("127.0.0.1", 51820), ("127.0.0.3", 51820)])
    assert peer.endpoint == ("127.0.0.1", 51820) and engine.counters["endpoint_moved"] == 0
    follower.apply(KEY, [("127.0.0.2", 51820)])
    assert peer.endpoint == ("127.0.0.2", 51820) == runtime.resolved_endpoint
    assert engine.counters["endpoint_moved"] == 1 and peer.initiated == 0  # a session stands: no handshake
    peer.session = False
    follower.apply(KEY, [("127.0.0.4", 51820)])
    assert peer.endpoint == ("127.0.0.4", 51820) and peer.initiated == 1


def test_a_roamed_peer_stays_where_it_roamed():
    engine, peer, runtime = _engine()
    peer.endpoint = ("192.0.2.9", 40000)  # an authenticated packet came from there
    EndpointFollower(engine, lambda h, p: []).apply(KEY, [("127.0.0.2", 51820)])
    assert peer.endpoint == ("192.0.2.9", 40000)
    assert runtime.endpoint_candidates == [("127.0.0.2", 51820)]


def test_address_literals_are_not_followed_and_bad_settings_raise():
    engine, _, _ = _engine(name=("127.0.0.1", 51820))
    assert EndpointFollower(engine, lambda h, p: []).names == {}
    with pytest.raises(ValueError):
        EndpointFollower(engine, lambda h, p: [], interval=0)


def test_lookups_run_in_an_executor_and_failures_keep_the_address():
    engine, peer, _ = _engine()
    loop = asyncio.new_event_loop()
    engine.loop = loop
    calls = []

    def resolve(host, port):
        calls.append((host, port))
        if len(calls) == 1:
            raise OSError("no such name")
        return [("127.0.0.2", port)]

    follower = EndpointFollower(engine, resolve, interval=1.0)
    try:
        for _ in range(2):
            follower.lookup(KEY)
            loop.run_until_complete(asyncio.sleep(0.05))
            while follower.pending:
                loop.run_until_complete(asyncio.sleep(0.05))
    finally:
        follower.close()
        loop.close()
    assert calls == [("wg.example.test", 51820)] * 2
    assert engine.counters["endpoint_reresolve_failed"] == 1 and engine.counters["endpoint_reresolved"] == 1
    assert peer.endpoint == ("127.0.0.2", 51820)


def test_late_packets_from_the_old_address_do_not_end_the_following():
    """After a move, the old path's last datagrams roam the peer back to the name's former address (WireGuard's
    roaming); that is not a roam elsewhere: each check puts it back, and later moves still happen."""
    engine, peer, _ = _engine()
    follower = EndpointFollower(engine, lambda h, p: [])
    follower.apply(KEY, [("127.0.0.2", 51820)])
    assert peer.endpoint == ("127.0.0.2", 51820) and engine.counters["endpoint_moved"] == 1
    peer.endpoint = ("127.0.0.1", 51820)  # a late authenticated packet through the old address
    follower._restore(KEY, 0.0)
    assert peer.endpoint == ("127.0.0.2", 51820) and engine.counters["endpoint_restored"] == 1
    follower.apply(KEY, [("127.0.0.2", 51820)])  # the next lookup agrees: nothing to do
    assert engine.counters["endpoint_moved"] == 1
    peer.endpoint = ("127.0.0.1", 51820)
    follower.apply(KEY, [("127.0.0.3", 51820)])  # a move after such a flip still happens
    assert peer.endpoint == ("127.0.0.3", 51820) and engine.counters["endpoint_moved"] == 2
    peer.endpoint = ("192.0.2.9", 40000)  # a real roam: an address the name never had
    follower._restore(KEY, 0.0)
    follower.apply(KEY, [("127.0.0.4", 51820)])
    assert peer.endpoint == ("192.0.2.9", 40000)
