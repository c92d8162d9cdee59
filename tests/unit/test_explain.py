"""wgmagic.explain: one home for "why it failed". Its functions word every fault; the engine, Tunnel, the forward,
the SOCKS5 client, the resolver, %%wgsql's stage errors and the doctor all show those same words. No key,
password or credential ever goes in, and a peer's public key shows as its 8-character prefix only."""

from __future__ import annotations

import ast
import asyncio
import base64
import inspect
import re
from collections import Counter
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from wgmagic import explain
from wgmagic.config import parse_config
from wgmagic.errors import HandshakeTimeoutError, NameNotFoundError, PeerNotRespondingError
from wgmagic.explain import Explanation
from wgmagic.runtime.engine import Engine
from wgmagic.runtime.transport import Transport, UdpTransport
from wgmagic.runtime.websocket import WebSocketTransport
from wgmagic.sql.messages import classify_connection_failure
from wgmagic.tools.doctor import FAIL, Report, _handshake_failed
from wgmagic.via import Via

PACKAGE = Path(explain.__file__).resolve().parent
KEY = base64.b64encode(bytes(range(32))).decode()
PEER = base64.b64encode(bytes(range(1, 33))).decode()
CONFIG = f"""[Interface]
PrivateKey = {KEY}
Address = 198.18.0.2/32

[Peer]
PublicKey = {PEER}
Endpoint = 198.18.0.1:51820
AllowedIPs = 198.18.0.0/24
"""

hosts = st.one_of(
    st.text(max_size=80),
    st.from_regex(r"[a-z0-9-]{1,20}(\.[a-z0-9-]{1,10}){0,3}", fullmatch=True),
    st.ip_addresses().map(str),
)
ports = st.integers(min_value=0, max_value=65535)
keys = st.binary(min_size=32, max_size=32).map(lambda raw: base64.b64encode(raw).decode())


def everything(host: str, port: int, key: str) -> list[Explanation]:
    """One of each explanation, for properties that hold for all of them."""
    return [
        explain.no_handshake(key, f"{host}:{port}"),
        explain.no_handshake(key, f"{host}:{port}", refused=True),
        explain.no_handshake(key, f"{host}:{port}", tried=[host, "198.18.0.1"]),
        explain.no_handshake(key, None, transport=f"WebSocket ws://{host}/wg (open)", transport_state="closed"),
        explain.endpoint_unresolvable(host, port, "Name or service not known"),
        explain.connection_refused(host, port),
        explain.connect_timed_out(host, port, 12.5, peer_silent=True),
        explain.connect_timed_out(host, port, 12.5, peer_silent=False),
        explain.connect_failed(host, port, "Network is unreachable"),
        explain.proxy_unreachable(host, port, 4),
        explain.proxy_failed(host, port, 1),
        explain.no_route(host, [explain.outside_allowed_ips("198.18.9.9")]),
        explain.no_dns_server(host),
        explain.name_not_found(host, ["198.18.0.1"]),
        explain.dns_timed_out(host, ["198.18.0.1", "fd00::53"]),
    ]


# ---- the words --------------------------------------------------------------------------------------------
def test_no_handshake_names_the_causes_and_the_peer_by_its_prefix_only():
    silent = explain.no_handshake(PEER, "198.18.0.1:51820")
    assert str(silent) == silent.text
    assert silent.fault == f"peer {PEER[:8]}... at 198.18.0.1:51820 never answered the handshake"
    assert "Likely causes:" in silent.text and "PublicKey" in silent.advice and "UDP" in silent.advice
    assert "blocked" in silent.text and "clock" in silent.text
    refused = explain.no_handshake(PEER, "198.18.0.1:51820", refused=True)
    assert "nothing listens" in refused.fault and "port unreachable" in refused.fault
    assert "WireGuard is running on the peer" in refused.text
    for explanation in (silent, refused):
        assert PEER[:8] in explanation.text and PEER[8:] not in explanation.text and PEER[:9] not in explanation.text


def test_no_handshake_says_where_it_tried():
    several = explain.no_handshake(PEER, "gw.example:51820", tried=["198.18.0.1", "fd00::1"])
    assert "gw.example:51820 (tried 198.18.0.1, fd00::1)" in several.fault
    moved = explain.no_handshake(PEER, "gw.example:51820", address="198.18.0.7")
    assert "gw.example:51820 (198.18.0.7)" in moved.fault
    nowhere = explain.no_handshake(PEER, None)
    assert "(no Endpoint configured)" in nowhere.fault


