"""An Endpoint that answers ICMP port unreachable (nothing listens on that UDP port): the device counts the
refusals per address (wgmagic/wireguard/endpoint.py) and the engine fails whoever waits for the first handshake
at once, once every address refused twice in a row (Engine.endpoint_refused). A fake clock, exact datagrams."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.unit.memory_net import ENDPOINT, HERE, OURS, EngineBed, RecordingTransport, peer_device
from wgmagic.errors import HandshakeTimeoutError, PortUnreachableError
from wgmagic.runtime.engine import Engine
from wgmagic.wireguard import crypto
from wgmagic.wireguard.device import Device
from wgmagic.wireguard.endpoint import REFUSALS_IN_A_ROW, EndpointCandidates
from wgmagic.wireguard.messages import INITIATION, RESPONSE, TRANSPORT
from wgmagic.wireguard.timers import Timers

TIMERS = Timers(rekey_timeout_jitter=0.0)  # REKEY_TIMEOUT 5 s, no jitter: exact deadlines
A, B = ("192.0.2.1", 51820), ("192.0.2.2", 51820)
T0 = 50.0
NET = [ipaddress.ip_network("198.18.0.0/24")]


def pair(candidates):
    """Our device with one peer at `candidates`, and that peer's own device (which knows us)."""
    ours, theirs = crypto.generate_private_key(), crypto.generate_private_key()
    dev = Device(ours, timers=TIMERS)
    key = crypto.public_key(theirs)
    dev.add_peer(key, endpoint=candidates[0], candidates=candidates, allowed_ips=NET)
    other = Device(theirs, timers=TIMERS)
    other.add_peer(crypto.public_key(ours), allowed_ips=[ipaddress.ip_network("198.18.0.2/32")])
    return dev, key, other


def sent(dev):
    return [(data[0], addr) for data, addr in dev.datagrams_to_send()]


def test_one_address_refused_twice_in_a_row_is_refused_everywhere():
    dev, key, _ = pair([A])
    candidates = dev.peer(key).candidates
    dev.initiate_handshake(key, T0)
    assert sent(dev) == [(INITIATION, A)]
    dev.endpoint_refused(T0 + 0.001)  # the first refusal: maybe a stray ICMP message
    assert sent(dev) == [] and candidates.refusals == {A: 1} and not candidates.refused_everywhere()
    dev.handle_timers(T0 + TIMERS.rekey_timeout)  # the retransmission, REKEY_TIMEOUT later (whitepaper 6.4)
    assert sent(dev) == [(INITIATION, A)]
    dev.endpoint_refused(T0 + TIMERS.rekey_timeout + 0.001)
    assert candidates.refusals == {A: REFUSALS_IN_A_ROW} and candidates.refused_everywhere()
    dev.handle_timers(T0 + 2 * TIMERS.rekey_timeout)  # the device keeps retrying, as wireguard-go does
    assert sent(dev) == [(INITIATION, A)]


def test_a_stray_refusal_is_forgotten_once_the_peer_answers():
    dev, key, other = pair([A])
    candidates = dev.peer(key).candidates
    dev.initiate_handshake(key, T0)
    dev.endpoint_refused(T0 + 0.001)
    for data, _ in dev.datagrams_to_send():
        other.receive_datagram(data, ("198.18.0.2", 40000), T0 + 0.002)
    [(response, _)] = other.datagrams_to_send()
    assert response[0] == RESPONSE
    dev.receive_datagram(response, A, T0 + 0.003)
    assert dev.peer(key).has_session(T0 + 0.003) and candidates.refusals == {}
    # A session stands: a refusal now (the peer restarting) is marked, never counted toward giving up.
    dev.endpoint_refused(T0 + 1.0)
    assert candidates.refused and candidates.refusals == {} and not candidates.refused_everywhere()


def test_two_addresses_each_refused_twice():
    dev, key, _ = pair([A, B])
    candidates = dev.peer(key).candidates
    dev.initiate_handshake(key, T0)
    assert sent(dev) == [(INITIATION, A)]
    dev.endpoint_refused(T0 + 0.001)
    assert sent(dev) == [(INITIATION, B)]  # the next address at once
    dev.endpoint_refused(T0 + 0.002)
    assert sent(dev) == [] and candidates.refusals == {A: 1, B: 1} and not candidates.refused_everywhere()
    dev.handle_timers(T0 + 0.002 + TIMERS.rekey_timeout)
    assert sent(dev) == [(INITIATION, A)]
    dev.endpoint_refused(T0 + 0.002 + TIMERS.rekey_timeout + 0.001)
    assert sent(dev) == [(INITIATION, B)] and not candidates.refused_everywhere()  # B has refused once only
    dev.endpoint_refused(T0 + 0.002 + TIMERS.rekey_timeout + 0.002)
    assert candidates.refused_everywhere()
    assert not dev.set_endpoint_addresses(key, [("192.0.2.3", 51820)])  # the name moved: a new address
    assert candidates.refusals == {} and not candidates.refused_everywhere()


