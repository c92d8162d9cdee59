"""Proxy settings read as curl reads them, on the bed (issue 23 item 6): HTTPS_PROXY names the bed's tinyproxy
(Basic authentication), and NO_PROXY in each of curl's forms (CIDR, an address, .domain, a bare domain, *, a
port, IPv6 literals and networks) either covers the relay, and the client goes to it directly (tinyproxy's log
shows no CONNECT), or does not, and the client goes through the proxy. A dead proxy is named as what failed.

The client runs in the bed's UDP-blocked namespace (tests/testbed/wsclient.py); `wgmagic relay` serves wss://
on the host end of that namespace's veth, over IPv4 and over an IPv6 address of the bed's own prefix added to the
veth for this module; the name relay.wgmagic.test resolves there through the namespace's own hosts file
(/etc/netns/NAME/hosts, which `ip netns exec` mounts over /etc/hosts).
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.test_websocket import client, write_config
from tests.testbed import wsbed
from tests.testbed.tls import write_ca_and_server_cert

pytestmark = pytest.mark.integration

NAME = "relay.wgmagic.test"


@dataclass
class ProxyBed:
    blocked: object
    ca: Path
    v4_url: str
    v6_url: str
    name_url: str
    v4: str
    v6: str
    relay_port: int
    proxy: str  # the HTTPS_PROXY value, with credentials
    password: str
    proxy_log: Path
    config: str

    def connects(self) -> list[str]:
        """The CONNECT requests tinyproxy logged so far."""
        text = self.proxy_log.read_text() if self.proxy_log.exists() else ""
        return [line for line in text.splitlines() if "CONNECT " in line and "Request" in line]


def _ip(*args: str, ns: str | None = None) -> None:
    command = (["ip", "netns", "exec", ns] if ns else []) + ["ip", *args]
    subprocess.run(command, check=True, capture_output=True, text=True)


@pytest.fixture(scope="module")
def bed(testbed, tmp_path_factory):
    blocked = testbed.blocked_namespace()
    home = tmp_path_factory.mktemp("noproxy")
    # An IPv6 /96 of the bed's own prefix on the veth (no duplicate address detection: usable at once).
    v6_net = f"fd77:6d61:6769:63fe:{random.randrange(1, 0xFFFF):x}"
    v6, v6_ns = f"{v6_net}::1", f"{v6_net}::2"
    ns_if = blocked.host_if.replace("wgmtv", "wgmtn", 1)
    _ip("-6", "addr", "add", f"{v6}/96", "dev", blocked.host_if, "nodad")
    _ip("-6", "addr", "add", f"{v6_ns}/96", "dev", ns_if, "nodad", ns=blocked.name)
    hosts_dir = Path("/etc/netns") / blocked.name
    hosts_dir.mkdir(parents=True, exist_ok=True)
    (hosts_dir / "hosts").write_text(f"127.0.0.1 localhost\n{blocked.host_ip} {NAME}\n")
    ca, cert, key = write_ca_and_server_cert(home, [NAME], [blocked.host_ip, v6])
    relay4 = wsbed.relay_process(home, blocked.host_ip, testbed.port, tls=(cert, key))
    relay6 = wsbed.relay_process(home, f"[{v6}]", testbed.port, tls=(cert, key))
    password = "pw-" + os.urandom(6).hex()
    proxy_home = home / "proxy"
    proxy_home.mkdir()
    proxy, proxy_port = wsbed.start_tinyproxy(proxy_home, blocked.host_ip, "alice", password)
    testbed.processes.append(proxy)
    (log,) = proxy_home.glob("tinyproxy-*/tinyproxy.log")
    config = write_config(testbed, blocked, name="noproxy.conf")
    try:
        yield ProxyBed(blocked, ca, relay4.url, relay6.url, relay4.url.replace(blocked.host_ip, NAME, 1),
                       blocked.host_ip, v6, relay4.port, f"http://alice:{password}@{blocked.host_ip}:{proxy_port}",
                       password, log, config)
    finally:
        relay4.stop()
        relay6.stop()
        proxy.kill()
        proxy.wait(10)
        shutil.rmtree(hosts_dir, ignore_errors=True)


def run_client(bed: ProxyBed, url: str, no_proxy: str | None, proxy: str | None = None) -> dict:
    env = {"HTTPS_PROXY": proxy or bed.proxy, "WGMAGIC_VIA_CA": str(bed.ca)}
    if no_proxy is not None:
        env["NO_PROXY"] = no_proxy
    report = client(bed.blocked, "connect", bed.config, url, env=env)
    assert bed.password not in report["_output"]
    return report


# (which URL, NO_PROXY) pairs that cover the relay: the client goes directly.
COVERING = [
    ("v4", "198.18.0.0/15"),  # CIDR
    ("v4", "localhost, {v4}"),  # an address among others, comma and space
    ("v4", "*"),  # everything
    ("v4", "{v4}:{port}"),  # address and the relay's port
    ("name", f".{NAME.split('.', 1)[1]}"),  # .domain: every name under it
    ("name", NAME.split(".", 1)[1]),  # a bare domain: itself and every name under it
    ("name", f"{NAME}:{{port}}"),  # a name with the port
    ("v6", "[{v6}]"),  # an IPv6 literal in brackets
    ("v6", "{v6}"),  # ... and without
    ("v6", "fd77:6d61:6769:63fe::/64"),  # an IPv6 network
    ("v6", "[{v6}]:{port6}"),  # an IPv6 literal with the port
]
# ... and that do not: the client goes through the proxy (CONNECT to the relay).
NOT_COVERING = [
    ("v4", "10.0.0.0/8"),  # another network
    ("v4", "{v4}:1"),  # another port
    ("v4", f".{NAME.split('.', 1)[1]}"),  # a domain never matches an address
    ("v4", "198.18.0.0/24"),  # a network next to it
    ("v6", "fd77:6d61:6769:6300::/64"),  # another IPv6 network
    ("v4", "fd77:6d61:6769:63fe::/64"),  # an IPv6 network never matches an IPv4 address
]


def _form(bed: ProxyBed, which: str, no_proxy: str) -> tuple[str, str]:
    url = {"v4": bed.v4_url, "v6": bed.v6_url, "name": bed.name_url}[which]
    port6 = int(bed.v6_url.rsplit(":", 1)[1].split("/", 1)[0])
    return url, no_proxy.format(v4=bed.v4, v6=bed.v6, port=bed.relay_port, port6=port6)


@pytest.mark.parametrize("which, no_proxy", COVERING)
def test_no_proxy_covering_the_relay_goes_direct(bed, which, no_proxy):
    url, no_proxy = _form(bed, which, no_proxy)
    before = len(bed.connects())
    report = run_client(bed, url, no_proxy)
    assert report["ok"], report
    assert "proxy" not in report["transport"], report["transport"]
    assert bed.connects()[before:] == [], "the proxy saw a CONNECT"


@pytest.mark.parametrize("which, no_proxy", NOT_COVERING)
def test_no_proxy_not_covering_goes_through_the_proxy(bed, which, no_proxy):
    url, no_proxy = _form(bed, which, no_proxy)
    before = len(bed.connects())
    report = run_client(bed, url, no_proxy)
    assert report["ok"], report
    assert "through the HTTP proxy" in report["transport"], report["transport"]
    seen = bed.connects()[before:]
    assert seen, "no CONNECT reached the proxy"


def test_a_dead_proxy_is_named_not_the_relay(bed):
    dead_port = wsbed.free_tcp_port(bed.v4)  # nothing listens there
    report = run_client(bed, bed.v4_url, None, proxy=f"http://alice:{bed.password}@{bed.v4}:{dead_port}")
    assert not report["ok"] and report["error"] == "TransportError", report
    message = report["message"]
    assert f"HTTP proxy {bed.v4}:{dead_port} refused the connection" in message, message
    assert "relay running" not in message
