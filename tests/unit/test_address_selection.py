"""Destination address selection for connections through the tunnel (RFC 6724 section 6, RFC 8305 section 4)."""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from wgmagic.runtime.addresses import (
    describe_no_route,
    interleave_families,
    policy,
    select_destinations,
)

A = ipaddress.ip_address
N = ipaddress.ip_network
I = ipaddress.ip_interface  # noqa: E741

V6_ONLY = {"sources": [I("fd77:6d61:6769:6300::2/128")], "allowed_ips": [N("fd77:6d61:6769:6300::/64")]}
DUAL = {"sources": [I("198.18.0.2/32"), I("fd77:6d61:6769:6300::2/128")],
        "allowed_ips": [N("198.18.0.0/24"), N("fd77:6d61:6769:6300::/64")]}


def test_an_ipv6_only_tunnel_uses_the_aaaa_answer_of_a_dual_stack_name():
    # The A record comes first from the resolver; the tunnel has neither an IPv4 route nor an IPv4 source.
    resolved = [A("198.18.0.1"), A("fd77:6d61:6769:6300::1")]
    assert select_destinations(resolved, **V6_ONLY) == [A("fd77:6d61:6769:6300::1")]


def test_no_usable_address_gives_an_empty_list_and_a_reason_per_address():
    resolved = [A("198.18.0.1"), A("fd00:1::1")]
    assert select_destinations(resolved, **V6_ONLY) == []
    message = describe_no_route("db.internal", resolved, **V6_ONLY)
    assert message.startswith("no route to db.internal")
    assert "198.18.0.1: the [Interface] has no IPv4 Address" in message
    assert "fd00:1::1: outside every peer's AllowedIPs" in message


def test_rfc6724_default_policy_prefers_ipv4_over_a_ula_on_a_dual_stack_tunnel():
    # fc00::/7 has precedence 3, IPv4 (::ffff:0:0/96) 35: rule 6. Families then alternate (RFC 8305).
    resolved = [A("fd77:6d61:6769:6300::1"), A("fd77:6d61:6769:6300::5"), A("198.18.0.1"), A("198.18.0.7")]
    assert select_destinations(resolved, **DUAL) == [
        A("198.18.0.1"), A("fd77:6d61:6769:6300::1"), A("198.18.0.7"), A("fd77:6d61:6769:6300::5")]


def test_rfc6724_global_ipv6_beats_ipv4():
    config = {"sources": [I("192.0.2.2/32"), I("2001:db8::2/128")],
              "allowed_ips": [N("0.0.0.0/0"), N("::/0")]}
    assert policy(A("2001:db8::1")) == (40, 1) and policy(A("192.0.2.1")) == (35, 4)
    assert select_destinations([A("192.0.2.1"), A("2001:db8::1")], **config) == [A("2001:db8::1"), A("192.0.2.1")]


def test_rule_9_longest_matching_prefix_within_a_family():
    config = {"sources": [I("2001:db8:1:2::2/128")], "allowed_ips": [N("::/0")]}
    resolved = [A("2001:db8:ffff::1"), A("2001:db8:1:2::1")]
    assert select_destinations(resolved, **config) == [A("2001:db8:1:2::1"), A("2001:db8:ffff::1")]


addresses_v4 = st.builds(ipaddress.IPv4Address, st.integers(0, 2**32 - 1))
addresses_v6 = st.builds(ipaddress.IPv6Address, st.integers(0, 2**128 - 1))
near_v4 = st.builds(lambda n: ipaddress.IPv4Address(int(A("198.18.0.0")) + n), st.integers(0, 511))
near_v6 = st.builds(lambda n: ipaddress.IPv6Address(int(A("fd77:6d61:6769:6300::")) + n), st.integers(0, 2**70))
any_address = st.one_of(addresses_v4, addresses_v6, near_v4, near_v6)
configs = st.sampled_from([V6_ONLY, DUAL, {"sources": [I("198.18.0.2/32")], "allowed_ips": [N("198.18.0.0/15")]},
                           {"sources": [I("10.0.0.2/24"), I("2001:db8::2/64")],
                            "allowed_ips": [N("0.0.0.0/0"), N("::/0")]}])


@given(st.lists(any_address, max_size=12), configs)
def test_selection_keeps_exactly_the_usable_addresses_once_each(resolved, config):
    chosen = select_destinations(resolved, **config)
    families = {s.version for s in config["sources"]}
    usable = {a for a in resolved
              if a.version in families and any(a.version == n.version and a in n for n in config["allowed_ips"])}
    assert len(chosen) == len(set(chosen))
    assert set(chosen) == usable
    if not chosen:
        assert describe_no_route("h", resolved, **config).startswith("no route to")


@given(st.lists(any_address, max_size=12), configs)
def test_families_alternate_while_both_remain(resolved, config):
    chosen = select_destinations(resolved, **config)
    v4 = sum(1 for a in chosen if a.version == 4)
    v6 = len(chosen) - v4
    alternating = 2 * min(v4, v6)
    for i in range(1, alternating):
        assert chosen[i].version != chosen[i - 1].version
    assert interleave_families(chosen) == chosen  # already interleaved: a fixed point


@given(st.lists(near_v6, max_size=8, unique=True))
def test_equal_addresses_keep_the_resolver_order_rule_10(resolved):
    # All in one /64 with the source: rules 2-9 tie (rule 9 is capped at 64 bits), so rule 10 keeps the order.
    assume_same_64 = [a for a in resolved if int(a) >> 64 == int(A("fd77:6d61:6769:6300::")) >> 64]
    assert select_destinations(assume_same_64, **V6_ONLY) == assume_same_64


def test_the_endpoint_name_keeps_the_system_resolver_order(monkeypatch):
    import socket

    from wgmagic.runtime import endpoint_lookup

    answers = [(socket.AF_INET6, socket.SOCK_DGRAM, 17, "", ("fd00::7%eth0", 51820, 0, 2)),
               (socket.AF_INET, socket.SOCK_DGRAM, 17, "", ("198.18.0.7", 51820)),
               (socket.AF_INET6, socket.SOCK_DGRAM, 17, "", ("fd00::7", 51820, 0, 0))]
    monkeypatch.setattr(endpoint_lookup.socket, "getaddrinfo", lambda *args, **kwargs: list(answers))
    # getaddrinfo already applied RFC 6724 and /etc/gai.conf: no family is moved ahead of the other.
    assert endpoint_lookup.resolve_endpoint("wg.example", 51820) == [("fd00::7", 51820), ("198.18.0.7", 51820)]
