"""`--via fly`, fly+wss:// URLs and `auto` for a Fly.io gateway (issue 23 item 1); the WebSocket transport's
proxy choice read as curl reads it and its failure messages naming the party that failed (item 6)."""

from __future__ import annotations

import ipaddress
import socket
import ssl

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wgmagic.config import parse_config
from wgmagic.errors import ConfigError
from wgmagic.via import Via, ViaMode, check_url, choose_via, fly_url, is_fly_gateway, parse_via, split_framing

KEY = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="
PEER = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
# Shaped as `fly wireguard create` writes it (documentation addresses in Fly's 6PN; never dialled here).
FLY_CONFIG = f"""[Interface]
PrivateKey = {KEY}
Address = fdaa:0:1234:a7b:9c1:0:a:102/120
DNS = fdaa:0:1234::3

[Peer]
PublicKey = {PEER}
AllowedIPs = fdaa:0:1234::/48
Endpoint = ord1.gateway.6pn.dev:51820
PersistentKeepalive = 15
"""


def peer_of(text: str):
    return parse_config(text).peers[0]


def test_fly_url_forms() -> None:
    assert parse_via("fly") == Via(ViaMode.FLY)
    assert parse_via("FLY+WSS://gw.example/") == Via("websocket", "FLY+WSS://gw.example/")
    assert parse_via("fly+ws://198.18.0.1:8080/") .framing == "fly"
    assert parse_via("auto fly+wss://gw/").framing == "fly" and parse_via("auto fly+wss://gw/").mode is ViaMode.AUTO
    assert parse_via("wss://gw/wg").framing == "binary" and Via("udp").framing == "binary"
    assert split_framing("fly+wss://u:p@h:444/x") == ("fly", "wss://u:p@h:444/x")
    assert split_framing("wss://h/") == ("binary", "wss://h/")
    for bad in ("fly+http://h/", "morse+wss://h/", "fly+wss://", "fly wss://h/", "binary+wss://h/"):
        with pytest.raises(ValueError):
            parse_via(bad)
    assert fly_url("ord1.gateway.6pn.dev") == "fly+wss://ord1.gateway.6pn.dev:443/"
    assert fly_url("fdaa::1") == "fly+wss://[fdaa::1]:443/" and check_url(fly_url("[fdaa::1]"))
    assert str(Via(ViaMode.FLY)) == "fly"
    assert "s3cret" not in str(parse_via("fly+wss://a:s3cret@h/"))


@given(st.text(max_size=80))
def test_split_framing_and_check_url_take_any_text(text: str) -> None:
    framing, plain = split_framing(text)
    assert framing in ("binary", "fly") and (plain == text or framing == "fly")
    try:
        check_url(text)
    except ValueError:
        pass


def test_fly_takes_the_gateway_from_the_endpoint() -> None:
    peer = peer_of(FLY_CONFIG)
    chosen = choose_via("fly", None, environ={}, peer=peer)
    assert chosen == Via("websocket", "fly+wss://ord1.gateway.6pn.dev:443/")
    assert chosen.framing == "fly" and chosen.ca_file is None
    # from the environment and from the config's comment alike, and with a CA file to verify with
    assert choose_via(None, None, environ={"WGMAGIC_VIA": "fly"}, peer=peer).url == chosen.url
    assert choose_via(None, "fly", environ={"WGMAGIC_VIA_CA": "/ca.pem"}, peer=peer).ca_file == "/ca.pem"
    with_comment = FLY_CONFIG.replace("Endpoint", "#@wgmagic Via = fly\nEndpoint")
    assert peer_of(with_comment).via == "fly"
    # without an Endpoint there is no host to take: say so, naming the source
    no_endpoint = peer_of(FLY_CONFIG.replace("Endpoint = ord1.gateway.6pn.dev:51820\n", ""))
    with pytest.raises(ConfigError) as info:
        choose_via(None, None, environ={"WGMAGIC_VIA": "fly"}, peer=no_endpoint)
    assert "WGMAGIC_VIA" in str(info.value) and "Endpoint" in str(info.value)
    with pytest.raises(ConfigError):
        choose_via("fly", None, environ={})


def test_auto_uses_fly_for_a_fly_gateway_only() -> None:
    fly = peer_of(FLY_CONFIG)
    assert choose_via("auto", None, environ={}, peer=fly) == Via("auto", "fly+wss://ord1.gateway.6pn.dev:443/")
    # an explicit URL still wins
    assert choose_via("auto", "wss://relay/wg", environ={}, peer=fly).url == "wss://relay/wg"
    # a gateway named under gateway.6pn.dev, whatever its AllowedIPs; or a 6PN peer at an address
    by_name = peer_of(FLY_CONFIG.replace("AllowedIPs = fdaa:0:1234::/48", "AllowedIPs = 198.18.0.0/24"))
    assert choose_via("auto", None, environ={}, peer=by_name).framing == "fly"
    by_6pn = peer_of(FLY_CONFIG.replace("ord1.gateway.6pn.dev", "[2001:db8::7]"))
    assert choose_via("auto", None, environ={}, peer=by_6pn).url == "fly+wss://[2001:db8::7]:443/"
    other = peer_of(FLY_CONFIG.replace("ord1.gateway.6pn.dev", "vpn.example.com").replace(
        "fdaa:0:1234::/48", "fd77:6d61:6769::/48"))
    assert choose_via("auto", None, environ={}, peer=other) == Via("auto", None)


