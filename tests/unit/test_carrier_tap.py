"""The carrier's outer tap (runtime/carrier.py `tap_received`): a capture's view of received datagrams stays on
when the transport is switched (--via auto's move to the WebSocket and back), and goes when it is taken off.
Stepped by hand on the engine bed of test_engine_steps (fake clock, in-memory transport, a real peer device)."""

from __future__ import annotations

import pytest

from tests.unit.memory_net import RecordingTransport
from tests.unit.test_engine_steps import ENDPOINT, bed  # noqa: F401  (bed: the fixture)
from wgmagic.runtime.transport import TransportKind
from wgmagic.wireguard.messages import INITIATION, RESPONSE, TRANSPORT


def _handshake(b) -> None:
    """A handshake, confirmed to the responder by the initiator's first transport message (a keepalive: the
    responder may send only after it, whitepaper 5.4.7)."""
    b.engine.wait_handshake()
    assert b.to_peer() == [INITIATION]
    assert b.from_peer() == [RESPONSE]
    assert b.to_peer() == [TRANSPORT]


def _keepalive_from_peer(b) -> list[int]:
    """The peer sends one authenticated keepalive (a transport message) to the engine's transport in use."""
    b.peer.send_keepalive(next(iter(b.peer.peers)), b.now)
    return b.from_peer()


def test_the_tap_sees_received_datagrams_before_and_after_a_switch(bed):  # noqa: F811
    seen: list[tuple[int, tuple[str, int]]] = []
    bed.engine.carrier.tap_received(lambda data, addr, now: seen.append((data[0], addr)))
    _handshake(bed)
    assert seen == [(RESPONSE, ENDPOINT)]
    first = bed.engine.carrier.transport
    bed.engine.carrier.switch(TransportKind.UDP)  # a new transport, built from the factory
    assert bed.engine.carrier.transport is not first and isinstance(bed.engine.carrier.transport, RecordingTransport)
    bed.transport = bed.engine.carrier.transport  # what the bed delivers to the peer from now on
    assert bed.to_peer() == []  # a session stands: nothing to say until there is data
    assert _keepalive_from_peer(bed) == [TRANSPORT]
    assert seen == [(RESPONSE, ENDPOINT), (TRANSPORT, ENDPOINT)]
    assert bed.engine.device.peer(next(iter(bed.engine.peers))).last_receive == bed.now  # the device got them too


def test_a_tap_taken_off_sees_nothing_more_and_the_device_is_called_directly(bed):  # noqa: F811
    seen: list[int] = []
    bed.engine.carrier.tap_received(lambda data, addr, now: seen.append(data[0]))
    bed.engine.carrier.tap_received(None)
    assert bed.engine.carrier.transport.receive == bed.engine.device.receive_datagram  # nothing in between
    _handshake(bed)
    bed.engine.carrier.switch(TransportKind.UDP)
    assert bed.engine.carrier.transport.receive == bed.engine.device.receive_datagram
    assert seen == []


@pytest.mark.parametrize("switches", [1, 3])
def test_the_tap_is_called_once_per_datagram_however_often_the_transport_switches(bed, switches):  # noqa: F811
    seen: list[int] = []
    bed.engine.carrier.tap_received(lambda data, addr, now: seen.append(data[0]))
    _handshake(bed)
    for _ in range(switches):
        bed.engine.carrier.switch(TransportKind.UDP)
    assert _keepalive_from_peer(bed) == [TRANSPORT]
    assert seen == [RESPONSE, TRANSPORT]
