"""Nothing left on the server (issue 22, item 1): after `%wg disconnect`, `tunnel.close()` with a psycopg
connection open, a process that exits, a Jupyter kernel restart, and a SIGKILL followed by a new tunnel on the
same key, the bed's PostgreSQL has no session left from the tunnel's address (pg_stat_activity.client_addr)
within a generous deadline, and a table locked in the open transaction is lockable again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import psycopg
import pytest

from tests.integration.helpers import magic_shell, wait_for
from tests.testbed.bed import client_addresses
from wgmagic.runtime.keylock import runtime_dir
from wgmagic.runtime.tunnel import connect

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

IDENTITY = 5
ADDRESS = client_addresses(IDENTITY)[0]
TABLE = "left_behind"
REPO = Path(__file__).resolve().parents[2]
DEADLINE = 20.0  # generous: the server needs only the segments; this is a hang guard, not a threshold


def sessions(testbed) -> int:
    return int(testbed.psql_admin(f"SELECT count(*) FROM pg_stat_activity WHERE client_addr = '{ADDRESS}'").strip())


def lockable(testbed) -> bool:
    """Whether another session can take the table's lock now (it waits at most 1 s)."""
    try:
        testbed.psql_admin(f"SET lock_timeout = '1s'; BEGIN; LOCK TABLE {TABLE}; COMMIT;", database="app")
    except subprocess.CalledProcessError:
        return False
    return True


@pytest.fixture(autouse=True)
def clean_server(testbed):
    testbed.psql_admin(f"CREATE TABLE IF NOT EXISTS {TABLE} (id int); ALTER TABLE {TABLE} OWNER TO app;",
                       database="app")
    testbed.psql_admin(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE client_addr = '{ADDRESS}'")
    wait_for(lambda: sessions(testbed) == 0, DEADLINE, f"no session from {ADDRESS}", interval=0.2)
    yield


def assert_nothing_left(testbed) -> None:
    wait_for(lambda: sessions(testbed) == 0, DEADLINE, f"no session from {ADDRESS}", interval=0.2)
    assert lockable(testbed)


def lock_through(url: str) -> psycopg.Connection:
    conn = psycopg.connect(url, connect_timeout=20)
    conn.execute(f"LOCK TABLE {TABLE}")  # psycopg opened a transaction: the lock lasts until it ends
    return conn


def test_tunnel_close_with_a_psycopg_connection_open(testbed):
    tun = connect(testbed.client_config(identity=IDENTITY))
    try:
        conn = lock_through(tun.url(testbed.dsn()))
        assert sessions(testbed) == 1 and not lockable(testbed)
    finally:
        tun.close()
    assert_nothing_left(testbed)
    conn.close()


def test_wg_disconnect_with_a_wgsql_connection_in_a_locking_transaction(testbed):
    with magic_shell(testbed, IDENTITY, name="leftover", dsn=testbed.dsn()) as shell:
        assert shell.run_cell("%%wgsql {dsn} --alias lt\nBEGIN").success
        assert shell.run_cell(f"%%wgsql lt\nLOCK TABLE {TABLE}").success
        assert sessions(testbed) == 1 and not lockable(testbed)
        assert shell.run_cell("%wg disconnect leftover").success
        assert_nothing_left(testbed)


def _child(dsn: str, body: str) -> subprocess.Popen[str]:
    script = textwrap.dedent(f"""
        import sys, time, psycopg
        from wgmagic.runtime.tunnel import connect
        tun = connect(sys.stdin.readline().replace("\\\\n", "\\n"))
        conn = psycopg.connect(tun.url({dsn!r}), connect_timeout=20)
        conn.execute("LOCK TABLE {TABLE}")
        print("locked", flush=True)
    """) + textwrap.dedent(body)
    return subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})


def _start_child(testbed, body: str) -> subprocess.Popen[str]:
    child = _child(testbed.dsn(), body)
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write(testbed.client_config(identity=IDENTITY).replace("\n", "\\n") + "\n")
    child.stdin.flush()
    assert child.stdout.readline().strip() == "locked"
    assert sessions(testbed) == 1 and not lockable(testbed)
    return child


def test_a_process_that_exits_with_the_connection_open(testbed):
    child = _start_child(testbed, "sys.stdin.readline()\n")  # then the script ends, conn and tunnel still open
    assert child.stdin is not None
    child.stdin.write("exit\n")
    child.stdin.flush()
    assert child.wait(timeout=60) == 0
    assert_nothing_left(testbed)


def test_sigterm_with_the_connection_open(testbed):
    child = _start_child(testbed, "time.sleep(600)\n")
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=60) == -signal.SIGTERM
    assert_nothing_left(testbed)


def test_sigkill_then_the_next_tunnel_on_the_key_ends_what_was_left(testbed):
    child = _start_child(testbed, "time.sleep(600)\n")
    records = Path(runtime_dir())
    # The record is refreshed every lifecycle.RECORD_PERIOD seconds: wait until it names the connection.
    wait_for(lambda: any(p.read_text().count("\n") >= 2 for p in records.glob("*.connections")), DEADLINE,
             "the record of open connections")
    child.kill()
    child.wait(timeout=60)
    assert sessions(testbed) == 1  # a killed process cannot say anything
    with connect(testbed.client_config(identity=IDENTITY)) as tun:
        tun.wait_handshake()
        assert_nothing_left(testbed)


def test_a_jupyter_kernel_restart_in_a_locking_transaction(testbed):
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name="python3")
    km.start_kernel(cwd=str(REPO))
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=120)

        def run(code: str) -> None:
            reply = kc.execute_interactive(code, timeout=120, output_hook=lambda _msg: None)
            assert reply["content"]["status"] == "ok", reply["content"]

        run(f"conf = {testbed.client_config(identity=IDENTITY)!r}\ndsn = {testbed.dsn()!r}")
        run("%load_ext wgmagic")
        run("%wg connect {conf} --name kernel")
        run("%%wgsql {dsn} --alias lt\nBEGIN")
        run(f"%%wgsql lt\nLOCK TABLE {TABLE}")
        assert sessions(testbed) == 1 and not lockable(testbed)
        km.restart_kernel()
        assert_nothing_left(testbed)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
