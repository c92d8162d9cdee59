"""wgmagic.runtime.udp_batch: recvmmsg gives what recvfrom gives (the bytes, the sender's address), many
datagrams per call, on real loopback sockets bound to ephemeral ports; the transport reads through it."""

from __future__ import annotations

import asyncio
import socket
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wgmagic.runtime import udp_batch
from wgmagic.runtime.transport import UdpTransport, normalize_address
from wgmagic.runtime.udp_batch import BatchReceiver, sockaddr_address

pytestmark = pytest.mark.skipif(not udp_batch.available(), reason="recvmmsg is Linux's")


def _pair(family: int, host: str) -> tuple[socket.socket, socket.socket]:
    receiver = socket.socket(family, socket.SOCK_DGRAM)
    receiver.bind((host, 0))
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    receiver.setblocking(False)
    sender = socket.socket(family, socket.SOCK_DGRAM)
    sender.bind((host, 0))
    return receiver, sender


@pytest.mark.parametrize(("family", "host"), [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
def test_batches_hold_every_datagram_and_its_sender(family, host):
    receiver, sender = _pair(family, host)
    other = socket.socket(family, socket.SOCK_DGRAM)
    other.bind((host, 0))
    try:
        sizes = [0, 1, 1420, 1452, 9000, 65000, 7, 100] * 12  # more than one batch of 64
        sent = []
        for k, size in enumerate(sizes):
            payload = bytes([k % 251]) * size
            source = other if k % 3 == 0 else sender
            source.sendto(payload, receiver.getsockname())
            sent.append((payload, source.getsockname()))
        batch = BatchReceiver(64)
        got = []
        while True:
            part = batch.receive(receiver.fileno())
            assert len(part) <= 64
            if not part:
                break
            got.extend(part)
        assert [data for data, _ in got] == [data for data, _ in sent]
        assert [sockaddr_address(name)[:2] for _, name in got] == [address[:2] for _, address in sent]
        # the same tuple recvfrom gives
        sender.sendto(b"x", receiver.getsockname())
        (_, name), = batch.receive(receiver.fileno())
        sender.sendto(b"x", receiver.getsockname())
        _, address = receiver.recvfrom(10)
        assert sockaddr_address(name) == address
    finally:
        for sock in (receiver, sender, other):
            sock.close()


def test_a_queued_icmp_error_is_raised_as_recvfrom_raises_it():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    closed.bind(("127.0.0.1", 0))
    nobody = closed.getsockname()
    closed.close()  # nothing listens there now: an ICMP port unreachable comes back
    try:
        sock.bind(("127.0.0.1", 0))
        sock.connect(nobody)  # a connected socket reports it without IP_RECVERR
        sock.setblocking(False)
        sock.send(b"ping")
        with pytest.raises(ConnectionRefusedError):
            for _ in range(1000):
                assert BatchReceiver(4).receive(sock.fileno()) == []
    finally:
        sock.close()


@given(st.binary(max_size=40))
def test_any_address_bytes_give_a_tuple_or_value_error(name):
    try:
        address = sockaddr_address(name)
    except ValueError:
        return
    assert isinstance(address[0], str) and 0 <= address[1] < 65536


def test_the_transport_reads_through_recvmmsg_as_through_recvfrom():
    loop = asyncio.new_event_loop()
    received: list[tuple[bytes, tuple[str, int]]] = []
    batches: list[float] = []
    counters: Counter[str] = Counter()
    transport = UdpTransport(loop, 0, lambda data, addr, now: received.append((data, addr)), batches.append,
                             lambda: None, counters)
    assert transport._batch is not None
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        transport.open()
        sender.bind(("127.0.0.1", 0))
        payloads = [bytes([k]) * (k * 10) for k in range(150)]
        for payload in payloads:
            sender.sendto(payload, ("127.0.0.1", transport.local_port))
        transport._on_readable()
        assert [data for data, _ in received] == payloads
        assert {addr for _, addr in received} == {normalize_address(sender.getsockname())}
        assert counters["udp_rx_datagrams"] == 150 and counters["udp_rx_bytes"] == sum(map(len, payloads))
        assert len(batches) == 1  # one pump for the whole batch
    finally:
        sender.close()
        transport.close()
        loop.close()
