"""The relay's pacing toward the WireGuard server (issue 13): bursts from a client's TCP leave in bounded
bursts at a bounded rate, in order, nothing lost or invented; runs of equal-sized datagrams leave in one
segmented send. Bytes in, bytes out, a fake clock."""

from __future__ import annotations

import errno
import os
import socket
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wgmagic.runtime.services.wsrelay import UP_BURST, UP_QUEUE_HIGH, UpstreamPacer, send_connected


def _datagrams(n: int, size: int = 1420) -> list[bytes]:
    return [i.to_bytes(4, "big") * (size // 4) for i in range(n)]


def test_a_flow_below_the_rate_is_not_delayed():
    pacer = UpstreamPacer(rate=1000.0, burst=8)
    now = 100.0
    for data in _datagrams(50):
        assert pacer.push(data, now)
        assert pacer.ready(now) == [data]
        assert pacer.next_at(now) is None
        now += 0.002  # 500 per second: below the rate


def test_a_burst_leaves_in_bounded_bursts_at_the_rate_in_order():
    pacer = UpstreamPacer(rate=1000.0, burst=8)
    sent_in = _datagrams(40)
    for data in sent_in:
        assert pacer.push(data, 0.0)
    assert pacer.queued_bytes == sum(map(len, sent_in))
    out = pacer.ready(0.0)
    assert out == sent_in[:8]
    assert pacer.ready(0.0) == []  # no token left
    when = pacer.next_at(0.0)
    assert when == pytest.approx(0.002)  # a batch of burst // 4 = 2 tokens at 1000 per second
    assert pacer.ready(when) == sent_in[8:10]
    # Much later the bucket is full again, but holds no more than `burst`.
    out += sent_in[8:10]
    later = pacer.ready(10.0)
    assert later == sent_in[10:18]
    out += later
    now = 10.0
    while (when := pacer.next_at(now)) is not None:
        now = when
        out += pacer.ready(now)
    assert out == sent_in and pacer.queued_bytes == 0 and not pacer.queue
    assert now == pytest.approx(10.0 + 22 / 1000.0)  # the 22 left after the burst, at the rate


def test_the_queue_is_bounded_in_bytes():
    pacer = UpstreamPacer(rate=1000.0, burst=1, limit=3000)
    a, b, c = _datagrams(3)
    assert pacer.push(a, 0.0) and pacer.push(b, 0.0)
    assert not pacer.push(c, 0.0)  # 4,260 > 3,000: refused, nothing queued
    assert pacer.queued_bytes == len(a) + len(b)
    pacer.clear()
    assert pacer.queued_bytes == 0 and pacer.next_at(0.0) is None


def test_the_defaults_keep_a_burst_well_inside_a_small_server_socket():
    # wireguard-go before 2023: Linux's default 208 KiB receive buffer holds 92 datagrams of 1,420 bytes.
    assert UP_BURST <= 92 // 2
    assert UP_QUEUE_HIGH >= 64 * 1024  # room for one read of the client's TCP before reading pauses
    with pytest.raises(ValueError):
        UpstreamPacer(rate=0.0)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0.0, 0.01), st.integers(0, 60), st.booleans()), min_size=1, max_size=60),
       st.integers(1, 40), st.floats(100.0, 100_000.0))
def test_never_more_than_burst_plus_rate_times_elapsed_and_nothing_lost(steps, burst, rate):
    pacer = UpstreamPacer(rate=rate, burst=burst, limit=1 << 30)
    now, start = 5.0, 5.0
    pushed: list[bytes] = []
    out: list[bytes] = []
    serial = 0
    for advance, arrivals, call_ready in steps:
        now += advance
        for _ in range(arrivals):
            data = serial.to_bytes(4, "big") * (1 + serial % 5)
            serial += 1
            assert pacer.push(data, now)
            pushed.append(data)
        if call_ready:
            out += pacer.ready(now)
        assert len(out) <= burst + rate * (now - start) + 1e-6
        when = pacer.next_at(now)
        assert (when is None) == (not pacer.queue)
        assert when is None or when >= now
    while (when := pacer.next_at(now)) is not None:
        now = when
        out += pacer.ready(now)
    assert out == pushed  # in order, all of them
    assert pacer.queued_bytes == 0


pytestmark_linux = pytest.mark.skipif(not hasattr(socket, "SOL_UDP") or os.uname().sysname != "Linux",
                                      reason="UDP_SEGMENT is Linux's")


def _pair() -> tuple[socket.socket, socket.socket]:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    receiver.settimeout(2)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.connect(receiver.getsockname())
    return receiver, sender


@pytestmark_linux
def test_runs_leave_segmented_and_arrive_as_the_same_datagrams():
    receiver, sender = _pair()
    with receiver, sender:
        datagrams = [*_datagrams(100), b"short", b"x" * 2000, b"x" * 2000]
        counters: Counter[str] = Counter()
        assert send_connected(sender, datagrams, True, counters)
        got = [receiver.recv(4096) for _ in datagrams]
        assert got == datagrams
        assert counters["up_messages"] == len(datagrams) and counters["up_bytes"] == sum(map(len, datagrams))


class _NoOffload:
    """A connected socket on a route without segmentation offload: sendmsg with UDP_SEGMENT fails (EIO)."""

    def __init__(self, real: socket.socket) -> None:
        self.real = real
        self.sendmsg_calls = 0

    def sendmsg(self, *args: object) -> int:
        self.sendmsg_calls += 1
        raise OSError(errno.EIO, "Input/output error")

    def send(self, data: bytes) -> int:
        return self.real.send(data)


@pytestmark_linux
def test_without_offload_it_falls_back_to_one_send_each_and_stops_asking():
    receiver, sender = _pair()
    with receiver, sender:
        fake = _NoOffload(sender)
        datagrams = _datagrams(10)
        counters: Counter[str] = Counter()
        assert not send_connected(fake, datagrams, True, counters)  # type: ignore[arg-type]
        assert send_connected(fake, datagrams, False, counters) is False  # type: ignore[arg-type]
        assert fake.sendmsg_calls == 1
        assert [receiver.recv(4096) for _ in range(20)] == datagrams * 2
        assert counters["gso_unavailable"] == 1 and counters["up_messages"] == 20