def test_is_fly_gateway() -> None:
    net = ipaddress.ip_network
    assert is_fly_gateway("ams.gateway.6pn.dev") and is_fly_gateway("GATEWAY.6pn.dev.")
    assert not is_fly_gateway("evilgateway.6pn.dev") and not is_fly_gateway("gateway.6pn.dev.example")
    assert is_fly_gateway(None, [net("fdaa:0:1::/48")]) and is_fly_gateway("h", ["fdaa::/16"])
    assert not is_fly_gateway("h", [net("fdaa::/15")]) and not is_fly_gateway("h", [])
    assert not is_fly_gateway("h", [net("fdaa:0:1::/48"), net("0.0.0.0/0")])


# ---- item 6: the proxy the transport uses, and who is blamed -------------------------------------------------
@pytest.fixture
def clean_proxy_env(monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "no_proxy", "NO_PROXY", "all_proxy",
                 "ALL_PROXY", "REQUEST_METHOD"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize("no_proxy, direct", [
    ("198.18.0.0/15", True), ("198.18.5.9", True), ("198.18.5.9:8443", True), ("198.18.5.9:80", False),
    ("*", True), (".example.com", False), ("10.0.0.0/8", False), ("", False),
])
def test_the_transport_reads_no_proxy_as_curl(clean_proxy_env, no_proxy: str, direct: bool) -> None:
    from wgmagic.runtime.wsconnect import proxy_for

    clean_proxy_env.setenv("HTTPS_PROXY", "http://u:p@proxy.example:3128")
    clean_proxy_env.setenv("NO_PROXY", no_proxy)
    expected = None if direct else "http://u:p@proxy.example:3128"
    assert proxy_for("wss://198.18.5.9:8443/wg") == expected
    assert proxy_for("fly+wss://198.18.5.9:8443/") == expected  # the framing prefix is not the scheme
    clean_proxy_env.setenv("NO_PROXY", "relay.example.com")
    assert proxy_for("fly+wss://db.relay.example.com/") is None


def test_ws_urls_use_http_proxy(clean_proxy_env) -> None:
    from wgmagic.runtime.wsconnect import proxy_for

    clean_proxy_env.setenv("HTTPS_PROXY", "http://secure:3128")
    clean_proxy_env.setenv("HTTP_PROXY", "plain:8080")
    assert proxy_for("ws://h/wg") == "http://plain:8080" and proxy_for("wss://h/wg") == "http://secure:3128"


def test_failures_name_the_party_that_failed() -> None:
    from wgmagic.runtime.wsconnect import describe_failure

    proxy = "http://alice:s3cret@proxy.example:3128"
    refused = describe_failure(ConnectionRefusedError(111, "Connection refused"), "wss://gw.example/wg", proxy)
    assert "HTTP proxy proxy.example:3128 refused the connection" in refused
    assert "relay" not in refused and "s3cret" not in refused and "NO_PROXY" in refused
    unresolved = describe_failure(socket.gaierror(-2, "Name or service not known"), "wss://gw.example/wg", proxy)
    assert "proxy" in unresolved and "s3cret" not in unresolved
    unreachable = describe_failure(OSError(113, "No route to host"), "wss://gw.example/wg", proxy)
    assert "HTTP proxy proxy.example:3128" in unreachable and "No route to host" in unreachable
    # no proxy: the server is named as what it is
    assert "is the relay running?" in describe_failure(ConnectionRefusedError(111, "x"), "wss://gw.example/wg", None)
    fly = describe_failure(ConnectionRefusedError(111, "x"), "fly+wss://gw.example:443/", None,
                           server="the Fly gateway")
    assert fly == "nothing accepts connections at gw.example:443: is the Fly gateway running?"
    tls = describe_failure(ssl.SSLError(1, "handshake failure"), "fly+wss://[fdaa::1]:443/", None)
    assert "TLS with [fdaa::1]:443 failed" in tls


def test_fly_tls_is_unverified_unless_a_ca_is_given(tmp_path) -> None:
    from tests.testbed.tls import write_ca_and_server_cert
    from wgmagic.runtime.wsconnect import tls_context

    assert tls_context(None, verify=False).verify_mode == ssl.CERT_NONE
    assert tls_context(None).verify_mode == ssl.CERT_REQUIRED and tls_context(None).check_hostname
    ca, _, _ = write_ca_and_server_cert(tmp_path, ["gw.example"], [])
    given_ca = tls_context(str(ca), verify=False)
    assert given_ca.verify_mode == ssl.CERT_REQUIRED and given_ca.check_hostname
