"""A reset is a reset (issue 11, item 5): when the server resets a connection after part of a stream, the
local client of a TCP forward, of SOCKS5 and of open_connection gets every byte sent before the reset and then
ECONNRESET / ConnectionResetError, never a clean end of stream; a local client that resets makes the server
see a reset too."""

from __future__ import annotations

import asyncio
import socket
import struct
import time

import pytest

from tests.integration.helpers import wait_for
from tests.testbed.bed import PEER4, PEER6
from tests.testbed.services import ECHO, RESET
from tests.testbed.streams import iter_stream
from wgmagic.runtime.tunnel import connect

pytestmark = pytest.mark.integration

SIZE = 300_000  # several windows' worth: the reset comes while the relay still has bytes to hand on
EXPECTED = b"".join(iter_stream(SIZE))


@pytest.fixture(scope="module")
def tunnel(testbed):
    with connect(testbed.client_config(identity=3)) as tun:
        yield tun


def _read_until_closed(sock: socket.socket) -> tuple[bytes, str]:
    """Everything the socket gives, and how it ended: 'reset' or 'eof'."""
    received = bytearray()
    sock.settimeout(30)
    while True:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            return bytes(received), "reset"
        if not data:
            return bytes(received), "eof"
        received += data


def test_open_connection_raises_connection_reset_after_the_data(tunnel):
    for host in (PEER4, PEER6):
        sock = tunnel.open_connection(host, RESET, timeout=10)
        with sock:
            sock.sendall(struct.pack("!Q", SIZE))
            time.sleep(0.3)  # let the reset arrive while bytes still wait in the socket (no timing asserted)
            received, ending = _read_until_closed(sock)
        assert ending == "reset" and received == EXPECTED, (host, ending, len(received))


def test_open_connection_async_raises_connection_reset_after_the_data(tunnel):
    async def main() -> tuple[bytes, str]:
        reader, writer = await tunnel.open_connection_async(PEER4, RESET, timeout=10)
        writer.write(struct.pack("!Q", SIZE))
        await writer.drain()
        received = bytearray()
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    return bytes(received), "eof"
                received += data
        except ConnectionResetError:
            return bytes(received), "reset"
        finally:
            writer.close()

    received, ending = asyncio.run(main())
    assert ending == "reset" and received == EXPECTED, (ending, len(received))


def test_tcp_forward_client_gets_econnreset_after_the_data(tunnel):
    forward = tunnel.forward(f"{PEER4}:{RESET}", local=0)
    try:
        with socket.create_connection(forward.local_address, timeout=10) as sock:
            sock.sendall(struct.pack("!Q", SIZE))
            time.sleep(0.3)
            received, ending = _read_until_closed(sock)
        assert ending == "reset" and received == EXPECTED, (ending, len(received))
    finally:
        tunnel.close_forward(forward)


def test_socks5_client_gets_econnreset_after_the_data(tunnel):
    # TCP, where a reset exists (AF_UNIX has none), with the RFC 1929 credentials a TCP proxy gets by default.
    server = tunnel.socks(port=0)
    user, password = (c.encode() for c in server.credentials)
    with socket.create_connection(tuple(server.address), timeout=10) as sock:
        sock.sendall(b"\x05\x01\x02")
        assert sock.recv(2) == b"\x05\x02"
        sock.sendall(bytes((1, len(user))) + user + bytes((len(password),)) + password)
        assert sock.recv(2) == b"\x01\x00"
        name = b"db.internal"
        sock.sendall(b"\x05\x01\x00\x03" + bytes([len(name)]) + name + struct.pack("!H", RESET))
        answer = sock.recv(4)
        assert answer[:2] == b"\x05\x00"
        sock.recv(4 + 2 if answer[3] == 1 else 16 + 2)  # BND.ADDR and BND.PORT
        sock.sendall(struct.pack("!Q", SIZE))
        received, ending = _read_until_closed(sock)
    assert ending == "reset" and received == EXPECTED, (ending, len(received))


def _estab_resets(testbed) -> int:
    """The peer namespace's count of connections that went from ESTABLISHED straight to CLOSED (RFC 1213
    tcpEstabResets): a reset, sent or received; a FIN-closed connection does not count."""
    lines = testbed.run_in_peer("cat", "/proc/net/snmp").stdout.splitlines()
    tcp = [line.split() for line in lines if line.startswith("Tcp:")]
    return int(tcp[1][tcp[0].index("EstabResets")])


def _settled_resets(testbed) -> int:
    """_estab_resets once it has stayed the same for half a second: the shared bed's namespace still counts the
    late resets of connections earlier tests left behind, which must not be read as this test's."""
    last = _estab_resets(testbed)
    for _ in range(40):
        time.sleep(0.5)
        now = _estab_resets(testbed)
        if now == last:
            return now
        last = now
    return last


def test_a_local_reset_resets_the_server_side(testbed, tunnel):
    forward = tunnel.forward(f"{PEER4}:{ECHO}", local=0)
    try:
        before = _estab_resets(testbed)
        sock = socket.create_connection(forward.local_address, timeout=10)
        sock.sendall(b"ping")
        assert sock.recv(4) == b"ping"
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        wait_for(lambda: _estab_resets(testbed) > before, 10, "the server's side to count a reset")
        # And a clean close stays a clean close (FIN), not a reset.
        before = _settled_resets(testbed)
        with socket.create_connection(forward.local_address, timeout=10) as sock:
            sock.sendall(b"bye")
            assert sock.recv(3) == b"bye"
            sock.shutdown(socket.SHUT_WR)
            assert sock.recv(1) == b""
        time.sleep(0.5)
        assert _estab_resets(testbed) == before
    finally:
        tunnel.close_forward(forward)


def test_open_connection_closed_with_unread_data_resets_the_server_side(testbed, tunnel):
    before = _estab_resets(testbed)
    sock = tunnel.open_connection(PEER4, ECHO, timeout=10)
    sock.sendall(b"unread answer")
    time.sleep(0.5)  # the echo is in our socket, unread: closing now is a reset, as on a TCP socket (RFC 2525)
    sock.close()
    wait_for(lambda: _estab_resets(testbed) > before, 10, "the server's side to count a reset")
