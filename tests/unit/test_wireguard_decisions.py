"""The device's own decisions about the way to a peer (wgmagic/wireguard/endpoint.py) and whether it answers
(wgmagic/wireguard/liveness.py): a fake clock, exact datagrams and events at each step."""

from __future__ import annotations

import ipaddress

from wgmagic.wireguard import crypto
from wgmagic.wireguard.device import Device
from wgmagic.wireguard.endpoint import EndpointCandidates, EndpointReason
from wgmagic.wireguard.events import HandshakeAttemptsExhausted, PeerEndpointChanged
from wgmagic.wireguard.messages import INITIATION
from wgmagic.wireguard.timers import Timers

TIMERS = Timers(rekey_timeout_jitter=0.0)
A, B, C = ("192.0.2.1", 51820), ("192.0.2.2", 51820), ("192.0.2.3", 51820)
T0 = 50.0


def device(candidates, timers=TIMERS):
    dev = Device(crypto.generate_private_key(), timers=timers)
    key = crypto.public_key(crypto.generate_private_key())
    dev.add_peer(key, endpoint=candidates[0], candidates=candidates,
                 allowed_ips=[ipaddress.ip_network("198.18.0.0/24")])
    return dev, key


def sent_to(dev):
    return [(data[0], addr) for data, addr in dev.datagrams_to_send()]


def test_candidates_rules():
    c = EndpointCandidates([A, B, C])
    assert c.current == A
    assert c.next_on_timeout(A) == B and c.index == 1
    assert c.next_on_timeout(("203.0.113.9", 1)) is None  # roamed off the list: stays
    assert c.next_on_refused(B) == C and c.quick_moves == 1 and not c.refused
    assert c.next_on_refused(C) == A and c.quick_moves == 2
    assert c.next_on_refused(A) is None and c.refused  # every address refused in a row: no storm
    assert c.next_on_timeout(A) == B and c.quick_moves == 0  # the timed rule resets the count
    assert EndpointCandidates([A]).next_on_timeout(A) is None
    assert c.replace([C, A], A) and c.current == A
    assert not c.replace([B], A) and c.current == B


def test_an_unanswered_initiation_is_retried_at_the_next_address():
    dev, key = device([A, B])
    dev.initiate_handshake(key, T0)
    assert sent_to(dev) == [(INITIATION, A)]
    dev.handle_timers(T0 + TIMERS.rekey_timeout)
    assert sent_to(dev) == [(INITIATION, B)]
    assert dev.events() == [PeerEndpointChanged(key, B, EndpointReason.NEXT_ADDRESS)]
    dev.handle_timers(T0 + 2 * TIMERS.rekey_timeout)
    assert sent_to(dev) == [(INITIATION, A)]  # round the list


def test_port_unreachable_moves_on_at_once_but_once_per_address():
    dev, key = device([A, B, C])
    dev.initiate_handshake(key, T0)
    sent_to(dev)
    dev.endpoint_refused(T0 + 0.01)
    assert sent_to(dev) == [(INITIATION, B)]  # resent now, not after REKEY_TIMEOUT
    dev.endpoint_refused(T0 + 0.02)
    assert sent_to(dev) == [(INITIATION, C)]
    dev.endpoint_refused(T0 + 0.03)
    assert sent_to(dev) == [] and dev.peer(key).candidates.refused  # the timed retransmission decides now
    assert [e.endpoint for e in dev.events()] == [B, C]


def test_a_single_address_is_only_marked_refused():
    dev, key = device([A])
    dev.initiate_handshake(key, T0)
    sent_to(dev)
    dev.endpoint_refused(T0 + 0.01)
    assert sent_to(dev) == [] and dev.peer(key).candidates.refused and dev.events() == []


def test_set_endpoint_moves_and_starts_a_handshake_without_a_session():
    dev, key = device([A, B])
    dev.set_endpoint(key, B, T0)
    assert sent_to(dev) == [(INITIATION, B)]
    assert dev.events() == [PeerEndpointChanged(key, B, EndpointReason.SET)]
    assert dev.peer(key).candidates.current == B
    assert dev.set_endpoint_addresses(key, [C, B]) and dev.peer(key).candidates.index == 1


def test_liveness_after_handshake_retries_give_up():
    timers = Timers(rekey_attempt_time=10.0, rekey_timeout_jitter=0.0)
    dev, key = device([A], timers)
    dev.initiate_handshake(key, T0)
    assert dev.not_answering_since(key, T0) is None  # an unanswered initiation alone is not a verdict
    for step in (1, 2, 3):
        dev.handle_timers(T0 + step * timers.rekey_timeout)
    (event,) = dev.events()
    assert event == HandshakeAttemptsExhausted(key, 3)
    gave_up = T0 + 3 * timers.rekey_timeout
    assert dev.peer(key).gave_up_at == gave_up and dev.not_answering_since(key, gave_up) == gave_up
