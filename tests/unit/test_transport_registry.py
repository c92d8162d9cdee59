"""The transport registry and the choice of transport (wgmagic/runtime/transport.py): one place says which
transports exist and in which order --via tries them."""

from __future__ import annotations

import asyncio

import pytest

from wgmagic.config import parse_config
from wgmagic.runtime import fallback
from wgmagic.runtime.engine import Engine
from wgmagic.runtime.transport import (
    TRANSPORTS,
    TransportKind,
    TransportState,
    UdpTransport,
    create_udp,
    kind_for,
    transport_factory,
)
from wgmagic.runtime.websocket import WebSocketTransport, create
from wgmagic.via import Via, ViaMode, parse_via
from wgmagic.wireguard import crypto

CONFIG = f"""[Interface]
PrivateKey = {crypto.encode_key(bytes(range(32)))}
Address = 198.18.0.2/32

[Peer]
PublicKey = {crypto.encode_key(crypto.public_key(bytes(range(1, 33))))}
AllowedIPs = 198.18.0.0/24
"""


def test_every_kind_is_registered_and_the_factories_are_the_modules_own():
    assert set(TRANSPORTS) == set(TransportKind)
    assert transport_factory(TransportKind.UDP) is create_udp
    assert transport_factory(TransportKind.WEBSOCKET) is create


@pytest.mark.parametrize(("text", "ladder"), [
    ("udp", [TransportKind.UDP]),
    ("wss://relay.example/wg", [TransportKind.WEBSOCKET]),
    ("auto wss://relay.example/wg", [TransportKind.UDP, TransportKind.WEBSOCKET]),
    ("auto", [TransportKind.UDP]),  # no URL known: only UDP can be tried
])
def test_the_ladder_for_each_via(text, ladder):
    """One ladder for connect(), connect_async() and the doctor: fallback.plan; each rung's kind from kind_for."""
    rungs = fallback.plan(parse_via(text), 10.0).rungs
    assert [kind_for(rung.via) for rung in rungs] == ladder
    assert kind_for(None) is TransportKind.UDP


def test_modes_kinds_and_states_are_enums_that_read_as_their_words():
    assert Via("websocket", "ws://relay.example/wg").mode is ViaMode.WEBSOCKET  # a word is converted
    with pytest.raises(ValueError):
        Via("carrier-pigeon")
    assert str(ViaMode.AUTO) == "auto" and f"{TransportKind.UDP}" == "udp" and str(TransportState.OPEN) == "open"


def test_the_engine_builds_the_transport_its_via_names_first():
    loop = asyncio.new_event_loop()
    try:
        config = parse_config(CONFIG)
        udp = Engine(config, {}, loop=loop)
        assert isinstance(udp.carrier.transport, UdpTransport) and udp.carrier.transport.kind is TransportKind.UDP
        assert udp.carrier.transport.state is TransportState.CLOSED
        ws = Engine(config, {}, loop=loop, via=Via(ViaMode.WEBSOCKET, "ws://relay.example/wg"))
        assert isinstance(ws.carrier.transport, WebSocketTransport)
        assert ws.carrier.transport.kind is TransportKind.WEBSOCKET
        # No Endpoint: the WebSocket is the way to the peer, under the address the transport reports.
        assert ws.device.peer(config.peers[0].public_key).endpoint == ("websocket", 0)
    finally:
        loop.close()
