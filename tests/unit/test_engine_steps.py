"""The engine (wgmagic/runtime/engine.py) stepped by hand: a fake clock, an in-memory transport, and a real
WireGuard device as the peer; every datagram, deadline and outcome is checked at each step. Nothing runs the
asyncio loop: the engine's futures are created on it and settled by the steps."""

from __future__ import annotations

import errno
import ipaddress

import pytest

from tests.unit.memory_net import ENDPOINT, HERE, OURS, EngineBed, peer_device
from wgmagic.errors import HandshakeTimeoutError, PeerNotRespondingError, TunnelClosedError
from wgmagic.netstack.events import TcpClosed, TcpEvent
from wgmagic.runtime.transport import TransportState
from wgmagic.wireguard import crypto
from wgmagic.wireguard.messages import INITIATION, RESPONSE, TRANSPORT
from wgmagic.wireguard.timers import Timers

# Whitepaper constants but for the attempts (REKEY_ATTEMPT_TIME 10 s: 2 retries) and no jitter: exact deadlines.
TIMERS = Timers(rekey_attempt_time=10.0, rekey_timeout_jitter=0.0)
T0 = 1000.0


class Bed(EngineBed):
    def __init__(self) -> None:
        super().__init__(TIMERS, T0)
        self.peer = peer_device(TIMERS)

    def to_peer(self) -> list[int]:
        """Deliver what the engine sent to the peer device; the message types, in order."""
        kinds = []
        for data, addr in self.transport.take():
            assert addr == ENDPOINT
            kinds.append(data[0])
            self.peer.receive_datagram(data, HERE, self.now)
        return kinds

    def from_peer(self) -> list[int]:
        """Deliver what the peer device sent to the engine (one batch, one pump); the message types."""
        datagrams = [(data, ENDPOINT) for data, _ in self.peer.datagrams_to_send()]
        self.engine.receive_datagrams(datagrams, self.now)
        return [data[0] for data, _ in datagrams]

    def step_to(self, deadline: float) -> None:
        self.now = deadline
        self.engine.handle_timer(deadline)


@pytest.fixture
def bed():
    with Bed() as b:
        yield b


def test_a_handshake_step_by_step(bed):
    waiter = bed.engine.wait_handshake()
    assert not waiter.done() and bed.to_peer() == [INITIATION]
    assert bed.engine.next_deadline() == T0 + TIMERS.rekey_timeout  # the retransmission (jitter 0)
    bed.now = T0 + 0.025
    assert bed.from_peer() == [RESPONSE]
    assert waiter.done() and waiter.result() == pytest.approx(0.025)  # the handshake's round trip, seconds
    # The initiator speaks first under the new keys: a keepalive confirms them to the responder (5.4.7).
    assert bed.to_peer() == [TRANSPORT]
    assert bed.engine.counters["event_HandshakeCompleted"] == 1
    assert bed.engine.next_deadline() == pytest.approx(T0 + 0.025 + 3 * TIMERS.reject_after_time)  # zero keys
    already = bed.engine.wait_handshake()
    assert already.done() and already.result() == pytest.approx(0.025) and bed.transport.sent == []


def test_unanswered_initiations_are_retried_then_fail_the_waiter_with_why(bed):
    waiter = bed.engine.wait_handshake()
    assert [d[0] for d, _ in bed.transport.take()] == [INITIATION]
    for attempt in (1, 2):
        bed.step_to(T0 + attempt * TIMERS.rekey_timeout)
        assert [d[0] for d, _ in bed.transport.take()] == [INITIATION] and not waiter.done()
    bed.step_to(T0 + 3 * TIMERS.rekey_timeout)  # REKEY_ATTEMPT_TIME passed: give up (whitepaper 6.4)
    assert bed.transport.sent == [] and waiter.done()
    error = waiter.exception()
    assert isinstance(error, HandshakeTimeoutError) and "198.18.0.1:51820" in str(error)
    assert bed.engine.counters["event_HandshakeAttemptsExhausted"] == 1
    peer = next(iter(bed.engine.peers.values()))
    assert peer.attempts_exhausted == 1
    # The device decided the peer is not answering since it gave up; the engine only words it.
    key = peer.public_key
    assert bed.engine.device.not_answering_since(key, bed.now) == bed.now
    assert "is not answering" in bed.engine.peer_not_answering_reason(key, bed.now)


class Stream:
    def __init__(self, conn):
        self.conn = conn
        self.events: list[TcpEvent] = []
        self.failed: list[BaseException] = []

    def tcp_event(self, event):
        self.events.append(event)

    def forget_after_close(self):
        return True

    def loop_failed(self, error):
        self.failed.append(error)


