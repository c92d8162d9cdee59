"""EndpointFollower (runtime/endpoints.py): when a peer's Endpoint name gets new addresses, the tunnel moves."""

from __future__ import annotations

import asyncio
import ipaddress
from collections import Counter
from types import SimpleNamespace

import pytest

from wgmagic.runtime.endpoints import EndpointFollower, is_name
from wgmagic.runtime.peers import PeerRuntime
from wgmagic.wireguard import crypto
from wgmagic.wireguard.device import Device
from wgmagic.wireguard.endpoint import EndpointReason

NOW = 100.0


class Engine(SimpleNamespace):
    def now(self):
        return NOW


def _engine(endpoint=("127.0.0.1", 51820), name=("wg.example.test", 51820), session=True):
    """A real WireGuard device (sans-I/O) whose one peer sits at `endpoint`; with `session`, a handshake with
    a second device completed first (datagrams passed by hand)."""
    ours, theirs = crypto.generate_private_key(), crypto.generate_private_key()
    device = Device(ours)
    key = crypto.public_key(theirs)
    peer = device.add_peer(key, endpoint=endpoint, allowed_ips=[ipaddress.ip_network("198.18.0.0/24")])
    if session:
        other = Device(theirs)
        other.add_peer(crypto.public_key(ours), allowed_ips=[ipaddress.ip_network("198.18.1.0/24")])
        device.initiate_handshake(key, NOW)
        for _ in range(3):
            for data, _addr in device.datagrams_to_send():
                other.receive_datagram(data, ("127.0.0.9", 1), NOW)
            for data, _addr in other.datagrams_to_send():
                device.receive_datagram(data, endpoint, NOW)
        assert peer.has_session(NOW)
    device.events()
    runtime = PeerRuntime(key, name, endpoint)
    engine = Engine(peers={key: runtime}, device=device, counters=Counter(), closed=False,
                    pump=lambda now=None: None, loop=None)
    return engine, peer, runtime


def test_is_name():
    assert is_name("wg.example.test") and is_name("localhost")
    assert not is_name("127.0.0.1") and not is_name("fd00::1") and not is_name("[fd00::1]")


def test_a_new_address_moves_the_peer_and_an_unchanged_one_does_not():
    engine, peer, runtime = _engine()
    key = peer.public_key
    follower = EndpointFollower(engine, lambda h, p: [])
    follower.apply(key, [("127.0.0.1", 51820), ("127.0.0.3", 51820)])
    assert peer.endpoint == ("127.0.0.1", 51820) and engine.counters["endpoint_moved"] == 0
    assert peer.candidates.addresses == [("127.0.0.1", 51820), ("127.0.0.3", 51820)]
    follower.apply(key, [("127.0.0.2", 51820)])
    assert peer.endpoint == ("127.0.0.2", 51820) == runtime.resolved_endpoint
    assert engine.counters["endpoint_moved"] == 1
    assert engine.device.datagrams_to_send() == []  # a session stands: no handshake
    (event,) = engine.device.events()
    assert (event.endpoint, event.reason) == (("127.0.0.2", 51820), EndpointReason.SET)


def test_a_move_without_a_session_starts_a_handshake_at_the_new_address():
    engine, peer, _ = _engine(session=False)
    EndpointFollower(engine, lambda h, p: []).apply(peer.public_key, [("127.0.0.4", 51820)])
    sent = engine.device.datagrams_to_send()
    assert peer.endpoint == ("127.0.0.4", 51820) and [addr for _, addr in sent] == [("127.0.0.4", 51820)]
    assert sent[0][0][0] == 1  # a handshake initiation (whitepaper 5.4.2)


def test_a_roamed_peer_stays_where_it_roamed():
    engine, peer, _ = _engine(endpoint=("192.0.2.9", 40000))  # an authenticated packet came from there
    follower = EndpointFollower(engine, lambda h, p: [])
    follower.former[peer.public_key] = {("127.0.0.1", 51820)}  # what the name had: never 192.0.2.9
    follower.apply(peer.public_key, [("127.0.0.2", 51820)])
    assert peer.endpoint == ("192.0.2.9", 40000)
    assert peer.candidates.addresses == [("127.0.0.2", 51820)]


def test_address_literals_are_not_followed_and_bad_settings_raise():
    engine, _, _ = _engine(name=("127.0.0.1", 51820))
    assert EndpointFollower(engine, lambda h, p: []).names == {}
    with pytest.raises(ValueError):
        EndpointFollower(engine, lambda h, p: [], interval=0)


def test_lookups_run_in_an_executor_and_failures_keep_the_address():
    engine, peer, _ = _engine()
    KEY = peer.public_key
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
    KEY = peer.public_key
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
