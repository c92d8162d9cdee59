"""Forwards, SOCKS5 and the `wgmagic up` CLI against the test bed (issue 4, first part)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import psycopg
import pytest

from wgmagic import platform
from wgmagic.runtime.tunnel import connect

pytestmark = pytest.mark.integration
UNIX_ONLY = "Unix sockets are off (WGMAGIC_PORTABLE): test_portable.py checks the loopback guard instead"


@pytest.mark.skipif(not platform.enabled("unix_sockets"), reason=UNIX_ONLY)
def test_psycopg_through_unix_socket_forward(testbed, tunnel):
    forward = tunnel.forward("db.internal:5432")
    try:
        params = forward.libpq_params()
        assert os.stat(params["host"]).st_mode & 0o777 == 0o700
        with psycopg.connect(**params, user="app", password=testbed.db_password, dbname="app") as conn:
            assert conn.execute("select count(*) from measurements").fetchone()[0] == 100
    finally:
        tunnel.close_forward(forward)
    assert not os.path.exists(params["host"])


def test_many_concurrent_psycopg_connections_through_one_tcp_forward(testbed, tunnel):
    import concurrent.futures

    forward = tunnel.forward("db.internal:5432", local=0)
    params = forward.libpq_params()

    def work(i: int) -> int:
        with psycopg.connect(**params, user="app", password=testbed.db_password, dbname="app",
                             sslmode="disable") as conn:
            return sum(conn.execute("select %s::int + id from measurements where id <= 3", (i,)).fetchone()[0]
                       for _ in range(5))

    try:
        with concurrent.futures.ThreadPoolExecutor(50) as pool:
            results = list(pool.map(work, range(100)))
        assert results == [5 * (i + 1) for i in range(100)]
    finally:
        tunnel.close_forward(forward)


def test_pure_python_socket_over_open_connection(testbed, tunnel):
    with tunnel.open_connection("db.internal", 5432, timeout=10) as sock:
        # A PostgreSQL SSLRequest: the server answers one byte, 'S' or 'N'.
        sock.sendall(b"\x00\x00\x00\x08\x04\xd2\x16\x2f")
        assert sock.recv(1) in (b"S", b"N")


def test_socks5_with_curl(testbed, tunnel):
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    server = tunnel.socks()  # the default: a Unix socket in a 0700 directory (curl >= 7.84)
    result = subprocess.run(["curl", "-s", "--max-time", "20", "--proxy", server.proxy_url(),
                             "http://db.internal:8080/"], capture_output=True, text=True, timeout=30)
    assert result.stdout == "hello from the private network\n"


def test_socks5_rejects_bad_requests_and_keeps_serving(testbed, tunnel):
    server = tunnel.socks(port=0, credentials=("alice", "s3cret"))
    address = tuple(server.address)
    with socket.create_connection(address, timeout=5) as sock:  # no acceptable method
        sock.sendall(b"\x05\x01\x00")
        assert sock.recv(2) == b"\x05\xff"
        assert sock.recv(1) == b""
    with socket.create_connection(address, timeout=5) as sock:  # wrong password
        sock.sendall(b"\x05\x01\x02")
        assert sock.recv(2) == b"\x05\x02"
        sock.sendall(b"\x01\x05alice\x05wrong")
        assert sock.recv(2) == b"\x01\x01"
    with socket.create_connection(address, timeout=5) as sock:  # BIND is not supported
        sock.sendall(b"\x05\x01\x02")
        sock.recv(2)
        sock.sendall(b"\x01\x05alice\x06s3cret")
        assert sock.recv(2) == b"\x01\x00"
        sock.sendall(b"\x05\x02\x00\x01" + bytes((198, 18, 0, 1)) + (9001).to_bytes(2, "big"))
        assert sock.recv(10)[1] == 7
    with socket.create_connection(address, timeout=5) as sock:  # and a good one still works
        sock.sendall(b"\x05\x01\x02")
        sock.recv(2)
        sock.sendall(b"\x01\x05alice\x06s3cret")
        sock.recv(2)
        sock.sendall(b"\x05\x01\x00\x01" + bytes((198, 18, 0, 1)) + (9001).to_bytes(2, "big"))
        assert sock.recv(10)[1] == 0
        sock.sendall(b"ping")
        assert sock.recv(4) == b"ping"


def test_psql_through_wgmagic_up(testbed, tmp_path):
    config = tmp_path / "client.conf"
    config.write_text(testbed.client_config(identity=4))  # its own key: the module's tunnel stays up meanwhile
    # -L 0:...: the kernel picks the local port (as with ssh -L 0), and `wgmagic up` says which.
    process = subprocess.Popen([sys.executable, "-m", "wgmagic.cli", "up", str(config), "-q",
                                "-L", "0:db.internal:5432"], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(2)]
        assert any("tunnel up" in line for line in lines), lines
        forwarding = re.search(r"forwarding 127\.0\.0\.1:(\d+) ", "".join(lines))
        assert forwarding, lines
        port = int(forwarding.group(1))
        env = {**os.environ, "PGPASSWORD": testbed.db_password}
        result = subprocess.run(["psql", "-X", "-At", "-h", "127.0.0.1", "-p", str(port), "-U", "app", "-d", "app",
                                 "-c", "select sum(id) from measurements"], capture_output=True, text=True, env=env,
                                timeout=30)
        assert result.stdout.strip() == "5050", result.stderr
    finally:
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=15)
    assert process.returncode == 0 and "tunnel closed" in out


def test_closing_the_tunnel_releases_threads_and_descriptors(testbed):
    import threading

    def snapshot() -> tuple[set[str], set[str]]:
        names = {t.name for t in threading.enumerate() if t.name.startswith("wgmagic")}
        fds = set(os.listdir("/proc/self/fd"))
        return names, fds

    time.sleep(0.2)
    threads_before, fds_before = snapshot()
    tun = connect(testbed.client_config(identity=2))  # the module's tunnel is up with identity 0
    forward = tun.forward("db.internal:5432", local=0)
    sock = tun.open_connection("198.18.0.1", 9001, timeout=10)
    sock.sendall(b"x")
    assert sock.recv(1) == b"x"
    assert forward.libpq_params()["hostaddr"] == "127.0.0.1"
    tun.close()
    try:
        assert sock.recv(1) == b""  # the tunnel's end of the connection is gone
    except ConnectionResetError:
        pass
    sock.close()
    time.sleep(0.2)
    threads_after, fds_after = snapshot()
    assert threads_after == threads_before
    assert fds_after <= fds_before | set()  # nothing new left open
