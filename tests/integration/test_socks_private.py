"""A SOCKS5 proxy private to its user (issue 16): the Unix-socket default, TCP with generated RFC 1929
credentials, UDP ASSOCIATE (RFC 1928 section 7) to the bed's UDP echo, and a second local user shut out."""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import struct
import subprocess
import sys

import pytest

from tests.integration.helpers import NOBODY, exchange, magic_shell, python_as_nobody, wait_for
from tests.testbed.bed import PEER4
from tests.testbed.services import ECHO, UDP_ECHO
from tests.testbed.streams import recv_exactly
from wgmagic.runtime.services.socks import socks5_connect

pytestmark = pytest.mark.integration

HELLO = "hello from the private network\n"


def _curl(*args: str, user: list[str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*(user or []), "curl", "-s", "--max-time", "20", *args], capture_output=True, text=True,
                          timeout=40)


# ---- a SOCKS5 UDP ASSOCIATE client, standard library only ---------------------------------------------
def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = recv_exactly(sock, size)
    assert len(data) == size, "the proxy closed the connection"
    return data


def udp_associate(control: socket.socket, credentials: tuple[str, str] | None = None) -> tuple[str, int]:
    """Greeting, optional RFC 1929 auth, UDP ASSOCIATE 0.0.0.0:0 (section 7); returns BND.ADDR, BND.PORT."""
    control.sendall(b"\x05\x01" + (b"\x02" if credentials else b"\x00"))
    assert _recv_exactly(control, 2) == (b"\x05\x02" if credentials else b"\x05\x00")
    if credentials:
        user, password = (c.encode() for c in credentials)
        control.sendall(bytes((1, len(user))) + user + bytes((len(password),)) + password)
        assert _recv_exactly(control, 2) == b"\x01\x00"
    control.sendall(b"\x05\x03\x00\x01" + bytes(4) + bytes(2))
    version, code, _, atyp = _recv_exactly(control, 4)
    assert (version, code) == (5, 0)
    raw = _recv_exactly(control, 4 if atyp == 1 else 16)
    port = struct.unpack("!H", _recv_exactly(control, 2))[0]
    return str(ipaddress.ip_address(raw)), port


def udp_request(host: str, port: int, data: bytes, frag: int = 0) -> bytes:
    try:
        address = ipaddress.ip_address(host)
        target = bytes((1 if address.version == 4 else 4,)) + address.packed
    except ValueError:
        target = bytes((3, len(host))) + host.encode()
    return struct.pack("!HB", 0, frag) + target + struct.pack("!H", port) + data


def udp_reply(datagram: bytes) -> tuple[str, int, bytes]:
    assert datagram[:3] == b"\x00\x00\x00"
    size = 4 if datagram[3] == 1 else 16
    address = str(ipaddress.ip_address(datagram[4:4 + size]))
    port = struct.unpack("!H", datagram[4 + size:6 + size])[0]
    return address, port, datagram[6 + size:]


# ---- the Unix-socket default -----------------------------------------------------------------------------
def test_the_default_proxy_is_a_unix_socket_in_a_private_directory_and_curl_uses_it(tunnel):
    server = tunnel.socks()
    try:
        path = server.address
        assert isinstance(path, str) and os.path.basename(path) == "socks5.sock"
        assert os.stat(os.path.dirname(path)).st_mode & 0o777 == 0o700
        assert server.proxy_url() == f"socks5h://localhost{path}"
        # curl >= 7.84: a SOCKS proxy on a Unix socket is socks5h://localhost/PATH (--proxy or ALL_PROXY).
        result = _curl("--proxy", server.proxy_url(), "http://db.internal:8080/")
        assert result.stdout == HELLO, result.stderr
        result = _curl("--socks5-hostname", f"localhost{path}", "http://db.internal:8080/")
        assert result.stdout == HELLO, result.stderr
    finally:
        tunnel.close_socks(server)
    assert not os.path.exists(os.path.dirname(path))


def test_python_clients_use_the_unix_socket_proxy_through_the_helper(tunnel):
    server = tunnel.socks()
    try:
        with socks5_connect(server.address, "db.internal", ECHO, timeout=10) as sock:
            sock.sendall(b"through the private proxy")
            assert _recv_exactly(sock, 25) == b"through the private proxy"
        with pytest.raises(ConnectionRefusedError):
            socks5_connect(server.address, PEER4, 9009, timeout=10)  # 9009 stays closed in the bed
    finally:
        tunnel.close_socks(server)


