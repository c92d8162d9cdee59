"""Endpoints that move (issue 16): a peer's Endpoint name is given a new address mid-session and the tunnel
follows by itself, while a query loop keeps running and loses nothing.

The bed's name service is a resolver function the test controls (injected as `endpoint_resolver`; the real one
is getaddrinfo). The name's two addresses are two UDP relays of the suite's own, on 127.0.0.1 and 127.0.0.2 at
the same port, both in front of the bed's wireguard-go; the first is stopped once the name moved, so only a
tunnel that followed keeps working.
"""

from __future__ import annotations

import contextlib
import threading
import time

import psycopg
import pytest

from tests.integration.helpers import poll
from wgmagic.notebook.status import TunnelStatus
from wgmagic.runtime.tunnel import connect
from wgmagic.wireguard.timers import Timers

pytestmark = pytest.mark.integration
IDENTITY = 1
NAME = "wg.moving.test"


class NameService:
    """The bed's name for the peer: the test moves it from one address to another."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.lookups = 0

    def __call__(self, host: str, port: int) -> list[tuple[str, int]]:
        assert host == NAME
        self.lookups += 1
        return [(self.address, port)]


@contextlib.contextmanager
def two_relays(testbed):
    """Relays at 127.0.0.1:P and 127.0.0.2:P (the same kernel-chosen port P) in front of the bed's peer."""
    with testbed.relay() as first:
        port = int(first.endpoint.rsplit(":", 1)[1])
        with testbed.relay(listen="127.0.0.2", listen_port=port) as second:
            yield first, second, port


class QueryLoop(threading.Thread):
    """SELECT n for n = 1, 2, ... through the tunnel until stopped; records every answer and error."""

    def __init__(self, tunnel, testbed) -> None:
        super().__init__(daemon=True)
        forward = tunnel.forward("db.internal:5432")
        self.conn = psycopg.connect(**forward.libpq_params(), dbname="app", user="app",
                                    password=testbed.db_password, connect_timeout=20)
        self.answers: list[tuple[int, int]] = []
        self.errors: list[BaseException] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.stopping.is_set():
            n += 1
            try:
                with self.conn.cursor() as cur:
                    cur.execute("SELECT %s::int", (n,))
                    self.answers.append((n, cur.fetchone()[0]))
            except BaseException as exc:
                self.errors.append(exc)
                return
            time.sleep(0.02)

    def wait_for(self, count: int, timeout: float = 60.0) -> None:
        target = len(self.answers) + count
        deadline = time.monotonic() + timeout
        while len(self.answers) < target and not self.errors and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not self.errors, self.errors
        assert len(self.answers) >= target, f"the query loop stalled at {len(self.answers)} answers"

    def finish(self) -> None:
        self.stopping.set()
        self.join(60)
        self.conn.close()
        assert not self.errors, self.errors
        assert [n for n, _ in self.answers] == list(range(1, len(self.answers) + 1))
        assert all(n == value for n, value in self.answers)


def _wait_endpoint(tunnel, expected: str, timeout: float) -> None:
    assert poll(lambda: tunnel.peer_report()[0]["endpoint"] == expected, timeout, interval=0.1), \
        f"the tunnel did not move to {expected}: {tunnel.peer_report()[0]['endpoint']}"


def test_the_tunnel_follows_its_endpoint_name_at_the_reresolve_interval(testbed):
    with two_relays(testbed) as (first, second, port):
        names = NameService("127.0.0.1")
        config = testbed.client_config(endpoint=f"{NAME}:{port}", identity=IDENTITY)
        with connect(config, endpoint_resolver=names, reresolve_interval=1.0) as tunnel:
            report = tunnel.peer_report()[0]
            assert report["endpoint_name"] == f"{NAME}:{port}" and report["endpoint"] == f"127.0.0.1:{port}"
            loop = QueryLoop(tunnel, testbed)
            loop.start()
            loop.wait_for(20)
            names.address = "127.0.0.2"
            # stated time: the re-resolve interval (1 s here) plus one check (5 s); generous for a busy machine
            _wait_endpoint(tunnel, f"127.0.0.2:{port}", timeout=60)
            first.process.terminate()  # the old address goes dark
            loop.wait_for(50)
            loop.finish()
            text = repr(TunnelStatus.of(tunnel))
            assert f"{NAME}:{port} (127.0.0.2:{port})" in text
            assert tunnel.stats()["counters"]["endpoint_moved"] == 1
        carried = second.stop()
        assert carried.get("up_in", 0) > 0 and carried.get("down_in", 0) > 0, carried


def test_unanswered_handshakes_make_the_tunnel_look_its_name_up_again(testbed):
    """With the periodic lookup far away (120 s), a dead address is noticed by handshakes going unanswered."""
    timers = Timers(rekey_timeout=1.0, keepalive_timeout=2.0, rekey_timeout_jitter=0.0)
    with two_relays(testbed) as (first, _second, port):
        names = NameService("127.0.0.1")
        config = testbed.client_config(endpoint=f"{NAME}:{port}", identity=IDENTITY)
        with connect(config, endpoint_resolver=names, reresolve_interval=120.0, timers=timers) as tunnel:
            loop = QueryLoop(tunnel, testbed)
            loop.start()
            loop.wait_for(10)
            lookups = names.lookups
            names.address = "127.0.0.2"
            first.process.terminate()
            _wait_endpoint(tunnel, f"127.0.0.2:{port}", timeout=90)
            assert names.lookups > lookups
            loop.wait_for(20, timeout=90)
            loop.finish()
