"""UDP forwards (issue 16): dig and Python clients through `udp:` forwards to the bed's dnsmasq and UDP echo."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import threading

import pytest

from tests.integration.helpers import exchange, magic_shell, python_as_nobody, wait_for
from tests.testbed.bed import PEER4
from tests.testbed.services import UDP_ECHO

pytestmark = pytest.mark.integration



def _dig(port: int, name: str, rdtype: str = "A") -> str:
    result = subprocess.run(["dig", "@127.0.0.1", "-p", str(port), name, rdtype, "+short", "+tries=5", "+time=3"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip()


needs_dig = pytest.mark.skipif(shutil.which("dig") is None, reason="dig is not installed (bind9-dnsutils)")


@needs_dig
def test_dig_through_a_udp_forward_to_dnsmasq(testbed, tunnel):
    forward = tunnel.forward("udp:198.18.0.1:53", local=0)
    try:
        host, port = forward.local_address
        assert host == "127.0.0.1"
        assert _dig(port, "db.internal") == PEER4
        assert _dig(port, "db.internal", "AAAA") == "fd77:6d61:6769:6300::1"
        stats = forward.stats()
        assert stats["datagrams_out"] >= 2 and stats["datagrams_in"] >= 2
    finally:
        tunnel.close_forward(forward)


def test_python_dns_client_through_the_default_unix_and_a_loopback_forward_to_dnsmasq(testbed, tunnel, tmp_path):
    import dns.message
    import dns.query

    for local in (0, None):
        forward = tunnel.forward("udp:198.18.0.1:53", local=local)
        try:
            query = dns.message.make_query("db.internal", "A")
            if local is None:  # a Unix datagram socket: the client binds an address of its own to be answered
                with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                    sock.bind(str(tmp_path / "dns-client.sock"))
                    sock.settimeout(3)
                    answer = dns.message.from_wire(exchange(sock, forward.local_address, query.to_wire()))
            else:
                answer = dns.query.udp(query, "127.0.0.1", port=forward.local_address[1], timeout=5)
            assert answer.id == query.id
            assert [r.address for rrset in answer.answer for r in rrset] == [PEER4]
        finally:
            tunnel.close_forward(forward)


def test_python_client_through_a_named_udp_forward_to_the_echo(testbed, tunnel):
    forward = tunnel.forward(f"udp:db.internal:{UDP_ECHO}", local="127.0.0.1:0")  # name resolved in the tunnel
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(2)
            for size in (1, 100, 1300):
                payload = os.urandom(size)
                assert exchange(sock, forward.local_address, payload) == payload
    finally:
        tunnel.close_forward(forward)


def test_the_default_udp_forward_is_a_private_unix_socket(testbed, tunnel, tmp_path):
    forward = tunnel.forward(f"udp:{PEER4}:{UDP_ECHO}")
    path = forward.local_address
    try:
        assert isinstance(path, str)
        assert os.stat(os.path.dirname(path)).st_mode & 0o777 == 0o700
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(str(tmp_path / "client.sock"))  # a datagram client needs an address to be answered at
            sock.settimeout(2)
            assert exchange(sock, path, b"over a unix socket") == b"over a unix socket"
        # Another local user cannot even reach the socket: the directory is 0700.
        probe = (f"import socket; s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
                 f"try:\n    s.sendto(b'x', {path!r}); print('sent')\n"
                 f"except PermissionError: print('denied')\n")
        assert python_as_nobody(probe) == "denied"
    finally:
        tunnel.close_forward(forward)
    assert not os.path.exists(os.path.dirname(path))


def test_another_user_cannot_use_a_loopback_udp_forward(testbed, tunnel):
    forward = tunnel.forward(f"udp:{PEER4}:{UDP_ECHO}", local=0)
    host, port = forward.local_address
    probe = ("import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1)\n"
             "answers = 0\n"
             "for _ in range(3):\n"
             f"    s.sendto(b'borrowed', ({host!r}, {port}))\n"
             "    try:\n        s.recv(100); answers += 1\n    except TimeoutError:\n        pass\n"
             "print(answers)\n")
    try:
        assert python_as_nobody(probe) == "0"
        stats = forward.stats()
        assert stats["drops"].get("other_user", 0) >= 3 and stats["flows_opened"] == 0
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:  # while its owner still can
            sock.settimeout(2)
            assert exchange(sock, (host, port), b"mine") == b"mine"
    finally:
        tunnel.close_forward(forward)


def test_100_concurrent_flows_each_get_their_own_replies(testbed, tunnel):
    forward = tunnel.forward(f"udp:{PEER4}:{UDP_ECHO}", local=0)
    address = forward.local_address
    clients = 100
    rounds = 5
    errors: list[str] = []
    start = threading.Barrier(clients)

    def client(index: int) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(3)
            sock.bind(("127.0.0.1", 0))
            start.wait()
            for seq in range(rounds):
                payload = f"client {index} seq {seq} ".encode() + os.urandom(8)
                try:
                    answer = exchange(sock, address, payload, attempts=10)
                except AssertionError as exc:
                    errors.append(f"{index}: {exc}")
                    return
                if answer != payload:
                    errors.append(f"{index} got {answer[:30]!r}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not errors, errors[:5]
        stats = forward.stats()
        assert stats["flows_opened"] == clients and stats["flows"] == clients
    finally:
        tunnel.close_forward(forward)


def test_the_number_of_flows_is_bounded_and_drops_are_counted(testbed, tunnel):
    forward = tunnel.forward(f"udp:{PEER4}:{UDP_ECHO}", local=0, max_flows=2)
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3)]
    try:
        for sock in sockets:
            sock.settimeout(2)
        assert exchange(sockets[0], forward.local_address, b"one") == b"one"
        assert exchange(sockets[1], forward.local_address, b"two") == b"two"
        sockets[2].sendto(b"three", forward.local_address)
        with pytest.raises(TimeoutError):
            sockets[2].recv(100)
        stats = forward.stats()
        assert stats["flows"] == 2 and stats["drops"]["flows_full"] == 1
    finally:
        for sock in sockets:
            sock.close()
        tunnel.close_forward(forward)


def test_idle_flows_expire_and_a_new_datagram_opens_a_new_flow(testbed, tunnel):
    forward = tunnel.forward(f"udp:{PEER4}:{UDP_ECHO}", local=0, idle_timeout=0.5)
    open_sockets = tunnel.call_on_loop(lambda: len(tunnel.runtime_engine.stack._udp))
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(2)
            assert exchange(sock, forward.local_address, b"first") == b"first"
            assert forward.stats()["flows_opened"] == 1
            wait_for(lambda: forward.stats()["flows"] == 0, 30, "the idle flow to expire")
            assert forward.stats()["flows_expired"] == 1
            # Its socket on the tunnel's stack is closed with it.
            assert tunnel.call_on_loop(lambda: len(tunnel.runtime_engine.stack._udp)) == open_sockets
            assert exchange(sock, forward.local_address, b"again") == b"again"
            assert forward.stats()["flows_opened"] == 2
    finally:
        tunnel.close_forward(forward)


@needs_dig
def test_dig_through_wgmagic_up_udp_forward(testbed, tmp_path):
    config = tmp_path / "client.conf"
    config.write_text(testbed.client_config(identity=5))  # its own key: the module's tunnel stays up
    process = subprocess.Popen([sys.executable, "-m", "wgmagic.cli", "up", str(config), "-q",
                                "-L", "udp:0:db.internal:53"], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(2)]
        match = re.search(r"forwarding udp 127\.0\.0\.1:(\d+) -> udp:db\.internal:53", "".join(lines))
        assert match, lines
        assert _dig(int(match.group(1)), "db.internal") == PEER4
    finally:
        process.terminate()
        process.wait(20)


def test_wg_forward_udp_magic(testbed, capsys):
    with magic_shell(testbed, 5, name="udpbed") as shell:
        result = shell.run_cell(f"fwd = %wg forward udp:db.internal:{UDP_ECHO} --local 0 --idle-timeout 30")
        assert result.success, result.error_in_exec
        out = capsys.readouterr().out
        assert f"-> udp:db.internal:{UDP_ECHO}" in out and "30 s" in out
        forward = shell.user_ns["fwd"]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(2)
            assert exchange(sock, forward.local_address, b"magic") == b"magic"
        result = shell.run_cell("%wg forward db.internal:5432 --idle-timeout 3")
        assert not result.success