def test_udp_associate_over_the_unix_socket_proxy_reaches_the_udp_echo(tunnel):
    server = tunnel.socks()
    control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    control.settimeout(10)
    control.connect(server.address)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        relay = udp_associate(control)
        assert relay[0] == "127.0.0.1"
        client.settimeout(2)
        for host in (PEER4, "db.internal"):  # an address, and a name resolved through the tunnel
            payload = os.urandom(64)
            source, port, data = udp_reply(exchange(client, relay, udp_request(host, UDP_ECHO, payload)))
            assert (source, port, data) == (PEER4, UDP_ECHO, payload)
        # A fragment is dropped and counted; so is a datagram from another address than the client's.
        client.sendto(udp_request(PEER4, UDP_ECHO, b"fragment", frag=1), relay)
        stranger.sendto(udp_request(PEER4, UDP_ECHO, b"stranger"), relay)
        wait_for(lambda: server.stats()["udp_drops"].get("fragment") == 1
                 and server.stats()["udp_drops"].get("foreign_source") == 1, 30, "the drops to be counted")
        stranger.settimeout(0.5)
        with pytest.raises(TimeoutError):
            stranger.recv(100)
        assert server.stats()["udp_associations_open"] == 1
        control.close()  # the association ends with its control connection (section 7)
        wait_for(lambda: server.stats()["udp_associations_open"] == 0, 30, "the association to end")
        client.sendto(udp_request(PEER4, UDP_ECHO, b"after"), relay)
        client.settimeout(0.5)
        with pytest.raises((TimeoutError, ConnectionRefusedError)):
            client.recv(100)
    finally:
        for sock in (control, client, stranger):
            sock.close()
        tunnel.close_socks(server)


# ---- TCP with credentials --------------------------------------------------------------------------------
def test_a_tcp_proxy_gets_generated_credentials_that_stay_out_of_reprs(tunnel):
    server = tunnel.socks(port=0)
    try:
        assert server.credentials is not None
        user, password = server.credentials
        assert len(password) >= 20
        for text in (repr(server), server.proxy_url(), str(server.stats()), repr(tunnel)):
            assert password not in text
        host, port = server.address
        result = _curl("--proxy", server.proxy_url(reveal=True), "http://db.internal:8080/")
        assert result.stdout == HELLO, result.stderr
        result = _curl("--socks5-hostname", f"{host}:{port}", "http://db.internal:8080/")  # no credentials
        assert result.stdout == "" and result.returncode != 0
        with pytest.raises(PermissionError):
            socks5_connect((host, port), "db.internal", ECHO, timeout=10)
        with socks5_connect((host, port), "db.internal", ECHO, credentials=(user, password), timeout=10) as sock:
            sock.sendall(b"ok")
            assert _recv_exactly(sock, 2) == b"ok"
    finally:
        tunnel.close_socks(server)


def test_udp_associate_relay_binds_the_control_connections_loopback_address(tunnel):
    server = tunnel.socks(port=0, host="127.0.0.2")
    try:
        with socket.create_connection(server.address, timeout=10) as control, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.bind((control.getsockname()[0], 0))  # datagrams come from the control connection's host
            client.settimeout(2)
            relay = udp_associate(control, server.credentials)
            assert relay[0] == "127.0.0.2" == control.getpeername()[0]
            reply = udp_reply(exchange(client, relay, udp_request(PEER4, UDP_ECHO, b"over tcp")))
            assert reply == (PEER4, UDP_ECHO, b"over tcp")
    finally:
        tunnel.close_socks(server)


def test_no_auth_only_on_request_and_with_a_warning(tunnel, caplog):
    with caplog.at_level("WARNING", logger="wgmagic"):
        server = tunnel.socks(port=0, no_auth=True)
    assert any(r.levelname == "WARNING" and "every user of this machine" in r.getMessage() for r in caplog.records)
    try:
        assert server.credentials is None
        result = _curl("--socks5-hostname", f"{server.address[0]}:{server.address[1]}", "http://db.internal:8080/")
        assert result.stdout == HELLO
    finally:
        tunnel.close_socks(server)
    with pytest.raises(ValueError):
        tunnel.socks(no_auth=True)  # a Unix socket: private already