def test_a_silent_peer_fails_its_connections_when_the_device_says_so(bed):
    bed.engine.wait_handshake()
    bed.to_peer()
    bed.from_peer()
    bed.to_peer()
    sent_at = bed.now = T0 + 1.0
    conn = bed.engine.stack.tcp_connect(ipaddress.ip_address("198.18.0.1"), 5432, bed.now, timeout=120.0)
    stream = Stream(conn)
    bed.engine.register_stream(conn, stream)
    bed.engine.pump_conn(conn)
    bed.engine.pump(bed.now)  # what pump_soon scheduled, stepped by hand
    assert [d[0] for d, _ in bed.transport.take()] == [TRANSPORT]  # the SYN, encrypted
    # From now on the peer is silent. Step from deadline to deadline, as the loop's timer would.
    while not stream.events and bed.now < sent_at + 60:
        bed.step_to(bed.engine.next_deadline())
        bed.transport.take()
    keepalive, rekey = TIMERS.keepalive_timeout, TIMERS.rekey_timeout
    # Data unanswered for KEEPALIVE_TIMEOUT + REKEY_TIMEOUT started a handshake (6.2), unanswered REKEY_TIMEOUT
    # later too: not answering since the data went out. The connections fail one REKEY_TIMEOUT before the TCP
    # user timeout (30 s) would have: at sent_at + 25 s.
    assert bed.now == pytest.approx(sent_at + 30.0 - rekey)
    assert bed.engine.device.not_answering_since(conn_peer_key(bed), bed.now) == pytest.approx(sent_at)
    assert bed.engine.device.peer(conn_peer_key(bed)).unanswered_at == pytest.approx(sent_at + keepalive + rekey)
    (closed,) = stream.events
    assert isinstance(closed, TcpClosed) and isinstance(closed.error, PeerNotRespondingError)
    assert closed.error.errno == errno.ETIMEDOUT and "not answering" in str(closed.error)
    assert bed.engine.counters["tcp_failed_peer_not_answering"] == 1
    assert bed.engine.streams == {}  # forgotten after TcpClosed
    # The peer answers again: the device clears its marks, the runtime forgets the verdict.
    bed.to_peer()
    bed.peer.send_keepalive(crypto.public_key(OURS), bed.now)
    bed.from_peer()
    assert bed.engine.device.not_answering_since(conn_peer_key(bed), bed.now) is None


def conn_peer_key(bed: Bed) -> bytes:
    return next(iter(bed.engine.peers))


def test_close_fails_waiters_and_streams_and_tells_the_close_handlers(bed):
    waiter = bed.engine.wait_handshake()
    assert [d[0] for d, _ in bed.transport.take()] == [INITIATION]
    conn = bed.engine.stack.tcp_connect(ipaddress.ip_address("198.18.0.1"), 5432, bed.now)
    stream = Stream(conn)
    bed.engine.register_stream(conn, stream)
    told: list[BaseException] = []
    bed.engine.close_handlers.append(told.append)
    bed.engine.close()
    bed.engine.close()  # idempotent
    assert isinstance(waiter.exception(), TunnelClosedError)
    assert [type(e) for e in stream.failed] == [TunnelClosedError] and [type(e) for e in told] == [TunnelClosedError]
    assert bed.transport.state is TransportState.CLOSED and bed.engine.streams == {}
    bed.engine.pump(bed.now + 1)  # a closed engine moves nothing: the SYN never leaves
    bed.engine.handle_timer(bed.now + 10)
    assert bed.transport.sent == []


def test_a_connection_opened_during_the_silence_gets_its_own_time(bed):
    """A connection opened while the peer is silent (a retry while the peer restarts) is not failed with the
    connections from before the silence: it gets its own `fail_connections_after` from its opening, as its
    TCP user timeout would, and so connects when the peer answers again within that time."""
    bed.engine.wait_handshake()
    bed.to_peer()
    bed.from_peer()
    bed.to_peer()
    sent_at = bed.now = T0 + 1.0
    old = Stream(bed.engine.stack.tcp_connect(ipaddress.ip_address("198.18.0.1"), 5432, bed.now, timeout=120.0))
    bed.engine.register_stream(old.conn, old)
    bed.engine.pump_conn(old.conn)
    bed.engine.pump(bed.now)
    bed.transport.take()
    young: Stream | None = None
    opened_at = sent_at + 22.0  # after the device's verdict (20 s), before the old connection fails (25 s)
    while not old.events:
        deadline = bed.engine.next_deadline()
        if young is None and deadline > opened_at:
            bed.now = opened_at
            young = Stream(bed.engine.stack.tcp_connect(ipaddress.ip_address("198.18.0.1"), 5433, bed.now,
                                                        timeout=120.0))
            bed.engine.register_stream(young.conn, young)
            bed.engine.pump_conn(young.conn)
            bed.engine.pump(bed.now)
            deadline = bed.engine.next_deadline()
        bed.step_to(deadline)
        bed.transport.take()
    assert young is not None and bed.now == pytest.approx(sent_at + 25.0)
    assert isinstance(old.events[0].error, PeerNotRespondingError) and young.events == []
    assert bed.engine.counters["tcp_failed_peer_not_answering"] == 1
    # Silent on: the young connection fails 25 s after its opening (not when the old one did).
    while not young.events:
        bed.step_to(bed.engine.next_deadline())
        bed.transport.take()
    assert bed.now >= opened_at + 25.0 - 1e-6
    (closed,) = young.events
    assert isinstance(closed, TcpClosed) and isinstance(closed.error, (PeerNotRespondingError, TimeoutError))
    assert bed.engine.counters["peer_not_answering"] == 1  # one silence, counted once
