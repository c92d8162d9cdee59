"""The path policy (wgmagic/runtime/path_policy.py) step by step with a fake clock: exact decisions at exact
times; then the engine carrying them out with a real WireGuard device as the peer (issue 23, items 2 and 3)."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from tests.unit.memory_net import RecordingTransport, client_config, peer_device
from wgmagic.runtime.engine import Engine
from wgmagic.runtime.path_policy import UDP_PROBE_INTERVAL, PathAction, PathDecision, PathPolicy, PeerPath
from wgmagic.runtime.transport import TransportHooks, TransportKind, TransportSettings, TransportState
from wgmagic.via import Via, ViaMode
from wgmagic.wireguard.messages import INITIATION, TRANSPORT
from wgmagic.wireguard.timers import Timers

KEY = b"k" * 32
A4, A6 = ("198.18.0.1", 51820), ("fd00::1", 51820)
UDP, WS = TransportKind.UDP, TransportKind.WEBSOCKET


def view(*, session: bool = True, unanswered: bool = False, due: bool = False, endpoint=A6,
         candidates=(A6, A4), current: int = 0) -> PeerPath:
    return PeerPath(KEY, endpoint, tuple(candidates), current, session, unanswered, due)


# ---- the rules, decision by decision ---------------------------------------------------------------------------
def test_auto_leaves_udp_when_a_handshake_started_for_unanswered_data_is_itself_unanswered():
    policy = PathPolicy()
    policy.follow(UDP, WS, UDP, now=0.0)
    assert policy.next_deadline() is None  # nothing to probe while on the primary
    assert policy.decide(5.0, [view()]) == []  # a session, answered
    assert policy.decide(15.0, [view(unanswered=True)]) == []  # WireGuard just started its handshake (6.2)
    assert policy.decide(20.0, [view(unanswered=True, due=True)]) == [
        PathDecision(PathAction.SWITCH, "no answer over udp to a handshake (WireGuard's REKEY_TIMEOUT): "
                     "switching to websocket", kind=WS)]
    assert policy.kind is WS and policy.on_fallback
    assert policy.next_deadline() == 20.0 + UDP_PROBE_INTERVAL
    # once moved, the same observation decides nothing more: said once
    assert policy.decide(20.0, [view(unanswered=True, due=True)]) == []


def test_on_the_fallback_udp_is_probed_every_interval_at_each_address_in_turn_and_taken_back_when_it_answers():
    policy = PathPolicy()
    policy.follow(UDP, WS, WS, now=100.0)  # connect() already ended on the WebSocket
    assert policy.next_deadline() == 110.0
    assert policy.decide(109.9, [view()]) == []
    assert policy.decide(110.0, [view()]) == [
        PathDecision(PathAction.PROBE, "probing udp", public_key=KEY, address=A6, kind=UDP)]
    assert policy.next_deadline() == 120.0
    assert policy.decide(115.0, [view()]) == []
    assert policy.decide(120.0, [view()]) == [
        PathDecision(PathAction.PROBE, "probing udp", public_key=KEY, address=A4, kind=UDP)]
    assert policy.decide(130.0, [view()])[0].address == A6  # round again
    policy.probe_answered(131.0)
    assert policy.decide(131.0, [view()]) == [
        PathDecision(PathAction.SWITCH, "udp answers again: switching back to udp", kind=UDP)]
    assert policy.kind is UDP and policy.next_deadline() is None
    assert policy.decide(140.0, [view()]) == []


def test_a_probe_answer_on_the_primary_means_nothing_there():
    policy = PathPolicy()
    policy.follow(UDP, WS, UDP, now=0.0)
    policy.probe_answered(1.0)
    assert policy.decide(1.0, [view()]) == []


def test_a_session_less_peer_whose_handshake_goes_unanswered_leaves_for_the_fallback_after_rekey_timeout():
    policy = PathPolicy()
    policy.follow(UDP, WS, UDP, now=0.0)
    assert policy.decide(5.0, [view(session=False, due=True)])[0].kind is WS


def test_a_peer_without_addresses_is_not_probed():
    policy = PathPolicy()
    policy.follow(UDP, WS, WS, now=0.0)
    assert policy.decide(10.0, [view(endpoint=None, candidates=())]) == []
    assert policy.next_deadline() == 20.0


def test_without_a_fallback_an_unanswered_handshake_moves_a_peer_with_a_session_to_the_next_address():
    policy = PathPolicy()  # udp only: the Endpoint's addresses are the only other paths
    assert policy.decide(15.0, [view(unanswered=True)]) == []
    assert policy.decide(20.0, [view(unanswered=True, due=True)]) == [
        PathDecision(PathAction.NEXT_ADDRESS, "no answer to a handshake (WireGuard's REKEY_TIMEOUT): trying the "
                     "Endpoint's next address", public_key=KEY, address=A4)]
    # the device moved (index 1); the next unanswered retransmission, REKEY_TIMEOUT later, wraps round
    assert policy.decide(25.0, [view(unanswered=True, due=True, endpoint=A4, current=1)])[0].address == A6


@pytest.mark.parametrize("peer", [
    view(unanswered=True, due=False),  # the handshake is not late yet
    view(unanswered=False, due=True),  # a routine rekey's retransmission: the data is answered
    view(unanswered=True, due=True, candidates=(A6,)),  # one address: nowhere to go
    view(unanswered=True, due=True, endpoint=("198.18.0.9", 1)),  # roamed off the list: that one works
    view(session=False, due=True),  # no session: the WireGuard core moves by itself (wireguard/endpoint.py)
])
def test_the_address_stays(peer):
    assert PathPolicy().decide(20.0, [peer]) == []


def test_the_fallback_comes_before_the_next_address():
    policy = PathPolicy()
    policy.follow(UDP, WS, UDP, now=0.0)
    assert [d.action for d in policy.decide(20.0, [view(unanswered=True, due=True)])] == [PathAction.SWITCH]


# ---- the engine carrying the decisions out, stepped with a fake clock --------------------------------------------
FIRST, SECOND = ("198.18.0.1", 51820), ("198.18.0.3", 51820)
TIMERS = Timers(rekey_timeout_jitter=0.0)  # the whitepaper's constants, no jitter: exact deadlines
T0 = 1000.0


class Bed:
    """Our engine, two addresses for the peer, and the peer's own device answering what reaches it."""

    def __init__(self, monkeypatch) -> None:
        config = client_config(FIRST)
        self.made: list[RecordingTransport] = []
        self.now = T0
        self.loop = asyncio.new_event_loop()

        def factory(kind: TransportKind):
            def make(hooks: TransportHooks, settings: TransportSettings) -> RecordingTransport:
                self.made.append(RecordingTransport(hooks, settings, kind=kind, local_port=40000 + len(self.made)))
                return self.made[-1]

            return make

        # the registry's factories (the engine's own and the probe's) build recorders
        import wgmagic.runtime.carrier as carrier_module
        import wgmagic.runtime.path_watch as watch_module

        monkeypatch.setattr(carrier_module, "transport_factory", factory)
        monkeypatch.setattr(watch_module, "transport_factory", factory)
        self.engine = Engine(config, {config.peers[0].public_key: [FIRST, SECOND]}, loop=self.loop, timers=TIMERS,
                             clock=lambda: self.now)
        self.key = config.peers[0].public_key
        self.peer = peer_device(TIMERS)
        self.engine.open()

    @property
    def transport(self) -> RecordingTransport:
        return self.engine.carrier.transport  # type: ignore[return-value]

    def at(self, t: float) -> None:
        self.now = T0 + t
        self.engine.handle_timer(self.now)

    def answer(self, datagrams, source=FIRST, *, via: RecordingTransport | None = None) -> None:
        """The peer receives `datagrams` (from HERE) and its answers come back from `source`."""
        for data, _ in datagrams:
            self.peer.receive_datagram(data, ("198.18.0.2", 40000), self.now)
        self.peer.handle_timers(self.now)
        back = self.peer.datagrams_to_send()
        receiver = via or self.transport
        for data, _ in back:
            receiver.receive(data, source, self.now)
        self.engine.pump(self.now)

    def handshake(self) -> None:
        self.engine.device.initiate_handshake(self.key, self.now)
        self.engine.pump(self.now)
        self.answer(self.transport.take())
        assert self.engine.device.peer(self.key).has_session(self.now)

    def send_data(self) -> None:
        """One IP packet to the peer (a TCP SYN), as an application's query would send."""
        self.engine.stack.tcp_connect(ipaddress.ip_address("198.18.0.1"), 5432, self.now, timeout=60.0)
        self.engine.pump(self.now)

    def close(self) -> None:
        self.engine.close()
        self.loop.close()


