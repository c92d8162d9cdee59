"""UDP datagrams bigger than the tunnel's MTU (issue 23 item 5): 2,000-, 8,000- and 65,000-byte datagrams
both ways through a UDP forward and through SOCKS5 UDP ASSOCIATE, to the bed's UDP echo over IPv4 and IPv6.

The peer is wireguard-go with the kernel's networking behind it, so the other end's fragmentation and
reassembly are Linux's: our fragments are reassembled by the kernel (its ReasmOKs count grows) and the
echo's replies come back cut by the kernel to the peer's MTU (its FragCreates count grows), then reassembled
by wgmagic's stack."""

from __future__ import annotations

import os
import socket

import pytest

from tests.integration.helpers import exchange
from tests.integration.test_socks_private import udp_associate, udp_reply, udp_request
from tests.testbed.bed import CLIENT4, CLIENT6, PEER4, PEER6, run
from tests.testbed.services import UDP_ECHO

pytestmark = pytest.mark.integration

SIZES = (2000, 8000, 65000)


def _kernel_fragment_counters(ns: str) -> dict[str, int]:
    """The peer namespace's reassembly and fragmentation counters, IPv4 and IPv6 (/proc/net/snmp, snmp6)."""
    snmp = run("cat", "/proc/net/snmp", ns=ns).stdout.splitlines()
    names, values = (line.split()[1:] for line in snmp if line.startswith("Ip:"))
    counters = {f"Ip{name}": int(value) for name, value in zip(names, values, strict=True)}
    for line in run("cat", "/proc/net/snmp6", ns=ns).stdout.splitlines():
        name, _, value = line.partition(" ")
        if name.startswith("Ip6"):
            counters[name] = int(value.strip())
    return counters


def _stack_counters(tunnel) -> dict[str, int]:
    return tunnel.call_on_loop(lambda: dict(tunnel.runtime_engine.stack.counters))


def _grew(before: dict[str, int], after: dict[str, int], name: str) -> int:
    return after.get(name, 0) - before.get(name, 0)


def _assert_fragmented_both_ways(testbed, tunnel, version: int, kernel_before, stack_before) -> None:
    kernel, stack = _kernel_fragment_counters(testbed.ns), _stack_counters(tunnel)
    reasm, frag = ("IpReasmOKs", "IpFragCreates") if version == 4 else ("Ip6ReasmOKs", "Ip6FragCreates")
    # Each datagram went out in fragments that the kernel put together, and came back in the kernel's.
    assert _grew(kernel_before, kernel, reasm) >= len(SIZES)
    assert _grew(kernel_before, kernel, frag) >= 2 * len(SIZES)
    assert _grew(stack_before, stack, "datagrams_fragmented") >= len(SIZES)
    assert _grew(stack_before, stack, "reassembled") >= len(SIZES)
    drops = tunnel.stats()["stack_drops"]
    assert not {k: v for k, v in drops.items() if "fragment" in k}, drops


@pytest.mark.parametrize("peer", [PEER4, PEER6])
def test_big_datagrams_both_ways_through_a_udp_forward(testbed, tunnel, peer):
    version = 6 if ":" in peer else 4
    host = f"[{peer}]" if version == 6 else peer
    forward = tunnel.forward(f"udp:{host}:{UDP_ECHO}", local=0)
    kernel_before, stack_before = _kernel_fragment_counters(testbed.ns), _stack_counters(tunnel)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(5)
            for size in SIZES:
                payload = os.urandom(size)
                answer = exchange(sock, forward.local_address, payload)
                assert len(answer) == size and answer == payload
        stats = forward.stats()
        assert stats["drops"] == {}, stats["drops"]
        assert stats["bytes_out"] >= sum(SIZES) and stats["bytes_in"] >= sum(SIZES)
        _assert_fragmented_both_ways(testbed, tunnel, version, kernel_before, stack_before)
    finally:
        tunnel.close_forward(forward)


@pytest.mark.parametrize("peer", [PEER4, PEER6])
def test_big_datagrams_both_ways_through_socks5_udp_associate(testbed, tunnel, peer):
    version = 6 if ":" in peer else 4
    server = tunnel.socks()
    control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    kernel_before, stack_before = _kernel_fragment_counters(testbed.ns), _stack_counters(tunnel)
    try:
        control.settimeout(10)
        control.connect(server.address)
        relay = udp_associate(control)
        client.settimeout(5)
        for size in SIZES:
            payload = os.urandom(size)
            source, port, data = udp_reply(exchange(client, relay, udp_request(peer, UDP_ECHO, payload)))
            assert (source, port, len(data)) == (peer, UDP_ECHO, size) and data == payload
        assert server.stats()["udp_drops"] == {}
        _assert_fragmented_both_ways(testbed, tunnel, version, kernel_before, stack_before)
    finally:
        client.close()
        control.close()
        tunnel.close_socks(server)


@pytest.mark.parametrize("client", [CLIENT4, CLIENT6])
def test_the_kernel_pings_us_with_big_echoes(testbed, tunnel, client):
    """ICMP echo: the kernel's 3,000- and 20,000-byte requests are reassembled, the replies fragmented."""
    tunnel.wait_handshake()
    for size in (3000, 20000):
        result = run("ping", "-c", "2", "-W", "5", "-s", str(size), client, ns=testbed.ns, check=False, timeout=60)
        assert result.returncode == 0 and f"{size + 8} bytes from" in result.stdout, result.stdout + result.stderr
