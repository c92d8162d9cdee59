"""NO_PROXY and the proxy variables read as curl reads them (issue 23 item 6): CIDR entries, `.domain`, `*`,
ports (as Go reads them) and IPv6 literals; every value here is what curl (or Go, for ports) does."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wgmagic.addresses import no_proxy_matches, proxy_from_environment


@pytest.mark.parametrize(("host", "port", "no_proxy", "bypass"), [
    ("127.0.0.1", 8080, "127.0.0.0/8", True),
    ("10.1.2.3", 443, "10.0.0.0/8", True),
    ("11.1.2.3", 443, "10.0.0.0/8", False),
    ("192.168.1.9", 443, "localhost, 192.168.0.0/16", True),
    ("fd00::5", 443, "fd00::/8", True),
    ("[fd00::5]", 443, "fd00::/8", True),
    ("::1", 443, "[::1]", True),
    ("::1", 443, "::1", True),
    ("::2", 443, "[::1]", False),
    ("fd00::5", 443, "10.0.0.0/8", False),
    ("example.com", 443, "example.com", True),
    ("db.example.com", 443, "example.com", True),
    ("db.example.com", 443, ".example.com", True),
    ("example.com", 443, ".example.com", True),
    ("badexample.com", 443, "example.com", False),
    ("DB.Example.COM", 443, "example.com", True),
    ("example.com.", 443, "example.com", True),
    ("anything.at.all", 443, "*", True),
    ("example.com", 443, "*.example.com", True),
    ("example.com", 443, "example.com:443", True),
    ("example.com", 8443, "example.com:443", False),
    ("fd00::1", 443, "[fd00::1]:443", True),
    ("fd00::1", 80, "[fd00::1]:443", False),
    ("10.0.0.1", 443, "10.0.0.1", True),
    ("10.0.0.1", 443, "ten.example, , 10.0.0.1", True),
    ("ten.example", 443, "10.0.0.0/8", False),   # a name never matches an address entry (no DNS)
    ("example.com", 443, "", False),
    ("example.com", 443, "not a/valid entry", False),
])
def test_no_proxy_as_curl_reads_it(host: str, port: int, no_proxy: str, bypass: bool) -> None:
    assert no_proxy_matches(host, port, no_proxy) is bypass


def test_proxy_variables_per_scheme() -> None:
    env = {"HTTPS_PROXY": "http://u:p@proxy.test:3128", "http_proxy": "proxy.test:3129"}
    assert proxy_from_environment("wss://gw.example/wg", env) == "http://u:p@proxy.test:3128"
    assert proxy_from_environment("ws://gw.example/wg", env) == "http://proxy.test:3129"
    assert proxy_from_environment("wss://gw.example/wg", {**env, "NO_PROXY": "gw.example"}) is None
    assert proxy_from_environment("wss://127.0.0.1:8443/wg", {**env, "no_proxy": "127.0.0.0/8"}) is None
    # the httpoxy rule: under CGI the upper-case HTTP_PROXY comes from a request header, never trusted
    assert proxy_from_environment("ws://gw.example/", {"HTTP_PROXY": "http://evil:1", "REQUEST_METHOD": "GET"}) is None
    assert proxy_from_environment("wss://gw.example/", {"ALL_PROXY": "http://all.test:1"}) == "http://all.test:1"
    assert proxy_from_environment("wss://gw.example/", {}) is None
    assert proxy_from_environment("file:///x", env) is None


@given(st.ip_addresses(), st.integers(min_value=0, max_value=128))
def test_cidr_entry_matches_exactly_the_network(address: ipaddress.IPv4Address | ipaddress.IPv6Address,
                                                length: int) -> None:
    length = min(length, address.max_prefixlen)
    network = ipaddress.ip_network(f"{address}/{length}", strict=False)
    assert no_proxy_matches(str(address), 443, str(network))
    outside = network.broadcast_address + 1 if network.broadcast_address != ipaddress.ip_address(
        (1 << address.max_prefixlen) - 1 if address.version == 6 else "255.255.255.255") else None
    if outside is not None and outside not in network:
        assert not no_proxy_matches(str(outside), 443, str(network))


@given(st.text(max_size=40), st.text(max_size=80), st.integers(min_value=0, max_value=65535))
def test_never_raises(host: str, no_proxy: str, port: int) -> None:
    assert no_proxy_matches(host, port, no_proxy) in (True, False)
