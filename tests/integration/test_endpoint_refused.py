"""An Endpoint where nothing listens on the UDP port: connect fails at once with PortUnreachableError, not after
the handshake timeout (ssh and curl say "connection refused" at once too).

The bed's peer namespace is joined to this machine's root namespace by a veth pair with a /30 from
198.18.64.0/18 (used nowhere else by the bed); the Endpoint is the namespace's end of it at a UDP port nothing
there listens on, so that namespace's kernel answers each handshake initiation with ICMP port unreachable.
"""

from __future__ import annotations

import contextlib
import sys
import time

import pytest

from tests.integration.helpers import magic_shell
from tests.testbed.bed import run
from tests.testbed.wsbed import free_slash30
from wgmagic.errors import HandshakeTimeoutError, PortUnreachableError
from wgmagic.runtime.tunnel import connect

pytestmark = pytest.mark.integration
IDENTITY = 3
TIMEOUT = 60.0  # the handshake timeout the refusal has to beat (seconds; generous, never asserted)


@contextlib.contextmanager
def veth_to_peer_namespace(testbed):
    """(host end's address, namespace end's address) of a veth from the root namespace into the bed's peer's."""
    host_if, ns_if = f"wgmtx{testbed.id}", f"wgmty{testbed.id}"
    host_ip, ns_ip = free_slash30(range(64, 128), "the veth")
    try:
        run("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        run("ip", "link", "set", ns_if, "netns", testbed.ns)
        run("ip", "addr", "add", f"{host_ip}/30", "dev", host_if)
        run("ip", "link", "set", host_if, "up")
        run("ip", "addr", "add", f"{ns_ip}/30", "dev", ns_if, ns=testbed.ns)
        run("ip", "link", "set", ns_if, "up", ns=testbed.ns)
        yield host_ip, ns_ip
    finally:
        run("ip", "link", "del", host_if, check=False)  # its pair in the namespace goes with it


def closed_udp_port(testbed, address: str) -> int:
    """A UDP port on `address` in the bed's peer namespace that nothing listens on (the kernel's choice, freed)."""
    probe = ("import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
             f"s.bind(({address!r}, 0)); print(s.getsockname()[1]); s.close()")
    port = int(run(sys.executable, "-c", probe, ns=testbed.ns).stdout)
    listening = run("ss", "-Hulnp", f"sport = :{port}", ns=testbed.ns).stdout.strip()
    assert not listening, listening
    return port


def test_connect_to_a_closed_udp_port_fails_at_once_saying_so(testbed):
    with veth_to_peer_namespace(testbed) as (_host_ip, ns_ip):
        port = closed_udp_port(testbed, ns_ip)
        config = testbed.client_config(endpoint=f"{ns_ip}:{port}", identity=IDENTITY)
        started = time.monotonic()
        with pytest.raises(PortUnreachableError) as caught:
            connect(config, timeout=TIMEOUT)
        took = time.monotonic() - started
        print(f"connect to {ns_ip}:{port} (nothing listens) raised PortUnreachableError after {took:.2f} s "
              f"(handshake timeout {TIMEOUT:g} s)")
    error = caught.value
    text = str(error)
    assert isinstance(error, HandshakeTimeoutError)  # what callers catch today still catches it
    assert f"{ns_ip}:{port} refused (ICMP port unreachable: nothing listens on that UDP port)" in text, text
    assert "port in the config" in text and "WireGuard is running on the peer" in text and "%wg doctor" in text
    assert "gave up after" not in text  # not the timeout's message
    assert error.explanation is not None and "nothing listens" in error.explanation.fault
    for private, _public in testbed.clients:
        assert private not in text and private[:8] not in text


def test_a_timeout_shorter_than_the_refusals_still_names_the_refusal(testbed):
    """A handshake timeout that ends the wait before the second refusal (one initiation, then REKEY_TIMEOUT):
    the same class and words as when the refusals end it, plus how long it waited."""
    with veth_to_peer_namespace(testbed) as (_host_ip, ns_ip):
        port = closed_udp_port(testbed, ns_ip)
        config = testbed.client_config(endpoint=f"{ns_ip}:{port}", identity=IDENTITY)
        with pytest.raises(PortUnreachableError) as caught:
            connect(config, timeout=2.0)
    text = str(caught.value)
    assert f"{ns_ip}:{port} refused (ICMP port unreachable" in text and "gave up after 2 s" in text, text


def test_a_normal_connect_to_the_bed_still_works(testbed):
    with connect(testbed.client_config(identity=IDENTITY), timeout=TIMEOUT) as tunnel:
        replies = tunnel.ping("198.18.0.1", count=1, timeout=10)
        assert replies and replies[0].rtt is not None, replies


def test_the_refused_port_through_the_magic(testbed, capsys):
    """`%wg connect` says the same, without a traceback."""
    with veth_to_peer_namespace(testbed) as (_host_ip, ns_ip), magic_shell(testbed) as shell:
        port = closed_udp_port(testbed, ns_ip)
        shell.user_ns["refusing"] = testbed.client_config(endpoint=f"{ns_ip}:{port}", identity=IDENTITY)
        capsys.readouterr()
        started = time.monotonic()
        result = shell.run_cell(f"%wg connect {{refusing}} --name refusing --timeout {TIMEOUT:g}")
        took = time.monotonic() - started
        captured = capsys.readouterr()
        out = captured.out + captured.err
        print(f"%wg connect to {ns_ip}:{port} (nothing listens) failed after {took:.2f} s")
    assert not result.success and "Traceback" not in out, out
    assert "PortUnreachableError" in out and f"{ns_ip}:{port} refused" in out and "%wg doctor" in out, out
    for private, _public in testbed.clients:
        assert private not in out
    assert f"wgmtx{testbed.id}" not in run("ip", "-br", "link").stdout  # the veth went with the test
