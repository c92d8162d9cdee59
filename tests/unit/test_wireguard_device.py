"""The WireGuard device driven in-process: two devices, datagrams passed by hand, a fake clock."""

from __future__ import annotations

import base64
import ipaddress
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wgmagic.wireguard import crypto
from wgmagic.wireguard.device import Device
from wgmagic.wireguard.keypair import REPLAY_WINDOW, ReplayWindow
from wgmagic.wireguard.messages import parse_cookie_reply, parse_initiation, parse_response
from wgmagic.wireguard.peer import HandshakeAttemptsExhausted, HandshakeCompleted
from wgmagic.wireguard.timers import Timers

A_ADDR, B_ADDR = ("127.0.0.1", 1111), ("127.0.0.1", 2222)


def ipv4(src: str, dst: str, payload: bytes = b"hello") -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0, 64, 17, 0,
                         ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed)
    return header + payload


def ipv6(src: str, dst: str, payload: bytes = b"hello6") -> bytes:
    return struct.pack("!IHBB16s16s", 6 << 28, len(payload), 17, 64, ipaddress.IPv6Address(src).packed,
                       ipaddress.IPv6Address(dst).packed) + payload


class Pair:
    """Device A (initiator, knows B's endpoint) and device B (responder), wired by hand."""

    def __init__(self, timers: Timers | None = None, psk: bytes | None = None, seed: int = 1) -> None:
        self.a_key, self.b_key = crypto.generate_private_key(), crypto.generate_private_key()
        counter = iter(range(10**9))

        def rng(n: int) -> bytes:  # deterministic indices and jitter
            return (seed * 1_000_003 + next(counter)).to_bytes(32, "little")[:n]

        self.a = Device(self.a_key, timers=timers, rng=rng)
        self.b = Device(self.b_key, timers=timers, rng=rng)
        self.a_peer = self.a.add_peer(crypto.public_key(self.b_key), preshared_key=psk, endpoint=B_ADDR,
                                      allowed_ips=[ipaddress.ip_network("10.0.0.0/24"),
                                                   ipaddress.ip_network("fd00::/64")])
        self.b_peer = self.b.add_peer(crypto.public_key(self.a_key), preshared_key=psk,
                                      allowed_ips=[ipaddress.ip_network("10.9.0.1/32"),
                                                   ipaddress.ip_network("fd09::1/128")])
        self.now = 100.0
        self.a_to_b: list[bytes] = []
        self.b_to_a: list[bytes] = []

    def exchange(self, rounds: int = 6, drop_a: bool = False, drop_b: bool = False) -> None:
        for _ in range(rounds):
            for data, addr in self.a.datagrams_to_send():
                assert addr == B_ADDR
                self.a_to_b.append(data)
                if not drop_a:
                    self.b.receive_datagram(data, A_ADDR, self.now)
            for data, _addr in self.b.datagrams_to_send():
                self.b_to_a.append(data)
                if not drop_b:
                    self.a.receive_datagram(data, B_ADDR, self.now)

    def tick(self, seconds: float, step: float = 0.1) -> None:
        end = self.now + seconds
        while self.now < end:
            self.now = min(end, self.now + step)
            self.a.handle_timers(self.now)
            self.b.handle_timers(self.now)
            self.exchange(2)


@pytest.mark.parametrize("psk", [None, bytes(range(32))])
def test_handshake_and_data_both_ways(psk):
    pair = Pair(psk=psk)
    assert pair.a.send_packet(ipv4("10.9.0.1", "10.0.0.5"), pair.now)
    pair.exchange()
    assert pair.b.packets_received() == [ipv4("10.9.0.1", "10.0.0.5")]
    assert any(isinstance(e, HandshakeCompleted) and e.initiator for e in pair.a.events())
    assert any(isinstance(e, HandshakeCompleted) and not e.initiator for e in pair.b.events())
    pair.b.send_packet(ipv6("fd00::7", "fd09::1"), pair.now)
    pair.exchange()
    assert pair.a.packets_received() == [ipv6("fd00::7", "fd09::1")]
    assert not pair.a.drops and not pair.b.drops


def test_mismatched_psk_never_completes():
    pair = Pair()
    pair.b_peer._psk = bytes(32 * [7])
    pair.a.send_packet(ipv4("10.9.0.1", "10.0.0.5"), pair.now)
    pair.exchange()
    assert pair.a.drops["handshake_failed"] == 1
    assert not pair.b.packets_received()


