"""Typed stack events: one base class, one home (events.py), and events on time:
what a received segment raises comes out of the very next `Stack.events()`, before any `packets_to_send`."""

from __future__ import annotations

import ipaddress
import random

from wgmagic.netstack import events
from wgmagic.netstack.events import NetstackEvent, TcpAccepted, TcpConnected, TcpEvent, TcpReadable, TcpWritable
from wgmagic.netstack.stack import Stack
from wgmagic.netstack.tcp import connection
from wgmagic.netstack.wire import tcp as wire
from wgmagic.netstack.wire.ip import PROTO_TCP, IPv4Builder, parse
from wgmagic.netstack.wire.tcp import ACK, HEADER, PSH, SYN

ME = ipaddress.ip_interface("198.18.0.2/32")
PEER = ipaddress.ip_address("198.18.0.1")


def test_every_event_derives_from_the_base_and_keeps_its_name_and_home():
    for name in ("TcpConnected", "TcpReadable", "TcpWritable", "TcpClosed"):
        cls = getattr(connection, name)
        assert cls is getattr(events, name) and cls.__name__ == name and issubclass(cls, TcpEvent)
    for name in ("EchoReply", "IcmpUnreachable", "UdpReadable", "TcpAccepted"):
        cls = getattr(events, name)  # one home: events.py (no re-exports kept in stack.py)
        assert cls.__name__ == name and issubclass(cls, NetstackEvent)


def _tcp_from_peer(segment: bytes) -> bytes:
    return IPv4Builder().build(PEER.packed, ME.ip.packed, PROTO_TCP, segment)


def _segment(flags: int, seq: int, ack: int, payload: bytes = b"", options: bytes = b"", dport: int = 0) -> bytes:
    return wire.build_segment(PEER.packed, ME.ip.packed, 9000, dport, seq, ack, flags, 0xFFFF, options, payload)


def test_events_of_a_received_segment_come_out_in_the_same_round():
    st = Stack([ME], rng=random.Random(1).randbytes, verify_checksums=True)
    conn = st.tcp_connect(PEER, 9000, 0.0)
    (syn_packet,) = st.packets_to_send(0.0)
    _, _, _, _, syn, _ = parse(syn_packet, True)
    lport, _, iss, *_ = HEADER.unpack_from(syn)
    st.receive_packet(_tcp_from_peer(_segment(SYN | ACK, 500, iss + 1, dport=lport)), 0.1)
    got = st.events()  # no packets_to_send in between
    assert [type(e) for e in got] == [TcpConnected, TcpWritable] and all(e.conn is conn for e in got)
    st.packets_to_send(0.1)
    assert st.events() == []  # and not a second time
    st.receive_packet(_tcp_from_peer(_segment(ACK | PSH, 501, iss + 1, b"hello", dport=lport)), 0.2)
    (readable,) = st.events()
    assert isinstance(readable, TcpReadable) and conn.recv(10) == b"hello"


def test_accepted_then_connected_in_order():
    st = Stack([ME], rng=random.Random(1).randbytes, verify_checksums=True)
    listener = st.tcp_listen(80)
    syn = _segment(SYN, 700, 0, options=wire.build_options(mss=1300), dport=80)
    st.receive_packet(_tcp_from_peer(syn), 0.0)
    (accepted,) = st.events()
    assert isinstance(accepted, TcpAccepted) and accepted.listener is listener
    conn = listener.accept()
    st.packets_to_send(0.0)
    st.receive_packet(_tcp_from_peer(_segment(ACK, 701, conn.iss + 1, dport=80)), 0.01)
    assert [type(e) for e in st.events()] == [TcpConnected, TcpWritable]
