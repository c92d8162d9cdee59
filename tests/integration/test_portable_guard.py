"""The loopback guard of a forward without Unix sockets (WGMAGIC_PORTABLE=1, as on macOS and Windows) reads the
system's socket tables (psutil; /proc on Linux): a slow read must not stall the tunnel. The check runs in the
loop's executor and its answer comes back to the loop (runtime/services/forward.py `_check`), so while one
client's check hangs, the tunnel serves everything else; the client is admitted when the answer comes, and a
forward closed meanwhile closes it. The hanging check is the real `platform.loopback_client_allowed`, held back
until the test has seen the tunnel serve (no timing threshold)."""

from __future__ import annotations

import logging
import socket
import threading

import psycopg
import pytest

from tests.testbed.bed import PEER4
from wgmagic import platform
from wgmagic.runtime.tunnel import connect

pytestmark = pytest.mark.integration

IDENTITY = 4
SSL_REQUEST = bytes.fromhex("0000000804d2162f")  # what libpq sends first over TCP


@pytest.fixture(scope="module")
def tunnel(testbed):
    with pytest.MonkeyPatch.context() as patch:  # with or without --portable: every Linux-only feature off
        patch.setenv("WGMAGIC_PORTABLE", "1")
        with connect(testbed.client_config(identity=IDENTITY)) as tun:
            yield tun


class HeldGuard:
    """The real guard, held back in whichever thread runs it until `release` is set."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.real = platform.loopback_client_allowed
        self.entered, self.release, self.finished = threading.Event(), threading.Event(), threading.Event()
        self.threads: list[threading.Thread] = []
        monkeypatch.setattr(platform, "loopback_client_allowed", self)

    def __call__(self, peer: tuple[str, int], listener: tuple[str, int], scope: platform.ClientScope) -> bool:
        self.threads.append(threading.current_thread())
        self.entered.set()
        try:
            assert self.release.wait(120), "the test never released the guard"
            return self.real(peer, listener, scope)
        finally:
            self.finished.set()


def test_a_hanging_guard_check_stalls_nothing_and_admits_when_it_answers(tunnel, testbed, monkeypatch):
    guard = HeldGuard(monkeypatch)
    forward = tunnel.forward("db.internal:5432")  # no Unix sockets: guarded loopback TCP, this user's processes
    try:
        assert forward.spec.local_kind == "tcp" and forward.spec.clients == "user"
        with socket.create_connection(forward.local_address, timeout=60) as waiting:
            waiting.sendall(SSL_REQUEST)
            assert guard.entered.wait(60)  # its check runs, and hangs
            # Meanwhile the tunnel's loop serves the rest: echoes through the tunnel, a call on the loop thread.
            assert all(reply.rtt is not None for reply in tunnel.ping(PEER4, 3, interval=0.1, timeout=10))
            loop_thread = tunnel.call_on_loop(threading.current_thread)
            assert guard.threads and all(thread is not loop_thread for thread in guard.threads)
            assert forward.accepted == 0 and forward.refused == 0 and len(forward.checking) == 1
            guard.release.set()
            assert waiting.recv(1) in (b"S", b"N")  # admitted: the server's own answer to the SSLRequest
        assert forward.accepted == 1 and forward.refused == 0 and not forward.checking
        # A driver through the same forward, once checks answer at once again.
        with psycopg.connect(**forward.libpq_params(), user="app", password=testbed.db_password, dbname="app",
                             sslmode="disable", connect_timeout=30) as conn:
            assert conn.execute("select count(*) from measurements").fetchone()[0] == 100
    finally:
        guard.release.set()
        tunnel.close_forward(forward)


def test_a_forward_closed_during_a_check_closes_its_client_and_ignores_the_late_answer(tunnel, monkeypatch,
                                                                                         caplog):
    guard = HeldGuard(monkeypatch)
    forward = tunnel.forward("db.internal:5432")
    try:
        with socket.create_connection(forward.local_address, timeout=60) as waiting:
            waiting.sendall(SSL_REQUEST)
            assert guard.entered.wait(60)
            with caplog.at_level(logging.WARNING, logger="wgmagic"):
                tunnel.close_forward(forward)
                try:
                    closed = waiting.recv(1)
                except ConnectionResetError:
                    closed = b""
                assert closed == b""  # the waiting client is closed with the forward, not left hanging
                guard.release.set()
                assert guard.finished.wait(120)
                assert tunnel.call_on_loop(lambda: (forward.accepted, forward.refused, forward.checking)) == (0, 0, {})
            assert "loopback guard" not in caplog.text and "refused a connection" not in caplog.text
    finally:
        guard.release.set()
        tunnel.close_forward(forward)
