"""One key, several processes; no native driver can stall the tunnel (issue 22, item 3): a tunnel host process
(runtime/host.py) serves the key's tunnel to this user's processes over a 0700 Unix socket, and its forwards
are relayed by the host's own thread and GIL."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import psycopg
import pytest

from tests.integration.helpers import python_as_nobody, wait_for
from tests.testbed.bed import client_addresses
from wgmagic.config import load_config
from wgmagic.runtime.host import HostedTunnel, control_path

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

IDENTITY = 2
ADDRESS = client_addresses(IDENTITY)[0]
REPO = Path(__file__).resolve().parents[2]
SQL = "SELECT g AS id, g * 0.5 AS half, 'row ' || g AS label FROM generate_series(1, 1000) g ORDER BY g"


def sessions(testbed) -> int:
    return int(testbed.psql_admin(f"SELECT count(*) FROM pg_stat_activity WHERE client_addr = '{ADDRESS}'").strip())


def query(url: str, value: int) -> int:
    with psycopg.connect(url, connect_timeout=20) as conn:
        return int(conn.execute("SELECT %s::int", (value,)).fetchone()[0])


@pytest.fixture
def config(testbed):
    text = testbed.client_config(identity=IDENTITY)
    yield text
    path = control_path(load_config(text))
    assert path is not None
    wait_for(lambda: not os.path.exists(path), 30, "the host to end once nobody is attached")


@pytest.mark.parametrize("return_type", ["pandas", "arrow"])
def test_connectorx_through_the_hosts_forward(config, testbed, return_type):
    cx = pytest.importorskip("connectorx")
    with HostedTunnel.attach(config) as hosted:
        frame = cx.read_sql(hosted.url(testbed.dsn()), SQL, return_type=return_type)
    if return_type == "arrow":
        frame = frame.to_pandas()
    assert list(frame.columns) == ["id", "half", "label"]
    assert frame["id"].tolist() == list(range(1, 1001))
    assert frame["half"].tolist() == [g * 0.5 for g in range(1, 1001)]
    assert frame["label"].iloc[-1] == "row 1000"


def test_two_processes_on_one_key_and_the_first_exits(config, testbed):
    script = textwrap.dedent(f"""
        import sys, psycopg
        from wgmagic.runtime.host import HostedTunnel
        hosted = HostedTunnel.attach(sys.stdin.readline().replace("\\\\n", "\\n"))
        with psycopg.connect(hosted.url({testbed.dsn()!r}), connect_timeout=20) as conn:
            print(conn.execute("SELECT 11").fetchone()[0], flush=True)
        sys.stdin.readline()
    """)
    first = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert first.stdin is not None and first.stdout is not None
    first.stdin.write(config.replace("\n", "\\n") + "\n")
    first.stdin.flush()
    assert first.stdout.readline().strip() == "11"  # the first process started the host and queried
    with HostedTunnel.attach(config, start=False) as second:  # the same host: no TunnelConflictError
        url = second.url(testbed.dsn())
        assert query(url, 12) == 12
        first.stdin.write("exit\n")
        first.stdin.flush()
        assert first.wait(timeout=60) == 0
        assert query(url, 13) == 13  # the first is gone; the second's next query works
    wait_for(lambda: sessions(testbed) == 0, 30, "no session left once the host closed")


def test_another_local_user_cannot_use_the_shared_tunnel(config, testbed):
    with HostedTunnel.attach(config) as hosted:
        assert hosted.status()["pid"] > 0
        path = hosted.path
        out = python_as_nobody(textwrap.dedent(f"""
            import socket
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect({path!r})
                s.sendall(b'{{"op": "status"}}\\n')
                print("answered" if s.recv(100) else "closed")
            except OSError as exc:
                print(type(exc).__name__)
        """))
        assert out in ("PermissionError", "closed"), out


def test_two_kernels_on_one_key_the_first_restarts(config, testbed):
    """Two Jupyter kernels (jupyter_client) attach to the key's host and both query; the first shuts down and
    the second's next cell works; the first comes back and both work."""
    from jupyter_client.manager import KernelManager

    def start() -> tuple[KernelManager, object]:
        km = KernelManager(kernel_name="python3")
        km.start_kernel(cwd=str(REPO))
        kc = km.client()
        kc.start_channels()
        kc.wait_for_ready(timeout=120)
        return km, kc

    def run(kc, code: str) -> str:
        out: list[str] = []

        def hook(msg) -> None:
            if msg["msg_type"] == "stream":
                out.append(msg["content"]["text"])

        reply = kc.execute_interactive(code, timeout=120, output_hook=hook)
        assert reply["content"]["status"] == "ok", reply["content"]
        return "".join(out).strip()

    attach = (f"import psycopg\nfrom wgmagic.runtime.host import HostedTunnel\n"
              f"hosted = HostedTunnel.attach({config!r})\nurl = hosted.url({testbed.dsn()!r})")
    cell = "with psycopg.connect(url, connect_timeout=20) as c: print(c.execute('SELECT {}').fetchone()[0])"
    kernels = [start(), start()]
    try:
        for _km, kc in kernels:
            run(kc, attach)
        assert [run(kc, cell.format(n)) for n, (_km, kc) in enumerate(kernels)] == ["0", "1"]
        first_km, first_kc = kernels[0]
        first_kc.stop_channels()
        first_km.shutdown_kernel(now=False)
        assert run(kernels[1][1], cell.format(2)) == "2"
        kernels[0] = start()
        run(kernels[0][1], attach)
        assert [run(kc, cell.format(n + 3)) for n, (_km, kc) in enumerate(kernels)] == ["3", "4"]
    finally:
        for km, kc in kernels:
            kc.stop_channels()
            if km.is_alive():
                km.shutdown_kernel(now=True)
