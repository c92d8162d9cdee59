"""Every Linux-only feature off (WGMAGIC_PORTABLE=1, what macOS and Windows get): the default forward listens on
loopback TCP and still admits only this user's processes, %%wgsql's own forward only this process (issue 17).

The rest of the fallbacks (one sendto per datagram, no IP_RECVERR, no forced buffers, no flock) are exercised
by every tunnel here, and by scripts/test's portable stage, which runs the forward, tunnel-API, transfer and
%%wgsql modules again with WGMAGIC_PORTABLE=1 (see tests/conftest.py: --portable)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import psycopg
import pytest

from wgmagic import platform
from wgmagic.runtime.tunnel import connect

pytestmark = pytest.mark.integration

IDENTITY = 3

PROBE = """
import socket, struct, sys
sock = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
sock.sendall(bytes.fromhex("0000000804d2162f"))  # an SSLRequest, as libpq sends first over TCP
answer = sock.recv(1)
if answer == b"N":  # no TLS: the StartupMessage, as libpq sends next
    body = struct.pack("!i", 196608) + b"user\\0app\\0database\\0app\\0\\0"
    sock.sendall(struct.pack("!i", len(body) + 4) + body)
    answer += b"|" + sock.recv(4096)
print(repr(answer))
"""


def _server_answered(answer: str) -> bool:
    """TLS offered (S), or no TLS and then an authentication request (R): the real server is behind it."""
    return answer.startswith(("b'S'", "b'N|R"))


@pytest.fixture(scope="module")
def tunnel(testbed):
    previous = os.environ.get("WGMAGIC_PORTABLE")
    os.environ["WGMAGIC_PORTABLE"] = "1"
    try:
        with connect(testbed.client_config(identity=IDENTITY)) as tun:
            yield tun
    finally:
        if previous is None:
            os.environ.pop("WGMAGIC_PORTABLE", None)
        else:
            os.environ["WGMAGIC_PORTABLE"] = previous


def _probe(address: tuple[str, int], *, as_nobody: bool) -> str:
    """What a client in another process gets from the forward: the server's first answer, or our refusal."""
    def drop() -> None:
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)

    done = subprocess.run([sys.executable if not as_nobody else "/usr/bin/python3", "-c", PROBE, *map(str, address)],
                          capture_output=True, text=True, timeout=60, preexec_fn=drop if as_nobody else None)
    return done.stdout + done.stderr


def test_every_feature_is_off(tunnel):
    assert not any(platform.enabled(feature) for feature in platform.FEATURES)
    assert tunnel.stats()["name"]


def test_default_forward_is_guarded_loopback_tcp(tunnel, testbed, caplog):
    with caplog.at_level("WARNING", logger="wgmagic"):
        forward = tunnel.forward("db.internal:5432")
    try:
        host, port = forward.local_address
        assert host == "127.0.0.1" and forward.spec.clients == "user"
        assert "no Unix sockets" in caplog.text and "this user's processes only" in caplog.text
        params = forward.libpq_params()
        with psycopg.connect(**params, user="app", password=testbed.db_password, dbname="app",
                             sslmode="disable") as conn:  # this process
            assert conn.execute("select count(*) from measurements").fetchone()[0] == 100
        answer = _probe((host, port), as_nobody=False)  # another process of this user: the server answers
        assert _server_answered(answer), answer
        refused = _probe((host, port), as_nobody=True)  # another user's process
        assert "accepts connections from processes of this user only" in refused, refused
        assert forward.refused == 1
    finally:
        tunnel.close_forward(forward)


def test_a_process_forward_admits_only_this_process(tunnel, testbed):
    forward = tunnel.forward("db.internal:5432", local=0, clients="process")
    try:
        address = forward.local_address
        assert "accepts connections from this process only" in _probe(address, as_nobody=False)
        with psycopg.connect(**forward.libpq_params(), user="app", password=testbed.db_password, dbname="app",
                             sslmode="disable") as conn:
            assert conn.execute("select 1").fetchone()[0] == 1
        with socket.create_connection(address, timeout=10) as sock:  # a plain socket of this process too
            sock.sendall(bytes.fromhex("0000000804d2162f"))
            assert sock.recv(1) in (b"S", b"N")  # the server's own answer
    finally:
        tunnel.close_forward(forward)


def test_an_explicit_port_admits_any_local_client_like_ssh_L(tunnel):
    forward = tunnel.forward("db.internal:5432", local=0)
    try:
        assert forward.spec.clients == "any"
        answer = _probe(forward.local_address, as_nobody=True)
        assert _server_answered(answer), answer
    finally:
        tunnel.close_forward(forward)


def test_a_named_unix_directory_is_refused_without_unix_sockets(tunnel, tmp_path):
    from wgmagic.runtime.services.listener import SocketPathError

    with pytest.raises(SocketPathError, match="no Unix sockets"):
        tunnel.forward("db.internal:5432", local=f"unix:{tmp_path}")
