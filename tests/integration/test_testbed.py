"""The test bed proven with standard tools only (kernel TCP, the reference wireguard-go client)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.testbed.bed import PEER4, PEER6, run
from tests.testbed.streams import stream_sha256

pytestmark = pytest.mark.integration

BULK_CHECK = """
import hashlib, socket, struct, sys
sock = socket.create_connection((sys.argv[1], 9000))
sock.sendall(struct.pack('!Q', 1 << 20))
digest, got = hashlib.sha256(), 0
while True:
    data = sock.recv(65536)
    if not data:
        break
    digest.update(data); got += len(data)
print(got, digest.hexdigest())
"""

DNS_CHECK = """
import sys, dns.message, dns.query, dns.rdatatype
for qtype in ("A", "AAAA"):
    answer = dns.query.udp(dns.message.make_query(sys.argv[1], qtype), sys.argv[2], timeout=3)
    print(qtype, sorted(r.address for rr in answer.answer for r in rr))
"""


@pytest.mark.parametrize("address", [PEER4, PEER6])
def test_reference_client_pings_the_peer(testbed, address):
    result = testbed.run_in_reference("ping", "-c", "2", "-i", "0.2", "-W", "2", address)
    assert " 0% packet loss" in result.stdout


@pytest.mark.parametrize("address", [PEER4, PEER6])
def test_bulk_service_through_reference(testbed, address):
    result = testbed.run_in_reference(sys.executable, "-c", BULK_CHECK, address)
    size, digest = result.stdout.split()
    assert int(size) == 1 << 20 and digest == stream_sha256(1 << 20)


def test_dns_answers_private_names(testbed):
    result = testbed.run_in_reference(sys.executable, "-c", DNS_CHECK, "db.internal", PEER4)
    assert f"A ['{PEER4}']" in result.stdout and f"AAAA ['{PEER6}']" in result.stdout


def test_postgres_with_password_over_the_tunnel(testbed):
    code = ("import psycopg, sys; c = psycopg.connect(sys.argv[1]); "
            "print(c.execute('select count(*) from measurements').fetchone()[0])")
    result = testbed.run_in_reference(sys.executable, "-c", code, testbed.dsn(PEER4))
    assert result.stdout.strip() == "100"


def test_peer_kill_and_restart(testbed):
    testbed.kill_peer()
    down = testbed.run_in_reference("ping", "-c", "1", "-W", "1", PEER4, check=False)
    assert down.returncode != 0
    testbed.restart_peer()
    # The reference client would only notice after 15 s (keepalive + rekey timeout): reset its session.
    run("wg", "set", testbed.ref_if, "peer", testbed.peer_public, "remove", ns=testbed.ref_ns)
    run("wg", "set", testbed.ref_if, "peer", testbed.peer_public, "endpoint", f"127.0.0.1:{testbed.port}",
        "allowed-ips", "198.18.0.0/24,fd77:6d61:6769:6300::/64", ns=testbed.ref_ns)
    up = testbed.run_in_reference("ping", "-c", "3", "-i", "0.3", "-W", "3", PEER4, check=False)
    assert " 0% packet loss" in up.stdout


def test_relay_relays(testbed):
    with testbed.relay(delay=0.005, jitter=0.002, seed=3) as relay:
        port = relay.endpoint.split(":")[1]
        run("wg", "set", testbed.ref_if, "peer", testbed.peer_public, "endpoint", f"127.0.0.1:{port}",
            ns=testbed.ref_ns)
        try:
            result = testbed.run_in_reference("ping", "-c", "3", "-i", "0.2", "-W", "2", PEER4)
            assert " 0% packet loss" in result.stdout
        finally:
            run("wg", "set", testbed.ref_if, "peer", testbed.peer_public, "endpoint",
                f"127.0.0.1:{testbed.port}", ns=testbed.ref_ns)


def test_down_leaves_nothing():
    from tests.testbed.bed import TestBed

    bed = TestBed().up()
    names = (bed.ns, bed.ref_ns)
    bed.down()
    listed = run("ip", "netns", "list").stdout
    assert not any(name in listed for name in names)
    assert not bed.dir.exists()
    leftovers = subprocess.run(["pgrep", "-f", f"wireguard-go -f {bed.peer_if}"], capture_output=True)
    assert leftovers.returncode == 1


def test_bed_by_hand_keeps_its_secrets_private_and_down_from_another_shell_stops_it():
    """`python -m tests.testbed up` writes the DSN (a password) and the client config 0600 in a directory others
    cannot list, and `python -m tests.testbed down` from another process tears that bed down (it printed
    "removed: nothing" while the bed stayed up)."""
    import stat
    import time
    from pathlib import Path

    up = subprocess.Popen([sys.executable, "-m", "tests.testbed", "up"], stdout=subprocess.PIPE, text=True)
    try:
        lines = []
        for line in up.stdout:
            lines.append(line)
            if line.startswith("Ctrl-C"):
                break
        config = Path(next(x for x in lines if x.startswith("client config:")).split(": ", 1)[1].strip())
        namespace = lines[0].split("peer namespace ", 1)[1].split(",")[0]
        assert namespace in run("ip", "netns", "list").stdout
        for secret in (config, config.parent / "dsn", config.parent / "peer.key"):
            assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret
        assert stat.S_IMODE(config.parent.stat().st_mode) & 0o077 in (0, 0o011)  # others may not list it
        down = subprocess.run([sys.executable, "-m", "tests.testbed", "down"], capture_output=True, text=True,
                              timeout=60)
        assert namespace in down.stdout and "nothing" not in down.stdout
        assert up.wait(30) == 0
        time.sleep(0.1)
        assert namespace not in run("ip", "netns", "list").stdout and not config.parent.exists()
    finally:
        if up.poll() is None:
            up.terminate()
            up.wait(30)
