"""The test bed's services on a loopback this machine shares: ports from the kernel, clear errors (issue 11).

A fixed port on 127.0.0.1 (9000-9002 before) meant talking to whatever program already listened there.
"""

from __future__ import annotations

import socket
import struct
from pathlib import Path

import pytest

from tests.testbed.local import ServicesError, closed_tcp_port, loopback_services
from tests.testbed.services import BULK, ECHO, HTTP, SINK
from tests.testbed.streams import recv_exactly


def _ephemeral_range() -> range:
    low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    return range(low, high + 1)


def test_loopback_services_take_ports_the_kernel_chose_and_serve_on_them():
    with loopback_services("127.0.0.1") as ports:
        assert {"bulk", "echo", "sink", "http"} <= ports.keys()
        assert len(set(ports.values())) == len(ports)
        for name, port in ports.items():
            # bind(port 0) draws from the kernel's ephemeral range; the fixed ports are the bed's own, in its
            # namespace only.
            assert port in _ephemeral_range(), (name, port)
            assert port not in (BULK, ECHO, SINK, HTTP)
        with socket.create_connection(("127.0.0.1", ports["echo"]), timeout=10) as sock:
            sock.sendall(b"ping")
            assert sock.recv(4) == b"ping"
        with socket.create_connection(("127.0.0.1", ports["bulk"]), timeout=10) as sock:
            sock.sendall(struct.pack("!Q", 1000))
            received = recv_exactly(sock, 1000)
            assert len(received) == 1000


def test_a_bind_that_fails_says_where_and_why():
    # An address inside the suite's range that this machine does not have: every bind on it fails.
    with pytest.raises(ServicesError, match=r"cannot listen on 198\.18\.255\.254:0 \(\w+\): .*assign"), \
            loopback_services("198.18.255.254"):
        pass


def test_a_closed_port_of_our_own_refuses():
    with closed_tcp_port("127.0.0.1") as port:
        assert port in _ephemeral_range()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5)