@pytest.fixture
def bed(monkeypatch):
    bed = Bed(monkeypatch)
    yield bed
    bed.close()


def initiations(sent) -> list[tuple[str, int]]:
    return [addr for data, addr in sent if data[0] == INITIATION]


def test_the_dead_first_address_is_left_at_wireguards_own_retry_not_when_the_keys_expire(bed):
    bed.handshake()
    bed.transport.take()
    bed.send_data()  # at T0: the path to FIRST dies now; nothing comes back
    assert bed.transport.take()
    bed.at(14.9)
    assert initiations(bed.transport.take()) == []
    bed.at(15.0)  # KEEPALIVE_TIMEOUT + REKEY_TIMEOUT: WireGuard starts a handshake, still to FIRST
    assert initiations(bed.transport.take()) == [FIRST]
    bed.at(19.9)
    assert initiations(bed.transport.take()) == []
    bed.at(20.0)  # REKEY_TIMEOUT unanswered: the retransmission goes to the next address
    sent = bed.transport.take()
    assert initiations(sent) == [SECOND]
    assert bed.engine.counters["path_next_address"] == 1
    bed.answer(sent, source=SECOND)
    assert bed.engine.device.not_answering_since(bed.key, bed.now) is None
    assert bed.engine.peers[bed.key].resolved_endpoint == SECOND
    # the inner TCP's SYN, backed off during the outage, goes again now (not at its doubled RTO)
    assert bed.engine.counters["path_restored"] == 1
    assert [addr for data, addr in bed.transport.take() if data[0] == TRANSPORT and len(data) > 32] == [SECOND]
    bed.at(25.0)
    assert initiations(bed.transport.take()) == []  # answered: no more moves