def test_no_handshake_through_a_websocket_blames_the_relay_or_the_keys():
    ws = explain.no_handshake(PEER, None, transport="WebSocket wss://relay.example/wg (open)")
    assert ws.fault == (f"peer {PEER[:8]}... never answered the handshake through the WebSocket "
                        "wss://relay.example/wg (open)")
    assert "relay's --to" in ws.advice and "Likely causes:" in ws.text
    failing = explain.no_handshake(PEER, None, transport="WebSocket ws://r/wg (reconnecting)",
                                   transport_state="nothing accepts connections at r:80: is the relay running?")
    assert failing.fault.endswith(": nothing accepts connections at r:80: is the relay running?")


def test_connection_failures():
    refused = explain.connection_refused("db.internal", 5439, through="tunnel 'wg0'")
    assert refused.text.startswith("db.internal:5439 refused the connection (reached through tunnel 'wg0'): ")
    assert "nothing listens on that port" in refused.text and "firewall" in refused.text
    silent = explain.connect_timed_out("db.internal", 5432, 12, peer_silent=True)
    assert silent.text.startswith("connecting to db.internal:5432 timed out after 12 s: ")
    assert "peer is not answering" in silent.text and "keeps retrying" in silent.text
    quiet = explain.connect_timed_out("fd00::5", 5432, 2.5, peer_silent=False)
    assert quiet.text.startswith("connecting to [fd00::5]:5432 timed out after 2.5 s: the tunnel is up but nothing")
    assert "firewall" in quiet.advice and "peer" not in quiet.fault


def test_no_route_and_its_reasons():
    literal = explain.no_route("198.18.0.1", [explain.no_interface_address("198.18.0.1", 4)], literal=True)
    assert literal.text.startswith("no route to 198.18.0.1: the [Interface] has no IPv4 Address through the tunnel")
    named = explain.no_route("db.internal", [explain.outside_allowed_ips("fd00:1::1")])
    assert named.fault == "no route to db.internal (fd00:1::1: outside every peer's AllowedIPs) through the tunnel"
    assert "AllowedIPs" in named.advice
    assert "it has no addresses" in explain.no_route("x", []).text


def test_dns_failures():
    assert "did not answer" in str(explain.dns_timed_out("db", ["198.18.0.1"]))
    assert "not found" in str(explain.name_not_found("db", ["198.18.0.1"]))
    assert "no DNS = server" in str(explain.no_dns_server("db"))


def test_every_stage_has_advice():
    for stage in ("handshake", "DNS", "TCP connect", "TLS", "authentication", "server"):
        assert explain.stage_advice(stage, "db.internal", 5432).strip()
    assert "PublicKey" in explain.stage_advice("handshake", "db.internal", 5432)
    assert explain.PEER_SILENT_ADVICE in explain.stage_advice("TCP connect", "h", 1, peer_silent=True)


# ---- properties over odd input --------------------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(hosts, ports, keys)
def test_any_host_port_and_key_give_sentences_that_name_them_and_never_the_whole_key(host, port, key):
    for explanation in everything(host, port, key):
        assert isinstance(explanation.text, str) and explanation.fault and explanation.advice
        assert str(explanation) == explanation.text
        assert explanation.fault in explanation.text or explanation.text.startswith(explanation.fault[:20])
        assert key[8:] not in explanation.text  # the prefix only: 36 more characters never show
    if ":" not in host:
        assert f"{host}:{port}" in explain.connection_refused(host, port).text
    else:
        assert f"[{host}]:{port}" in explain.connection_refused(host, port).text


def test_no_argument_is_named_like_a_secret():
    secret = re.compile(r"key|password|passwd|secret|credential|token|psk|private", re.I)
    for name, function in inspect.getmembers(explain, inspect.isfunction):
        if function.__module__ != explain.__name__ or name.startswith("_"):
            continue
        for parameter in inspect.signature(function).parameters:
            assert not secret.search(parameter), f"explain.{name}({parameter}=...): a secret has no place here"


