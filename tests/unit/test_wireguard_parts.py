"""Cryptokey routing's table (whitepaper 2.1), typed device events, the constants behind Timers."""

from __future__ import annotations

import dataclasses
import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wgmagic.wireguard import constants, events, peer
from wgmagic.wireguard.allowedips import AllowedIPs
from wgmagic.wireguard.timers import Timers


def test_longest_prefix_wins_in_both_families():
    table: AllowedIPs[str] = AllowedIPs()
    table.insert(ipaddress.ip_network("0.0.0.0/0"), "default")
    table.insert(ipaddress.ip_network("10.0.0.0/8"), "wide")
    table.insert(ipaddress.ip_network("10.1.2.0/24"), "narrow")
    table.insert(ipaddress.ip_network("fd00::/8"), "v6")
    assert table.routes("10.1.2.3") == "narrow"
    assert table.routes(ipaddress.ip_address("10.9.9.9")) == "wide"
    assert table.routes(bytes([192, 0, 2, 1])) == "default"
    assert table.routes("fd12::1") == "v6" and table.routes("2001:db8::1") is None
    assert table.contains("fd00::1") and "2001:db8::1" not in table
    assert table.networks("wide") == [ipaddress.ip_network("10.0.0.0/8")]
    assert table.routes(b"\x01\x02\x03") is None  # neither 4 nor 16 bytes


def test_a_prefix_claimed_again_moves_and_removal_clears_the_cache():
    table: AllowedIPs[str] = AllowedIPs()
    net = ipaddress.ip_network("198.18.0.0/24")
    table.insert(net, "a")
    assert table.routes("198.18.0.1") == "a"
    table.insert(net, "b")  # as `wg set peer B allowed-ips` takes it from A
    assert table.routes("198.18.0.1") == "b" and len(table) == 1
    table.remove_peer("b")
    assert table.routes("198.18.0.1") is None and len(table) == 0


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 32)), max_size=12), st.integers(0, 2**32 - 1))
def test_routes_agree_with_a_linear_scan(prefixes, address):
    table: AllowedIPs[int] = AllowedIPs()
    owners: dict[ipaddress.IPv4Network, int] = {}
    for i, (value, length) in enumerate(prefixes):
        net = ipaddress.ip_network((value, length), strict=False)
        table.insert(net, i)
        owners[net] = i
    ip = ipaddress.IPv4Address(address)
    matches = [net for net in owners if ip in net]
    expected = owners[max(matches, key=lambda n: n.prefixlen)] if matches else None
    assert table.routes(ip) == expected


def test_device_events_are_typed_and_keep_their_names():
    for name in ("HandshakeCompleted", "HandshakeAttemptsExhausted", "PeerEndpointChanged"):
        cls = getattr(events, name)
        assert getattr(peer, name) is cls and cls.__name__ == name
        assert issubclass(cls, events.WireGuardEvent)
    event = events.HandshakeCompleted(b"k" * 32, 0.01, True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.rtt = 1.0  # type: ignore[misc]


def test_timers_default_to_the_whitepaper_constants():
    timers = Timers()
    assert timers.rekey_after_time == constants.REKEY_AFTER_TIME == 120.0
    assert timers.reject_after_time == constants.REJECT_AFTER_TIME == 180.0
    assert timers.rekey_attempt_time == 90.0 and timers.rekey_timeout == 5.0 and timers.keepalive_timeout == 10.0
    assert timers.reject_after_messages == 2**64 - 2**13 - 1 and timers.rekey_after_messages == 2**60
    assert timers.max_handshake_attempts == 18