# ---- another local user ----------------------------------------------------------------------------------
def test_another_user_cannot_use_the_default_proxy_or_forward(testbed, tunnel):
    server = tunnel.socks()
    forward = tunnel.forward("db.internal:5432")
    tcp_server = tunnel.socks(port=0)
    try:
        for path in (server.address, os.path.join(forward.libpq_params()["host"], ".s.PGSQL.5432")):
            probe = ("import socket; s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
                     f"try:\n    s.connect({path!r}); print('connected')\n"
                     "except PermissionError: print('denied')\n")
            assert python_as_nobody(probe) == "denied"
        result = _curl("--proxy", server.proxy_url(), "http://db.internal:8080/", user=NOBODY)
        assert result.stdout == "" and result.returncode != 0
        # The TCP proxy is reachable by anyone on this machine, but refuses a connection without its credentials.
        host, port = tcp_server.address
        result = _curl("--socks5-hostname", f"{host}:{port}", "http://db.internal:8080/", user=NOBODY)
        assert result.stdout == "" and result.returncode != 0
        result = _curl("--proxy", f"socks5h://{tcp_server.credentials[0]}:guess@{host}:{port}",
                       "http://db.internal:8080/", user=NOBODY)
        assert result.stdout == "" and result.returncode != 0
        assert tcp_server.stats()["rejected"] >= 2 and tcp_server.stats()["connected"] == 0
        # ... while this user still gets through all three.
        assert _curl("--proxy", server.proxy_url(), "http://db.internal:8080/").stdout == HELLO
        assert _curl("--proxy", tcp_server.proxy_url(reveal=True), "http://db.internal:8080/").stdout == HELLO
    finally:
        tunnel.close_socks(server)
        tunnel.close_socks(tcp_server)
        tunnel.close_forward(forward)


def test_another_users_datagrams_do_not_enter_a_unix_proxys_association(tunnel):
    """The relay of a Unix-socket proxy's association listens on loopback: it takes datagrams only from a
    socket of this user, so another user who learns the port cannot take the association over."""
    server = tunnel.socks()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as control:
            control.settimeout(10)
            control.connect(server.address)
            relay = udp_associate(control)
            probe = ("import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1)\n"
                     f"s.sendto({udp_request(PEER4, UDP_ECHO, b'borrowed')!r}, {relay!r})\n"
                     "try:\n    s.recv(100); print('answered')\nexcept TimeoutError: print('silence')\n")
            assert python_as_nobody(probe) == "silence"
            assert server.stats()["udp_drops"].get("other_user") == 1
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:  # the owner still can
                client.settimeout(2)
                assert udp_reply(exchange(client, relay, udp_request(PEER4, UDP_ECHO, b"mine")))[2] == b"mine"
    finally:
        tunnel.close_socks(server)


# ---- %wg socks and wgmagic up -D -------------------------------------------------------------------------
def test_wg_socks_magic_shows_credentials_once(testbed, capsys):
    with magic_shell(testbed, 5, name="socksbed") as shell:
        capsys.readouterr()
        result = shell.run_cell("private = %wg socks")
        assert result.success, result.error_in_exec
        out = capsys.readouterr().out
        server = shell.user_ns["private"]
        assert server.address in out and "socks5h://localhost/" in out
        assert _curl("--proxy", server.proxy_url(), "http://db.internal:8080/").stdout == HELLO
        result = shell.run_cell("tcp = %wg socks 0")
        assert result.success, result.error_in_exec
        out = capsys.readouterr().out
        tcp = shell.user_ns["tcp"]
        user, password = tcp.credentials
        assert password in out and user in out
        assert _curl("--proxy", tcp.proxy_url(reveal=True), "http://db.internal:8080/").stdout == HELLO
        status = shell.run_cell("%wg status").result
        shown = repr(status) + status._repr_html_() + repr(tcp) + capsys.readouterr().out
        assert password not in shown
        assert not shell.run_cell("%wg socks --no-auth").success  # --no-auth is for a TCP port


def test_wgmagic_up_dynamic_forwards_are_private(testbed, tmp_path):
    config = tmp_path / "client.conf"
    config.write_text(testbed.client_config(identity=5))
    process = subprocess.Popen([sys.executable, "-m", "wgmagic.cli", "up", str(config), "-q", "-D", "unix",
                                "-D", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        lines = "".join(process.stdout.readline() for _ in range(3))
        unix = re.search(r"SOCKS5 proxy on the Unix socket (\S+) \(curl --proxy (\S+)\)", lines)
        tcp = re.search(r"SOCKS5 proxy on 127\.0\.0\.1:(\d+), username (\S+) password (\S+) ", lines)
        assert unix and tcp, lines
        assert _curl("--proxy", unix.group(2), "http://db.internal:8080/").stdout == HELLO
        port, user, password = tcp.groups()
        assert _curl("--proxy", f"socks5h://{user}:{password}@127.0.0.1:{port}",
                     "http://db.internal:8080/").stdout == HELLO
        assert _curl("--socks5-hostname", f"127.0.0.1:{port}", "http://db.internal:8080/").stdout == ""
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=20)
    assert password not in stderr