def test_explain_imports_nothing_of_wgmagic():
    tree = ast.parse((PACKAGE / "explain.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert not (node.module or "").startswith("wgmagic"), node.module
        elif isinstance(node, ast.Import):
            assert not any(alias.name.startswith("wgmagic") for alias in node.names)


# ---- the same words wherever the fault surfaces ---------------------------------------------------------------
def make_engine() -> tuple[Engine, asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    return Engine(parse_config(CONFIG), {}, loop=loop), loop


def test_the_engine_words_a_missing_handshake_with_explain():
    engine, loop = make_engine()
    try:
        peer = next(iter(engine.peers.values()))
        assert engine.describe_no_handshake(peer) == explain.no_handshake(PEER, "198.18.0.1:51820")
        engine.device.endpoint_refused(engine.now())  # ICMP port unreachable: the device notes it
        refused = engine.describe_no_handshake(peer)
        assert refused == explain.no_handshake(PEER, "198.18.0.1:51820", refused=True)
        assert KEY not in refused.text and KEY[:8] not in refused.text
    finally:
        loop.close()


def test_the_engine_words_a_missing_handshake_through_a_websocket():
    loop = asyncio.new_event_loop()
    try:
        engine = Engine(parse_config(CONFIG), {}, loop=loop,
                        via=Via("websocket", "ws://user:hunter2@relay.example/wg", None))
        peer = next(iter(engine.peers.values()))
        engine.carrier.transport.last_error = "nothing accepts connections at relay.example:80: is the relay running?"
        explanation = engine.describe_no_handshake(peer)
        assert explanation == explain.no_handshake(PEER, None, transport=engine.carrier.transport.describe(),
                                                   transport_state=engine.carrier.transport.last_error)
        assert "relay's --to" in explanation.text and "hunter2" not in explanation.text
    finally:
        loop.close()


def test_the_doctor_shows_the_exceptions_fault_and_advice():
    for refused in (False, True):
        explanation = explain.no_handshake(PEER, "198.18.0.1:51820", refused=refused)
        error = HandshakeTimeoutError(f"{explanation} (gave up after 3 s)", explanation=explanation)
        report = Report()
        _handshake_failed(error, report.add)
        (check,) = report.checks
        assert (check.verdict, check.detail, check.fix) == (FAIL, explanation.fault, explanation.advice)
        assert check.detail in str(error) and check.fix in str(error)
    report = Report()
    _handshake_failed(NameNotFoundError("'x' not found"), report.add)
    assert report.checks[0].detail == "'x' not found"  # not dressed up as a handshake fault it is not


def test_sql_stages_follow_the_exceptions():
    silent = explain.connect_timed_out("db.internal", 5432, 15, peer_silent=True)
    # The tunnel's own error and a forward's ErrorResponse text (through libpq) land on the same stage, although
    # the words mention handshakes.
    for exc in (PeerNotRespondingError(str(silent)), OSError(f"connection failed: wgmagic: {silent}")):
        stage = classify_connection_failure(exc, host="db.internal", port=5432)
        assert stage.stage == "TCP connect" and explain.PEER_SILENT_ADVICE in stage.advice
    handshake = explain.no_handshake(PEER, "198.18.0.1:51820", refused=True)
    stage = classify_connection_failure(HandshakeTimeoutError(str(handshake), explanation=handshake),
                                        host="db.internal", port=5432)
    assert stage.stage == "handshake" and handshake.fault in str(stage)
    refused = explain.connection_refused("db.internal", 5439)
    assert classify_connection_failure(ConnectionRefusedError(str(refused)), host="db.internal",
                                       port=5439).stage == "TCP connect"


# ---- the transport hook ---------------------------------------------------------------------------------------
def test_both_transports_offer_the_whole_interface():
    members = [name for name in dir(Transport) if not name.startswith("_")]
    members += list(getattr(Transport, "__annotations__", {}))
    assert {"kind", "state", "last_error", "describe", "outer_stalled", "open", "send", "close",
            "local_port", "receive"} <= set(members)
    loop = asyncio.new_event_loop()
    try:
        udp = UdpTransport(loop, 0, lambda *a: None, lambda now: None, lambda: None, Counter())
        ws = WebSocketTransport(loop, "ws://relay.example/wg", ("198.18.0.1", 51820), lambda *a: None,
                                lambda now: None, Counter())
        for transport in (udp, ws):
            for name in set(members):
                assert hasattr(transport, name), (type(transport).__name__, name)
        assert (udp.kind, udp.describe(), udp.outer_stalled(), udp.last_error) == ("udp", "UDP", False, None)
        assert ws.kind == "websocket" and ws.outer_stalled() is False  # not connected: nothing to repair
        assert udp.state == "closed" and ws.state == "closed"
    finally:
        loop.close()


def test_the_runtime_asks_the_transport_through_its_interface_only():
    """No getattr/hasattr probing of a transport in the runtime: what it may ask is `Transport`'s."""
    for path in (PACKAGE / "runtime").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                    and node.func.id in ("getattr", "hasattr") and node.args:
                target = ast.unparse(node.args[0])
                assert not target.endswith("transport"), f"{path.name}:{node.lineno}: {ast.unparse(node)}"


def test_the_dead_peer_and_cancel_sentences():
    text = explain.peer_not_answering("A" * 43 + "=", "[fd00::1]:51820", 31.4)
    assert "AAAAAAAA..." in text and "A" * 9 not in text and "[fd00::1]:51820" in text and "31 s" in text
    assert "not answering" in explain.connection_lost(text)
    assert "may still be running" in explain.cancel_unconfirmed(None)
    assert "stopped the query" not in explain.cancel_unconfirmed("timeout")
