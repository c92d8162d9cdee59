"""The tunnel host's side of its protocol (runtime/host.py) without a tunnel: any bytes a process sends get an
answer or a closed connection, never an exception in the host; requests and answers are bounded; the host ends
once nobody is attached; a config survives the trip to the host's stdin; errors come back as their own class."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wgmagic import errors
from wgmagic.config import parse_config
from wgmagic.runtime import host
from wgmagic.runtime.hosted import _error, not_shared_text

KEY = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="
PEER = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="


class StubTunnel:
    """What Host asks of a Tunnel, answering from fixed data (or raising what a tunnel raises)."""

    name = "stub"
    transport_description = "UDP"

    def url(self, dsn: str, *, local: str = "auto") -> str:
        if "nohost" in dsn:
            raise errors.NameNotFoundError("nohost: no such name")
        return dsn.replace("@db", "@127.0.0.1")

    def resolve_addresses(self, host_name: str) -> list[Any]:
        return [ipaddress.ip_address("198.18.0.1")]

    def stats(self) -> dict[str, object]:
        return {"name": "stub", "endpoint": ("198.18.0.1", 51820), "totals": {"drops": 0}}

    def peer_report(self) -> list[dict[str, object]]:
        return [{"fingerprint": "xTIBA5rb", "handshake_age": 1.0}]

    def history(self, window: float | None = None) -> list[dict[str, object]]:
        return [{"t": 0.0}]

    def wait_handshake(self, timeout: float = 10.0) -> float | None:
        return None

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise OSError("no listener in this test")

    def close_forward(self, forward: Any) -> None:
        pass

    def open_connection(self, host_name: str, port: int, timeout: float | None = None) -> socket.socket:
        raise errors.NoRouteError(f"no route to {host_name}")


def config() -> Any:
    return parse_config(f"[Interface]\nPrivateKey = {KEY}\nAddress = 198.18.0.11/32\n\n"
                        f"[Peer]\nPublicKey = {PEER}\nEndpoint = 198.18.0.2:51820\nAllowedIPs = 198.18.0.0/24\n")


def the_host(listener: socket.socket | None = None) -> host.Host:
    return host.Host(StubTunnel(), config(), listener or socket.socket(socket.AF_UNIX))  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_line_gets_an_answer_never_an_exception(line):
    answer, fds = the_host().answer(line, {})
    assert isinstance(answer, dict) and fds == []
    json.dumps(answer, default=str)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["op", "dsn", "local", "host", "port", "timeout", "window", "id", "target",
                                        "protocol", "clients"]),
                       st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20),
                                 st.sampled_from(["url", "forward", "close_forward", "open", "resolve", "stats",
                                                  "peers", "history", "handshake", "status", "hello"]),
                                 st.lists(st.integers(), max_size=3))))
def test_any_request_object_gets_an_answer(request_object):
    answer, fds = the_host().answer(json.dumps(request_object).encode(), {})
    assert isinstance(answer, dict) and fds == []
    if "error" in answer:
        assert set(answer) == {"error", "message"} and len(answer["message"]) <= 2000


def test_answers_name_the_error_and_come_back_as_its_class():
    h = the_host()
    answer, _ = h.answer(b'{"op": "url", "dsn": "postgresql://a@nohost/x"}', {})
    assert answer["error"] == "NameNotFoundError"
    assert isinstance(_error(answer["error"], answer["message"]), errors.NameNotFoundError)
    answer, _ = h.answer(b'{"op": "open", "host": "db", "port": 5432}', {})
    assert isinstance(_error(answer["error"], answer["message"]), errors.NoRouteError)
    assert isinstance(_error("ValueError", "x"), ValueError)
    assert isinstance(_error("SystemExit", "x"), errors.WgMagicError)  # never a class the host merely names
    assert h.answer(b'{"op": "url", "dsn": "postgresql://a@db/x"}', {})[0] == {"url": "postgresql://a@127.0.0.1/x"}
    assert h.answer(b'{"op": "stats"}', {})[0]["name"] == "stub"
    assert h.answer(b'{"op": "open", "host": "db", "port": 5432, "timeout": 1e9}', {})[0]["error"] == "ValueError"


def test_a_host_bounds_requests_and_ends_once_nobody_is_attached(tmp_path, monkeypatch):
    monkeypatch.setattr(host, "GRACE", 0.2)
    path = str(tmp_path / "h.host")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(4)
    h = the_host(listener)
    runner = threading.Thread(target=h.run, daemon=True)
    with socket.socket(socket.AF_UNIX) as client:
        client.connect(path)
        runner.start()
        client.sendall(b'not json\n{"op": "status"}\n')
        reader = client.makefile("rb")
        assert json.loads(reader.readline())["error"] == "JSONDecodeError"
        assert json.loads(reader.readline())["holders"] == 1
        client.sendall(b"x" * (host.MAX_REQUEST + 1))  # a request longer than the bound: the host hangs up
        assert reader.readline() == b""
    runner.join(timeout=30)
    assert not runner.is_alive()  # nobody attached for GRACE: run() returned
    listener.close()


def test_the_config_reaches_the_host_unchanged():
    text = (f"[Interface]\nPrivateKey = {KEY}\nAddress = 198.18.0.11/32, fd77::b/128\nDNS = 198.18.0.1, "
            f"internal, corp.example\nMTU = 1380\nListenPort = 51999\n\n[Peer]\nPublicKey = {PEER}\n"
            f"PresharedKey = {KEY}\nEndpoint = [fd00::2]:51820\nAllowedIPs = 198.18.0.0/24, fd77::/64\n"
            "PersistentKeepalive = 15\n#@wgmagic Via = auto wss://relay.example/wg\n")
    original = parse_config(text)
    again = parse_config(host.config_text(original))
    assert again.interface == original.interface and again.peers == original.peers
    assert host.config_digest(again) == host.config_digest(original)
    assert KEY not in host.config_digest(original)


def test_the_not_shared_advice_fits_who_reads_it():
    python = not_shared_text("123", PEER, notebook=False)
    notebook = not_shared_text("123", PEER, notebook=True)
    assert "share=True" in python and "%wg" not in python
    assert "%wg connect CONFIG --share" in notebook and "share=True" not in notebook
    assert PEER not in python and PEER[:8] in python


@pytest.mark.skipif(not hasattr(socket, "SO_PEERCRED"), reason="SO_PEERCRED is Linux's")
def test_peer_uid_is_ours_over_a_socketpair():
    a, b = socket.socketpair()
    with a, b:
        assert host.peer_uid(a) == os.getuid()