def test_auto_moves_to_the_websocket_at_wireguards_notice_and_back_when_a_udp_probe_is_answered(bed):
    bed.engine.paths.follow(Via(ViaMode.AUTO, "ws://198.18.0.1:8080/wg"))
    udp = bed.transport
    bed.handshake()
    udp.take()
    bed.send_data()
    bed.at(15.0)
    assert initiations(udp.take()) == [FIRST]  # WireGuard's own handshake, over UDP
    bed.at(20.0)  # unanswered: the whole session moves to the WebSocket, with a fresh handshake there
    ws = bed.transport
    assert ws.kind is WS and udp.state is TransportState.CLOSED
    assert bed.engine.via == Via(ViaMode.WEBSOCKET, "ws://198.18.0.1:8080/wg")
    sent = ws.take()
    assert len(initiations(sent)) == 1
    assert bed.engine.counters["path_to_fallback"] == 1
    bed.answer(sent)  # through the relay
    assert bed.engine.device.not_answering_since(bed.key, bed.now) is None
    assert bed.engine.counters["path_restored"] == 1  # the SYN in backoff went again at once, over the WebSocket
    assert [data[0] for data, _ in ws.take()].count(TRANSPORT) >= 1
    bed.at(29.9)
    assert len(bed.made) == 2  # no probe yet
    bed.at(30.0)  # UDP_PROBE_INTERVAL later: a handshake initiation over a fresh UDP socket
    probe = bed.made[2]
    assert probe.kind is UDP and initiations(probe.take()) == [FIRST]
    assert initiations(ws.take()) == []  # not over the WebSocket
    assert bed.transport is ws  # still on it: UDP has not answered
    bed.at(40.0)
    probe_sent = probe.take()
    assert initiations(probe_sent) == [SECOND]  # the next address's turn
    bed.answer(probe_sent, source=SECOND, via=probe)  # UDP answers
    bed.loop.run_until_complete(asyncio.sleep(0))  # the switch happens outside the probe's read
    assert bed.transport.kind is UDP and ws.state is TransportState.CLOSED
    assert probe.state is TransportState.CLOSED
    assert bed.engine.counters["path_back_to_primary"] == 1
    assert bed.engine.via is None  # UDP, as Tunnel.via says it
    assert bed.engine.peers[bed.key].resolved_endpoint == SECOND
    assert initiations(bed.transport.take()) == [SECOND]  # the peer learns our new socket at once


# ---- the inner TCP after the path came back (TcpConnection.path_restored) -----------------------------------------
def test_a_connection_in_retransmission_backoff_resends_when_the_path_is_restored_and_only_then():
    from wgmagic.netstack.tcp.config import TcpConfig
    from wgmagic.netstack.tcp.connection import TcpConnection

    here = (ipaddress.ip_address("198.18.0.2"), 40000)
    there = (ipaddress.ip_address("198.18.0.1"), 5432)
    conn = TcpConnection.connect(here, there, 0.0, options=TcpConfig(user_timeout=30.0), mss=1380, timeout=60.0)
    assert len(conn.segments_to_send(0.0)) == 1  # the SYN
    assert conn.path_restored(0.5) is False  # no backoff yet: nothing to bring forward
    assert conn.rto_at == 1.0  # rto_initial
    conn.handle_timer(1.0)
    assert len(conn.segments_to_send(1.0)) == 1 and conn.rto_at == 3.0  # backed off: 2 s
    conn.handle_timer(3.0)
    conn.segments_to_send(3.0)
    assert conn.rto_at == 7.0
    assert conn.path_restored(5.0) is True and conn.rto_at == 5.0  # the path is back at 5.0: resend now
    conn.handle_timer(5.0)
    assert len(conn.segments_to_send(5.0)) == 1
    assert conn.rto_at == 13.0  # and the backoff goes on from there (8 s) until an ACK resets it
