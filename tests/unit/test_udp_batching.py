"""The engine's segmented UDP sends (GSO): runs of equal-sized datagrams leave in one system call and arrive
as the same separate datagrams; where the kernel refuses, it falls back to one call per datagram."""

from __future__ import annotations

import errno
import os
import socket
from collections import Counter

import pytest

from wgmagic.runtime.transport import GSO_MAX_SEGMENTS, UdpTransport, gso_run_end

pytestmark = pytest.mark.skipif(not hasattr(socket, "SOL_UDP") or os.uname().sysname != "Linux",
                                reason="UDP_SEGMENT is Linux's")


def _sender(sock: object) -> UdpTransport:
    transport = UdpTransport(None, 0, None, None, None, Counter())  # type: ignore[arg-type]
    transport.sock, transport.gso = sock, True  # type: ignore[assignment]
    return transport


def test_runs_stop_at_another_address_a_larger_or_a_shorter_datagram():
    a, b = ("127.0.0.1", 1), ("127.0.0.1", 2)
    datagrams = [(b"x" * 100, a)] * 3 + [(b"y" * 40, a), (b"z" * 100, a), (b"z" * 100, b), (b"w" * 200, b)]
    assert gso_run_end(datagrams, 0) == 4  # three full ones and the shorter one that ends the run
    assert gso_run_end(datagrams, 4) == 5  # the next one goes elsewhere
    assert gso_run_end(datagrams, 5) == 6  # the next one is larger
    many = [(b"q" * 1452, a)] * 100
    assert gso_run_end(many, 0) == GSO_MAX_SEGMENTS


def test_segmented_sends_arrive_as_the_same_datagrams():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        receiver.bind(("127.0.0.1", 0))
        receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        receiver.settimeout(2)
        target = receiver.getsockname()
        datagrams = [(bytes([i % 256]) * 1452, target) for i in range(100)] + [(b"tail", target)]
        fake = _sender(sender)
        fake.send(datagrams)
        got = [receiver.recv(2048) for _ in datagrams]
        assert got == [data for data, _ in datagrams]
        assert fake.gso and fake.counters["udp_tx_datagrams"] == len(datagrams)


class _NoOffload:
    """A socket on a route without segmentation offload: sendmsg with UDP_SEGMENT fails with EIO."""

    def __init__(self, real: socket.socket) -> None:
        self.real = real

    def sendmsg(self, *args: object) -> int:
        raise OSError(errno.EIO, "Input/output error")

    def sendto(self, data: bytes, target: object) -> int:
        return self.real.sendto(data, target)


def test_falls_back_to_one_call_per_datagram():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        receiver.bind(("127.0.0.1", 0))
        receiver.settimeout(2)
        target = receiver.getsockname()
        datagrams = [(b"%04d" % i * 100, target) for i in range(20)]
        fake = _sender(_NoOffload(sender))
        fake.send(datagrams)
        assert [receiver.recv(2048) for _ in datagrams] == [data for data, _ in datagrams]
        assert not fake.gso and fake.counters["gso_unavailable"] == 1