def test_wrong_peer_key_is_silent_and_gives_up_after_rekey_attempt_time():
    timers = Timers()
    pair = Pair(timers)
    stranger = crypto.generate_private_key()
    a = Device(pair.a_key, timers=timers)
    a.add_peer(crypto.public_key(stranger), endpoint=B_ADDR, allowed_ips=[ipaddress.ip_network("10.0.0.0/24")])
    a.send_packet(ipv4("10.9.0.1", "10.0.0.5"), 0.0)
    initiations, now, events = 0, 0.0, []
    while now < 120:
        for data, _ in a.datagrams_to_send():
            initiations += 1
            pair.b.receive_datagram(data, A_ADDR, now)
        assert not pair.b.datagrams_to_send()  # B never answers: mac1 is keyed to the stranger's key
        now += 0.05
        a.handle_timers(now)
        events += a.events()
    exhausted = [e for e in events if isinstance(e, HandshakeAttemptsExhausted)]
    assert len(exhausted) == 1
    assert initiations == timers.max_handshake_attempts + 1
    assert pair.b.drops["bad_mac1"] == initiations


def test_replayed_initiation_is_rejected():
    pair = Pair()
    pair.a.send_packet(ipv4("10.9.0.1", "10.0.0.5"), pair.now)
    pair.exchange()
    first_initiation = next(d for d in pair.a_to_b if d[0] == 1)
    pair.b.receive_datagram(first_initiation, A_ADDR, pair.now + 1)
    assert pair.b.drops["replayed_initiation"] == 1


def test_cookie_exchange_under_load():
    pair = Pair()
    pair.b.load.force = True
    pair.a.send_packet(ipv4("10.9.0.1", "10.0.0.5"), pair.now)
    pair.exchange(1)
    assert parse_cookie_reply(pair.b_to_a[-1]) is not None
    assert pair.b.cookie_replies_sent == 1
    # The next initiation (a retry after REKEY_TIMEOUT) carries mac2 and gets through.
    pair.tick(6)
    assert pair.b.packets_received() == [ipv4("10.9.0.1", "10.0.0.5")]
    initiations = [parse_initiation(d) for d in pair.a_to_b if d[0] == 1]
    assert initiations[0].mac2 == bytes(16) and initiations[-1].mac2 != bytes(16)


def test_replay_of_transport_packet_dropped():
    pair = Pair()
    pair.a.send_packet(ipv4("10.9.0.1", "10.0.0.5"), pair.now)
    pair.exchange()
    data = next(d for d in reversed(pair.a_to_b) if d[0] == 4 and len(d) > 32)
    pair.b.packets_received()
    pair.b.receive_datagram(data, A_ADDR, pair.now)
    assert pair.b.drops["replay"] == 1 and not pair.b.packets_received()


def test_replay_window():
    window = ReplayWindow()
    assert window.record(0)
    assert not window.record(0)  # duplicate
    assert window.record(5) and window.record(3) and window.record(4)  # reordered within the window
    assert not window.record(4)
    assert window.record(REPLAY_WINDOW + 10)
    assert not window.check(10)  # too old: fell out of the window
    assert window.check(REPLAY_WINDOW + 9) and window.record(REPLAY_WINDOW + 9)
    assert window.record(2**64 - 2**13 - 2)  # a huge jump resets the bitmap without growing it
    assert window.bits.bit_length() <= REPLAY_WINDOW


def _model_record(seen: set[int], newest: list[int], counter: int) -> bool:
    """The window's rule spelled as a set: new if never seen and not REPLAY_WINDOW or more behind the newest."""
    if counter in seen or (seen and newest[0] - counter >= REPLAY_WINDOW):
        return False
    seen.add(counter)
    newest[0] = max(newest[0], counter) if len(seen) > 1 else counter
    return True


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.just("next"), st.integers(0, 3 * REPLAY_WINDOW)), max_size=60),
       st.integers(0, 2 * REPLAY_WINDOW))