@given(st.lists(st.sampled_from(["refused", "timeout", "answered"]), max_size=30), st.integers(1, 3))
def test_refused_everywhere_means_every_address_refused_twice_since_the_last_answer(steps, count):
    addresses = [(f"192.0.2.{i + 1}", 51820) for i in range(count)]
    candidates = EndpointCandidates(list(addresses))
    seen = dict.fromkeys(addresses, 0)  # the model: refusals per address since the last answer
    for step in steps:
        if step == "refused":
            seen[candidates.current] += 1  # type: ignore[index]
            candidates.next_on_refused(candidates.current)
        elif step == "timeout":
            candidates.next_on_timeout(candidates.current)
        else:
            candidates.answered()
            seen = dict.fromkeys(addresses, 0)
        assert candidates.refused_everywhere() == all(n >= REFUSALS_IN_A_ROW for n in seen.values())


# ---- the engine: the waiting connect fails at once -----------------------------------------------------
class Bed(EngineBed):
    def __init__(self) -> None:
        super().__init__(TIMERS, T0)

    def kinds(self) -> list[int]:
        return [data[0] for data, _ in self.transport.take()]

    def refused(self, after: float) -> None:
        """ICMP port unreachable comes back `after` seconds from now (what the UDP transport's on_refused does)."""
        self.now += after
        self.engine.endpoint_refused(self.now)


@pytest.fixture
def bed():
    with Bed() as b:
        yield b


def test_the_waiter_fails_at_once_when_the_endpoint_refused_twice(bed):
    waiter = bed.engine.wait_handshake()
    assert bed.kinds() == [INITIATION]
    bed.refused(0.001)
    assert not waiter.done()  # one refusal ends nothing
    bed.now = T0 + TIMERS.rekey_timeout
    bed.engine.handle_timer(bed.now)
    assert bed.kinds() == [INITIATION] and not waiter.done()
    bed.refused(0.001)
    assert waiter.done()
    error = waiter.exception()
    assert isinstance(error, PortUnreachableError) and isinstance(error, HandshakeTimeoutError)
    text = str(error)
    assert "198.18.0.1:51820 refused (ICMP port unreachable: nothing listens on that UDP port)" in text, text
    assert "port in the config" in text and "WireGuard is running on the peer" in text and "%wg doctor" in text
    assert error.explanation is not None and error.explanation.text == text
    assert crypto.encode_key(OURS) not in text and crypto.encode_key(OURS)[:8] not in text
    bed.now = T0 + 2 * TIMERS.rekey_timeout  # the device keeps retrying for whoever waits next
    bed.engine.handle_timer(bed.now)
    assert bed.kinds() == [INITIATION]


def test_a_stray_refusal_then_an_answer_completes_the_handshake(bed):
    peer = peer_device(TIMERS)
    waiter = bed.engine.wait_handshake()
    bed.refused(0.001)
    for data, _ in bed.transport.take():  # the initiation did arrive after all
        peer.receive_datagram(data, HERE, bed.now)
    bed.now += 0.01
    bed.engine.receive_datagrams([(d, ENDPOINT) for d, _ in peer.datagrams_to_send()], bed.now)
    assert waiter.done() and waiter.exception() is None
    assert bed.kinds() == [TRANSPORT]  # the keepalive confirming the keys
    bed.refused(0.001)
    bed.refused(0.001)  # refusals with a session up: the tunnel keeps going, nobody waits, nothing fails
    assert bed.engine.device.peer(next(iter(bed.engine.peers))).has_session(bed.now)


def test_the_loop_thread_hands_the_waiters_timeout_error_back_as_it_is():
    """LoopThread.run: a coroutine's own TimeoutError subclass (3.11: concurrent.futures.TimeoutError is the
    builtin one) is not taken for the wait's own timeout."""
    from wgmagic.runtime.loop import LoopThread

    thread = LoopThread("refused")
    thread.start()
    try:
        async def refused() -> None:
            raise PortUnreachableError("198.18.0.1:51820 refused")

        with pytest.raises(PortUnreachableError, match=r"198\.18\.0\.1:51820 refused"):
            thread.run(refused(), timeout=30)

        async def slow() -> None:
            await asyncio.sleep(30)

        with pytest.raises(TimeoutError, match="no answer from the tunnel's thread") as caught:
            thread.run(slow(), timeout=0.05)
        assert not isinstance(caught.value, HandshakeTimeoutError)
    finally:
        thread.stop()


