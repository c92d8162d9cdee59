"""How a tunnel reaches its peer (issue 13): `via` text, the `#@wgmagic Via` comment, masking, proxies."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wgmagic.config import parse_config
from wgmagic.errors import ConfigError
from wgmagic.via import Via, choose_via, mask_url, parse_via

KEY = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="
PEER = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="


def config(peer_extra: str = "", interface_extra: str = "") -> str:
    return (f"[Interface]\nPrivateKey = {KEY}\n{interface_extra}\n[Peer]\nPublicKey = {PEER}\n{peer_extra}"
            "Endpoint = 192.0.2.1:51820\nAllowedIPs = 198.18.0.0/24\n")


def test_parse_via_forms() -> None:
    assert parse_via("udp") == Via("udp")
    assert parse_via("wss://gw.example.com/wg") == Via("websocket", "wss://gw.example.com/wg")
    assert parse_via("ws://127.0.0.1:8080/wg") == Via("websocket", "ws://127.0.0.1:8080/wg")
    assert parse_via("auto") == Via("auto", None)
    assert parse_via("AUTO wss://h/wg") == Via("auto", "wss://h/wg")
    for bad in ("", "http://h/wg", "wss://", "tcp", "auto x y", "udp wss://h/"):
        with pytest.raises(ValueError):
            parse_via(bad)


@given(st.text(max_size=200))
def test_parse_via_only_raises_value_error(text: str) -> None:
    try:
        parse_via(text)
    except ValueError as exc:
        assert "s3cret" not in str(exc) or "s3cret" not in text


def test_secrets_never_shown() -> None:
    url = "wss://alice:s3cret@gw.example.com:8443/wg"
    assert mask_url(url) == "wss://alice:***@gw.example.com:8443/wg"
    assert "s3cret" not in str(parse_via(url)) and "s3cret" not in repr(parse_via(url))
    with pytest.raises(ValueError) as info:
        parse_via("http://alice:s3cret@gw/wg")
    assert "s3cret" not in str(info.value)
    parsed = parse_config(config(f"#@wgmagic Via = {url}\n"))
    assert parsed.peers[0].via == url and "s3cret" not in repr(parsed.peers[0])


def test_choose_via_precedence() -> None:
    env = {"WGMAGIC_VIA": "ws://env/wg"}
    assert choose_via("wss://arg/wg", "ws://conf/wg", environ=env).url == "wss://arg/wg"
    assert choose_via(None, "ws://conf/wg", environ=env).url == "ws://env/wg"
    assert choose_via(None, "ws://conf/wg", environ={}) == Via("websocket", "ws://conf/wg")
    assert choose_via(None, None, environ={}) == Via("udp")
    # auto takes its URL from the next source down
    assert choose_via("auto", "ws://conf/wg", environ={}) == Via("auto", "ws://conf/wg")
    assert choose_via("auto", None, environ=env) == Via("auto", "ws://env/wg")
    assert choose_via(None, None, environ={"WGMAGIC_VIA_CA": "/ca.pem", "WGMAGIC_VIA": "wss://h/"}).ca_file == "/ca.pem"
    with pytest.raises(ConfigError) as info:
        choose_via(None, None, environ={"WGMAGIC_VIA": "ftp://h"})
    assert "WGMAGIC_VIA" in str(info.value)


def test_marked_comment_in_the_config() -> None:
    parsed = parse_config(config("#@wgmagic Via = auto wss://gw.example.com/wg\n"))
    assert parsed.peers[0].via == "auto wss://gw.example.com/wg"
    assert parse_config(config()).peers[0].via is None
    assert parse_config(config("# an ordinary comment: Via = nothing\n")).peers[0].via is None
    with pytest.raises(ConfigError) as info:
        parse_config(config("#@wgmagic Via = gopher://x\n"))
    assert info.value.line == 6
    with pytest.raises(ConfigError):
        parse_config(config("#@wgmagic Colour = blue\n"))
    with pytest.raises(ConfigError):
        parse_config(config(interface_extra="#@wgmagic Via = wss://h/wg\n"))
    with pytest.raises(ConfigError):
        parse_config(config("#@wgmagic Via = wss://h/wg\n#@wgmagic Via = wss://h/wg\n"))


def test_proxy_from_environment(monkeypatch) -> None:
    from wgmagic.runtime.wsconnect import proxy_for

    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "no_proxy", "NO_PROXY", "all_proxy",
                 "ALL_PROXY", "ws_proxy", "wss_proxy", "socks_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert proxy_for("wss://gw.example.com/wg") is None
    monkeypatch.setenv("HTTPS_PROXY", "http://u:p@proxy.example:3128")
    assert proxy_for("wss://gw.example.com/wg") == "http://u:p@proxy.example:3128"
    monkeypatch.setenv("NO_PROXY", "gw.example.com")
    assert proxy_for("wss://gw.example.com/wg") is None
    assert proxy_for("wss://other.example.com/wg") == "http://u:p@proxy.example:3128"


def test_proxy_refusals_are_named_without_credentials() -> None:
    from websockets.datastructures import Headers
    from websockets.exceptions import InvalidProxyStatus
    from websockets.http11 import Response

    from wgmagic.runtime.wsconnect import describe_failure

    for status, reason in ((407, "Proxy Authentication Required"), (403, "Forbidden"), (502, "Bad Gateway")):
        error = InvalidProxyStatus(Response(status, reason, Headers()))
        text = describe_failure(error, "wss://gw.example.com/wg", "http://alice:s3cret@proxy.example:3128")
        assert f"HTTP proxy proxy.example:3128 refused to CONNECT to gw.example.com:443: HTTP {status}" in text
        assert "s3cret" not in text


def test_unexpected_failures_never_quote_a_password() -> None:
    from wgmagic.runtime.wsconnect import describe_failure

    text = describe_failure(RuntimeError("bad proxy http://alice:s3cret@proxy:3128"), "wss://u:pw2@h/wg",
                            "http://alice:s3cret@proxy:3128")
    assert "s3cret" not in text and "pw2" not in text and "proxy:3128" in text
