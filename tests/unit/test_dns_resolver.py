"""The sans-I/O DNS resolver, step by step with bytes and a fake clock: the servers in turn, retries, the search
list, NXDOMAIN, TCP on truncation, the lifetime; and it never raises on arbitrary answer bytes."""

from __future__ import annotations

import ipaddress
import itertools

import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wgmagic.errors import DNSTimeoutError, NameNotFoundError
from wgmagic.netstack.dns import (
    MAX_TCP_MESSAGE,
    CloseTcp,
    OpenTcp,
    Resolver,
    SendTcp,
    SendUdp,
    frame_tcp,
)

S1, S2 = ipaddress.ip_address("198.18.0.53"), ipaddress.ip_address("fd00::53")


def counting_rng():
    counter = itertools.count(1)
    return lambda n: next(counter).to_bytes(n, "big")


def reply(query: bytes, *addresses: str, rcode: int = dns.rcode.NOERROR, truncated: bool = False) -> bytes:
    message = dns.message.from_wire(query)
    response = dns.message.make_response(message)
    response.set_rcode(rcode)
    question = message.question[0]
    matching = [a for a in addresses if ipaddress.ip_address(a).version == (4 if question.rdtype == 1 else 6)]
    if matching:
        response.answer.append(dns.rrset.from_text(question.name, 30, "IN", question.rdtype, *matching))
    if truncated:
        response.flags |= dns.flags.TC
        response.answer.clear()
    return response.to_wire()


def question(data: bytes) -> tuple[str, str]:
    message = dns.message.from_wire(data)
    q = message.question[0]
    return q.name.to_text(), dns.rdatatype.to_text(q.rdtype)


def make(name="db", servers=(S1,), search=("internal",), **kw) -> Resolver:
    return Resolver(name, servers, 100.0, search=search, rng=counting_rng(), **kw)


def test_a_then_aaaa_from_the_first_search_name():
    r = make()
    [send] = r.actions()
    assert isinstance(send, SendUdp) and send.server == S1 and question(send.data) == ("db.internal.", "A")
    assert r.next_timer() == 102.0
    r.receive_udp(reply(send.data, "198.18.0.1"), (S1, 53), 100.01)
    [send] = r.actions()
    assert question(send.data) == ("db.internal.", "AAAA")
    r.receive_udp(reply(send.data, "fd00::1"), (S1, 53), 100.02)
    assert r.done and r.error is None and r.actions() == [] and r.next_timer() is None
    assert [str(a) for a in r.addresses] == ["198.18.0.1", "fd00::1"]


def test_servers_in_turn_then_a_longer_second_round_then_timeout():
    r = make(servers=(S1, S2), search=(), name="db.internal", rdtypes=("A",))
    sent = []
    now = 100.0
    for expected_wait, server in ((2.0, S1), (2.0, S2), (4.0, S1), (4.0, S2)):
        [send] = r.actions()
        assert send.server == server and r.next_timer() == now + expected_wait
        sent.append(send)
        now += expected_wait
        r.handle_timer(now - 0.001)  # early: nothing
        assert r.actions() == []
        r.handle_timer(now)
    assert r.done and isinstance(r.error, DNSTimeoutError) and "did not answer" in str(r.error)


def test_wrong_source_wrong_id_and_garbage_are_counted_and_ignored():
    r = make(rdtypes=("A",), search=(), name="db.internal")
    [send] = r.actions()
    good = reply(send.data, "198.18.0.1")
    r.receive_udp(good, (S2, 53), 100.1)
    r.receive_udp(good, (S1, 5353), 100.1)
    r.receive_udp(b"\x00garbage", (S1, 53), 100.1)
    other = bytearray(good)
    other[0] ^= 0xFF  # another id
    r.receive_udp(bytes(other), (S1, 53), 100.1)
    assert not r.done and r.drops == {"unexpected_source": 2, "mismatched": 2}
    r.receive_udp(good, (S1, 53), 100.2)
    assert r.done and [str(a) for a in r.addresses] == ["198.18.0.1"]


def test_nxdomain_moves_to_the_next_name_and_ends_not_found():
    r = make(name="nope", search=("internal",))
    [send] = r.actions()
    assert question(send.data) == ("nope.internal.", "A")
    r.receive_udp(reply(send.data, rcode=dns.rcode.NXDOMAIN), (S1, 53), 100.1)
    [send] = r.actions()
    assert question(send.data) == ("nope.", "A")  # NXDOMAIN skips AAAA of that name
    r.receive_udp(reply(send.data, rcode=dns.rcode.NXDOMAIN), (S1, 53), 100.2)
    assert r.done and isinstance(r.error, NameNotFoundError) and not isinstance(r.error, DNSTimeoutError)


def test_truncated_answer_is_asked_again_over_tcp():
    r = make(rdtypes=("A",), search=(), name="big.internal")
    [send] = r.actions()
    r.receive_udp(reply(send.data, truncated=True), (S1, 53), 100.1)
    [open_] = r.actions()
    assert open_ == OpenTcp(1, S1) and r.next_timer() == pytest.approx(102.1)
    r.tcp_connected(1, 100.2)
    [write] = r.actions()
    assert isinstance(write, SendTcp) and write.stream == 1
    query = write.data[2:]
    whole = frame_tcp(reply(query, "198.18.0.1", "198.18.0.2"))
    r.receive_tcp(1, whole[:5], 100.3)  # any split
    assert not r.done
    r.receive_tcp(1, whole[5:], 100.3)
    assert r.actions() == [CloseTcp(1)]
    assert r.done and sorted(str(a) for a in r.addresses) == ["198.18.0.1", "198.18.0.2"] and r.tcp_fallbacks == 1


def test_tcp_failure_keeps_the_truncated_answer():
    r = make(rdtypes=("A",), search=(), name="big.internal")
    [send] = r.actions()
    r.receive_udp(reply(send.data, truncated=True), (S1, 53), 100.1)
    r.actions()
    r.tcp_closed(1, ConnectionRefusedError(), 100.2)
    assert r.actions() == [CloseTcp(1)]
    assert r.done and isinstance(r.error, NameNotFoundError)  # the truncated answer held no address


def test_lifetime_bounds_the_whole_resolution():
    r = make(lifetime=3.0)
    r.actions()
    assert r.next_timer() == 102.0
    r.handle_timer(102.0)  # first query timed out, retry
    assert r.next_timer() == 103.0  # the lifetime comes first
    r.handle_timer(103.0)
    assert r.done and isinstance(r.error, DNSTimeoutError)


def test_no_servers():
    r = make(servers=())
    assert r.done and isinstance(r.error, NameNotFoundError) and "no DNS" in str(r.error)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.binary(max_size=70000))
def test_never_raises_on_arbitrary_answer_bytes(udp, tcp):
    r = make(rdtypes=("A",), search=(), name="db.internal")
    [send] = r.actions()
    r.receive_udp(udp, (S1, 53), 100.1)
    # also through the TCP path, with a forged truncated answer of the right id first
    r2 = make(rdtypes=("A",), search=(), name="db.internal")
    [send] = r2.actions()
    r2.receive_udp(reply(send.data, truncated=True), (S1, 53), 100.1)
    r2.tcp_connected(1, 100.2)
    r2.receive_tcp(1, tcp, 100.3)
    r2.receive_tcp(1, tcp, 100.3)
    assert len(r2._tcp_buffer) <= MAX_TCP_MESSAGE