def test_replay_window_as_a_set(steps: list, start: int):
    """The window (with its fast path for a full window and the next counter) answers as a set of the counters
    seen would, also across runs of in-order counters long enough to fill the whole window."""
    window, seen, newest = ReplayWindow(), set(), [0]
    counter = start
    for step in steps:
        counters = range(counter, counter + REPLAY_WINDOW + 3) if step == "next" else [step]
        for value in counters:
            assert window.check(value) == (value not in seen and not (seen and newest[0] - value >= REPLAY_WINDOW))
            assert window.record(value) == _model_record(seen, newest, value)
        counter = max(seen, default=0) + 1


def test_cryptokey_routing_longest_prefix_and_inbound_check():
    dev = Device(crypto.generate_private_key())
    wide = dev.add_peer(crypto.public_key(crypto.generate_private_key()),
                        allowed_ips=[ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::/0")])
    narrow = dev.add_peer(crypto.public_key(crypto.generate_private_key()),
                          allowed_ips=[ipaddress.ip_network("10.1.2.0/24"), ipaddress.ip_network("fd00::/16")])
    assert dev.route(ipv4("1.1.1.1", "10.1.2.3")) is narrow
    assert dev.route(ipv4("1.1.1.1", "10.1.3.3")) is wide
    assert dev.route(ipv6("::1", "fd00::1")) is narrow
    assert dev.route(ipv6("::1", "2001:db8::1")) is wide
    assert dev.route(ipv4("1.1.1.1", "192.0.2.1")) is None
    assert not dev.send_packet(ipv4("1.1.1.1", "192.0.2.1"), 0.0)
    assert dev.drops["no_route"] == 1

    pair = Pair()
    pair.a.send_packet(ipv4("10.9.0.1", "10.0.0.5"), pair.now)
    pair.exchange()
    pair.b.packets_received()
    pair.a.send_packet(ipv4("10.9.0.99", "10.0.0.5"), pair.now)  # a source B does not allow for A
    pair.exchange()
    assert pair.b.drops["allowed_ips"] == 1 and not pair.b.packets_received()


def test_roaming_updates_endpoint():
    pair = Pair()
    pair.a.send_packet(ipv4("10.9.0.1", "10.0.0.5"), pair.now)
    pair.exchange()
    pair.a.send_packet(ipv4("10.9.0.1", "10.0.0.5"), pair.now)
    (data, _), = pair.a.datagrams_to_send()
    pair.b.receive_datagram(data, ("127.0.0.9", 4444), pair.now)
    assert pair.b_peer.endpoint == ("127.0.0.9", 4444)


def test_rekey_after_time_keeps_every_packet():
    timers = Timers(rekey_after_time=3.0, reject_after_time=9.0, keepalive_timeout=1.0, rekey_timeout=0.5)
    pair = Pair(timers)
    pair.a.send_packet(ipv4("10.9.0.1", "10.0.0.5", b"first"), pair.now)
    pair.exchange()
    pair.b.packets_received()
    sent = received = 0
    for _ in range(400):  # 20 s at 20 packets/s
        pair.a.send_packet(ipv4("10.9.0.1", "10.0.0.5", sent.to_bytes(4, "big")), pair.now)
        pair.b.send_packet(ipv4("10.0.0.5", "10.9.0.1", sent.to_bytes(4, "big")), pair.now)
        sent += 1
        pair.tick(0.05, step=0.05)
        received += len(pair.b.packets_received())
        pair.a.packets_received()
    pair.tick(1)
    received += len(pair.b.packets_received())
    assert received == sent
    assert pair.a_peer.handshakes >= 6
    assert not pair.b.drops and not pair.a.drops


def test_keepalive_after_receiving_data_and_silence():
    timers = Timers(keepalive_timeout=10.0)
    pair = Pair(timers)
    pair.a.send_packet(ipv4("10.9.0.1", "10.0.0.5"), pair.now)
    pair.exchange()
    count = len(pair.b_to_a)
    pair.tick(9.9)
    assert len(pair.b_to_a) == count
    pair.tick(0.3)
    assert len(pair.b_to_a) == count + 1 and len(pair.b_to_a[-1]) == 32  # an empty transport packet


def test_new_handshake_when_data_gets_no_answer():
    timers = Timers(keepalive_timeout=10.0, rekey_timeout=5.0)
    pair = Pair(timers)
    pair.a.send_packet(ipv4("10.9.0.1", "10.0.0.5"), pair.now)
    pair.exchange()
    pair.tick(12)  # B's keepalive at 10 s answers A's first packet
    sent_at = pair.now
    pair.a.send_packet(ipv4("10.9.0.1", "10.0.0.5"), pair.now)
    pair.exchange(1, drop_a=True)  # lost: B never answers
    first_initiation = None
    while first_initiation is None and pair.now < sent_at + 30:
        pair.now += 0.05
        pair.a.handle_timers(pair.now)
        if any(d[0] == 1 for d, _ in pair.a.datagrams_to_send()):
            first_initiation = pair.now
    assert first_initiation is not None
    assert sent_at + 15 <= first_initiation < sent_at + 15.1


def test_persistent_keepalive():
    pair = Pair()
    pair.a_peer.persistent_keepalive = 25
    pair.a.send_packet(ipv4("10.9.0.1", "10.0.0.5"), pair.now)
    pair.exchange()
    before = len(pair.a_to_b)
    pair.tick(60, step=0.5)
    keepalives = [d for d in pair.a_to_b[before:] if d[0] == 4 and len(d) == 32]
    assert len(keepalives) >= 2


def test_keys_zeroed_after_three_reject_times():
    timers = Timers(reject_after_time=30.0)
    pair = Pair(timers)
    pair.a.send_packet(ipv4("10.9.0.1", "10.0.0.5"), pair.now)
    pair.exchange()
    assert pair.a_peer.current is not None
    pair.tick(91, step=1.0)
    assert pair.a_peer.current is None and pair.a_peer.previous is None


def test_expired_session_starts_a_new_handshake():
    timers = Timers(reject_after_time=10.0, rekey_after_time=100.0)
    pair = Pair(timers)
    pair.a.send_packet(ipv4("10.9.0.1", "10.0.0.5"), pair.now)
    pair.exchange()
    pair.b.packets_received()
    pair.now += 11
    pair.a.send_packet(ipv4("10.9.0.1", "10.0.0.5", b"late"), pair.now)
    pair.exchange()
    assert pair.b.packets_received() == [ipv4("10.9.0.1", "10.0.0.5", b"late")]
    assert pair.a_peer.handshakes == 2


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.sampled_from([b"", b"\x01\x00\x00\x00", b"\x02\x00\x00\x00",
                                                b"\x03\x00\x00\x00", b"\x04\x00\x00\x00"]))
def test_garbage_datagrams_are_counted_never_raised(data, prefix):
    dev = Device(bytes(range(32)))
    dev.add_peer(crypto.public_key(bytes(range(1, 33))), allowed_ips=[ipaddress.ip_network("0.0.0.0/0")])
    dev.receive_datagram(prefix + data, ("127.0.0.1", 1), 0.0)
    assert not dev.packets_received()
    assert sum(dev.drops.values()) == 1


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_message_parsers_never_raise(data):
    for parse in (parse_initiation, parse_response, parse_cookie_reply):
        parse(data)
        parse(bytes((1,)) + bytes(3) + data)


def test_no_secret_in_reprs():
    pair = Pair(psk=bytes(range(100, 132)))
    pair.a.send_packet(ipv4("10.9.0.1", "10.0.0.5"), pair.now)
    pair.exchange()
    text = " ".join(repr(x) for x in (pair.a, pair.b, pair.a_peer, pair.b_peer, pair.a_peer.current,
                                      pair.a.static, pair.a_peer.cookies, pair.b.cookies, pair.a.stats(),
                                      pair.b.stats()))
    for key in (pair.a_key, pair.b_key, bytes(range(100, 132))):
        for form in (base64.b64encode(key).decode(), key.hex(), repr(key)):
            assert form not in text


def test_keepalive_on_request_moves_the_endpoint_at_the_peer():
    """After the transport below changed (a WebSocket reopened through a new relay socket), one keepalive
    tells the peer where we are now; without a session it sends nothing."""
    pair = Pair()
    pair.a.send_keepalive(crypto.public_key(pair.b_key), pair.now)
    assert pair.a.datagrams_to_send() == []
    pair.a.send_packet(ipv4("10.9.0.1", "10.0.0.5"), pair.now)
    pair.exchange()
    pair.b.packets_received()
    pair.a.send_keepalive(crypto.public_key(pair.b_key), pair.now)
    (data, _), = pair.a.datagrams_to_send()
    pair.b.receive_datagram(data, ("127.0.0.9", 4444), pair.now)
    assert pair.b_peer.endpoint == ("127.0.0.9", 4444)
    assert pair.b.packets_received() == []  # a keepalive carries no packet