def test_a_silent_peer_whose_host_refuses_is_said_to_be_refused():
    """%wg status's reason and the failed connections' words: a tunnel up whose Endpoint starts answering ICMP
    port unreachable (the peer's WireGuard stopped) says so; the device keeps retrying (no change there)."""
    from wgmagic import explain

    key = crypto.encode_key(crypto.public_key(OURS))
    silent = explain.peer_not_answering(key, "198.18.0.1:51820", 21.0)
    refused = explain.peer_not_answering(key, "198.18.0.1:51820", 21.0, refused=True)
    assert "may be down or unreachable" in silent and "port unreachable" not in silent
    assert "ICMP port unreachable: nothing listens on that UDP port" in refused and "198.18.0.1:51820" in refused
    assert key[:8] in refused and key[:9] not in refused


class Stream:
    def __init__(self, conn):
        self.conn = conn
        self.events: list = []

    def tcp_event(self, event):
        self.events.append(event)

    def forget_after_close(self):
        return True

    def loop_failed(self, error):
        self.events.append(error)


def test_a_tunnel_up_whose_endpoint_starts_refusing_keeps_retrying_and_says_why(bed):
    from wgmagic.errors import PeerNotRespondingError
    from wgmagic.netstack.events import TcpClosed

    peer = peer_device(TIMERS)
    waiter = bed.engine.wait_handshake()
    for data, _ in bed.transport.take():
        peer.receive_datagram(data, HERE, bed.now)
    bed.engine.receive_datagrams([(d, ENDPOINT) for d, _ in peer.datagrams_to_send()], bed.now)
    assert waiter.done() and waiter.exception() is None
    bed.now += 1.0
    conn = bed.engine.stack.tcp_connect(ipaddress.ip_address("198.18.0.1"), 5432, bed.now, timeout=120.0)
    stream = Stream(conn)
    bed.engine.register_stream(conn, stream)
    bed.engine.pump_conn(conn)
    bed.engine.pump(bed.now)
    bed.transport.take()
    # The peer's WireGuard stops: every initiation from now on draws ICMP port unreachable.
    initiations = 0
    while not stream.events and bed.now < T0 + 120:
        bed.now = bed.engine.next_deadline()
        bed.engine.handle_timer(bed.now)
        for data, _ in bed.transport.take():
            if data[0] == INITIATION:
                initiations += 1
                bed.engine.endpoint_refused(bed.now)
    (closed,) = stream.events
    assert isinstance(closed, TcpClosed) and isinstance(closed.error, PeerNotRespondingError)
    assert "ICMP port unreachable: nothing listens on that UDP port" in str(closed.error)
    reason = bed.engine.peer_not_answering_reason(next(iter(bed.engine.peers)), bed.now)
    assert reason is not None and "ICMP port unreachable" in reason
    assert initiations >= REFUSALS_IN_A_ROW  # refused everywhere, and still retrying as wireguard-go does
    kinds: list[int] = []
    while INITIATION not in kinds and bed.now < T0 + 300:
        bed.now = bed.engine.next_deadline()
        bed.engine.handle_timer(bed.now)
        kinds = bed.kinds()
    assert INITIATION in kinds


def test_a_waiter_for_any_peer_keeps_waiting_on_a_peer_not_refused():
    """connect waits for the first handshake of any peer: one peer refused everywhere does not end the wait
    while another (here one with no Endpoint, which only the peer itself can start) may still answer; a wait
    for the refused peer alone fails at once."""
    from wgmagic.config import parse_config

    other = crypto.encode_key(crypto.public_key(bytes(range(2, 34))))
    text = (f"[Interface]\nPrivateKey = {crypto.encode_key(OURS)}\nAddress = 198.18.0.2/32\n\n"
            f"[Peer]\nPublicKey = {crypto.encode_key(crypto.public_key(bytes(range(1, 33))))}\n"
            f"AllowedIPs = 198.18.0.0/24\nEndpoint = {ENDPOINT[0]}:{ENDPOINT[1]}\n\n"
            f"[Peer]\nPublicKey = {other}\nAllowedIPs = 198.18.1.0/24\n")
    config = parse_config(text)
    refusing = config.peers[0].public_key
    clock = [T0]
    loop = asyncio.new_event_loop()
    engine = Engine(config, {refusing: [ENDPOINT]}, loop=loop, timers=TIMERS, clock=lambda: clock[0],
                    transport=RecordingTransport)
    try:
        engine.open()
        anyone = engine.wait_handshake()
        alone = engine.wait_handshake(refusing)
        engine.endpoint_refused(clock[0])
        clock[0] = T0 + TIMERS.rekey_timeout
        engine.handle_timer(clock[0])
        engine.endpoint_refused(clock[0])
        assert alone.done() and isinstance(alone.exception(), PortUnreachableError)
        assert not anyone.done()  # the other peer may still start a handshake
    finally:
        engine.close()
        loop.close()
