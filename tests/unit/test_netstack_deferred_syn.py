"""A listener may hold a SYN unanswered until its owner knows the outcome (the gateway's slow local target):
step by step, with a fake clock, between two sans-I/O stacks."""

from __future__ import annotations

import ipaddress

from wgmagic.netstack.stack import Stack
from wgmagic.netstack.tcp.listener import DEFER
from wgmagic.netstack.wire.ip import PROTO_TCP, parse

CLIENT, SERVER = ipaddress.ip_interface("198.18.0.2/32"), ipaddress.ip_interface("198.18.0.1/32")
SYN, RST, ACK = 0x02, 0x04, 0x10


def tcp_flags(packets: list[bytes]) -> list[int]:
    flags = []
    for packet in packets:
        _, _, _, proto, payload, _ = parse(packet, True)
        assert proto == PROTO_TCP
        flags.append(payload[13])
    return flags


def setup(verdicts: list[object]):
    client, server = Stack([CLIENT]), Stack([SERVER], verify_checksums=True)
    listener = server.tcp_listen(80)
    asked: list[tuple] = []

    def admit(local, remote):
        asked.append((local, remote))
        return verdicts.pop(0)

    listener.admit = admit
    conn = client.tcp_connect(SERVER.ip, 80, 0.0, timeout=30)
    return client, server, listener, conn, asked


def test_deferred_syn_is_held_silent_then_answered_with_syn_ack():
    client, server, listener, conn, asked = setup([DEFER])
    (syn,) = client.packets_to_send(0.0)
    server.receive_packet(syn, 0.0)
    assert server.packets_to_send(0.0) == []  # held: neither SYN-ACK nor reset
    assert len(asked) == 1 and listener.held and not server.tcp
    # The client retransmits its SYN (RFC 6298: 1 s); the held one absorbs it, admit is not asked again.
    client.handle_timers(1.0)
    (again,) = client.packets_to_send(1.0)
    server.receive_packet(again, 1.0)
    assert server.packets_to_send(1.0) == [] and len(asked) == 1
    local, remote = asked[0]
    accepted = listener.settle(local, remote, True, 1.5)
    assert accepted is not None and accepted.state == "SYN_RECEIVED" and not listener.held
    assert listener.accept() is None  # handed to the caller, not queued
    answer = server.packets_to_send(1.5)
    assert tcp_flags(answer) == [SYN | ACK]
    client.receive_packet(answer[0], 1.5)
    client.packets_to_send(1.5)
    assert conn.state == "ESTABLISHED"
    assert listener.settle(local, remote, True, 2.0) is None  # nothing left to settle


def test_deferred_syn_refused_later_gets_a_reset_and_the_client_sees_refused():
    client, server, listener, conn, asked = setup([DEFER])
    (syn,) = client.packets_to_send(0.0)
    server.receive_packet(syn, 0.0)
    assert listener.settle(*asked[0], False, 0.5) is None
    answer = server.packets_to_send(0.5)
    assert tcp_flags(answer) == [RST | ACK]
    client.receive_packet(answer[0], 0.5)
    client.packets_to_send(0.5)
    assert isinstance(conn.error, ConnectionRefusedError)


def test_held_syns_count_against_the_backlog():
    server = Stack([SERVER])
    listener = server.tcp_listen(80, backlog=2)
    listener.admit = lambda local, remote: DEFER
    for i in range(3):
        client = Stack([ipaddress.ip_interface(f"198.18.0.{10 + i}/32")])
        client.tcp_connect(SERVER.ip, 80, 0.0)
        (syn,) = client.packets_to_send(0.0)
        server.receive_packet(syn, 0.0)
    assert len(listener.held) == 2 and server.drops["listen_backlog_full"] == 1


def test_a_closed_listener_resets_what_it_still_held():
    client, server, listener, _conn, asked = setup([DEFER])
    (syn,) = client.packets_to_send(0.0)
    server.receive_packet(syn, 0.0)
    listener.close()
    assert listener.settle(*asked[0], True, 0.1) is None
    assert tcp_flags(server.packets_to_send(0.1)) == [RST | ACK]
