"""One key, several processes; no native driver can stall the tunnel: `wgmagic.connect(conf, share=True)` and
`%wg connect --share` run the key's tunnel in a host process (runtime/host.py) that every process of this user
attaches to (a plain connect attaches too while a host serves the key), over a 0700 Unix socket, and its
forwards are relayed by the host's own thread and GIL."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

import wgmagic
from tests.integration.helpers import magic_shell, python_as_nobody, wait_for
from tests.testbed.bed import client_addresses
from wgmagic.config import load_config
from wgmagic.errors import TunnelConflictError
from wgmagic.runtime.host import control_path
from wgmagic.runtime.hosted import HostedTunnel, NotSharedError

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

IDENTITY = 2
ADDRESS = client_addresses(IDENTITY)[0]
REPO = Path(__file__).resolve().parents[2]
SQL = "SELECT g AS id, g * 0.5 AS half, 'row ' || g AS label FROM generate_series(1, 1000) g ORDER BY g"
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


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


@pytest.fixture
def config_file(config, tmp_path):
    path = tmp_path / "shared.conf"
    path.write_text(config)
    path.chmod(0o600)
    return path


@contextlib.contextmanager
def holder(config: str, script: str) -> Iterator[subprocess.Popen[str]]:
    """A Python process that runs `script` with `conf` (the config text, read from stdin, never on a command
    line) and prints "up" (asserted); it exits when its stdin gets a line (let_go), and is killed at the end
    of the block if it is still there."""
    code = "import sys\nconf = sys.stdin.readline().replace('\\\\n', '\\n')\n" + textwrap.dedent(script) + \
        "\nprint('up', flush=True)\nsys.stdin.readline()\n"
    process = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True, cwd=REPO, env=ENV)
    try:
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(config.replace("\n", "\\n") + "\n")
        process.stdin.flush()
        assert process.stdout.readline().strip() == "up"
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


def let_go(process: subprocess.Popen[str]) -> None:
    assert process.stdin is not None
    process.stdin.write("exit\n")
    process.stdin.flush()
    assert process.wait(timeout=60) == 0


@pytest.mark.parametrize("return_type", ["pandas", "arrow"])
def test_connectorx_through_a_shared_tunnels_url(config, testbed, return_type):
    """The README's ConnectorX line with share=True: the forward is the host's, so ConnectorX's pandas path,
    which holds this process's GIL while it waits on the socket, gets its bytes (in-process: test_native_driver)."""
    cx = pytest.importorskip("connectorx")
    with wgmagic.connect(config, share=True, timeout=20) as tunnel:
        assert isinstance(tunnel, HostedTunnel)
        frame = cx.read_sql(tunnel.url(testbed.dsn()), SQL, return_type=return_type)
    if return_type == "arrow":
        frame = frame.to_pandas()
    assert list(frame.columns) == ["id", "half", "label"]
    assert frame["id"].tolist() == list(range(1, 1001))
    assert frame["half"].tolist() == [g * 0.5 for g in range(1, 1001)]
    assert frame["label"].iloc[-1] == "row 1000"


def test_a_plain_connect_attaches_to_the_keys_host_and_outlives_the_first(config, testbed):
    script = f"""
        import psycopg, wgmagic
        tunnel = wgmagic.connect(conf, share=True, timeout=20)
        with psycopg.connect(tunnel.url({testbed.dsn()!r}), connect_timeout=20) as conn:
            assert conn.execute("SELECT 11").fetchone()[0] == 11
    """
    # no share=True in this process: the key's host is found and used
    with holder(config, script) as first, wgmagic.connect(config, timeout=20) as second:
        assert isinstance(second, HostedTunnel) and second.status()["holders"] == 2
        assert wgmagic.connect(config) is second and second.holders == 2  # connecting again: the same handle
        second.close()
        url = second.url(testbed.dsn())
        assert query(url, 12) == 12
        with second.open_connection("db.internal", 5432) as sock:  # a socket the host relays, passed over
            sock.sendall(b"\x00\x00\x00\x08\x04\xd2\x16\x2f")  # SSLRequest: the server answers 'N' or 'S'
            assert sock.recv(1) in (b"N", b"S")
        pd = pytest.importorskip("pandas")
        for driver in ("psycopg", "pg8000"):  # a forward in the host; a socket per connection passed over
            engine = second.engine(testbed.dsn().replace("postgresql://", f"postgresql+{driver}://"))
            assert pd.read_sql("SELECT 5 AS n", engine)["n"].tolist() == [5]
            engine.dispose()
        let_go(first)
        assert query(url, 13) == 13  # the first is gone; the second's next query works
        assert second.status()["holders"] == 1
    wait_for(lambda: sessions(testbed) == 0, 30, "no session left once the host closed")


def test_a_key_held_unshared_elsewhere_says_how_to_share_it(config, testbed):
    with holder(config, "import wgmagic\ntunnel = wgmagic.connect(conf, timeout=20)") as other:
        with pytest.raises(NotSharedError) as caught:
            wgmagic.connect(config, timeout=10)
        text = str(caught.value)
        assert f"process {other.pid} " in text and "share=True" in text and "%wg" not in text
        with pytest.raises(NotSharedError):
            wgmagic.connect(config, share=True, timeout=20)  # a host cannot take the key either
        assert testbed.clients[IDENTITY][0] not in text
        let_go(other)


def test_the_magics_conflict_names_the_share_flag(config_file, config, testbed, capsys):
    with holder(config, "import wgmagic\ntunnel = wgmagic.connect(conf, timeout=20)") as other:
        with magic_shell(testbed) as shell:
            capsys.readouterr()
            shell.run_cell(f"%wg connect {config_file}")
            out = capsys.readouterr()
        text = out.out + out.err
        assert "%wg connect CONFIG --share" in text and "share=True" not in text, text
        assert testbed.clients[IDENTITY][0] not in text
        let_go(other)


def test_share_with_the_key_up_unshared_in_this_process_is_refused(config, testbed):
    with wgmagic.connect(config, timeout=20) as tunnel:
        with pytest.raises(TunnelConflictError, match="share=True") as caught:
            wgmagic.connect(config, share=True)
        assert "close it first" in str(caught.value) and tunnel.holders == 1


def test_another_local_user_cannot_use_the_shared_tunnel(config, testbed):
    with wgmagic.connect(config, share=True, timeout=20) as hosted:
        assert isinstance(hosted, HostedTunnel) and hosted.status()["pid"] > 0
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


def test_two_kernels_on_one_key_the_first_restarts(config_file, testbed):
    """Two Jupyter kernels (jupyter_client) on one key through the magics: the first `%wg connect --share`,
    the second a plain `%wg connect` (attached to the key's host); both run `%%wgsql`; the first shuts down and
    the second's next cell works; the first comes back and both work; `%wg status` and `%wg disconnect`."""
    from jupyter_client.manager import KernelManager

    def start() -> tuple[KernelManager, object]:
        km = KernelManager(kernel_name="python3")
        km.start_kernel(cwd=str(REPO), env=ENV)
        kc = km.client()
        kc.start_channels()
        kc.wait_for_ready(timeout=120)
        return km, kc

    def run(kc, code: str) -> str:
        out: list[str] = []

        def hook(msg) -> None:
            if msg["msg_type"] == "stream":
                out.append(msg["content"]["text"])
            elif msg["msg_type"] == "error":
                out.append("\n".join(msg["content"]["traceback"]))

        reply = kc.execute_interactive(code, timeout=120, output_hook=hook)
        text = "".join(out).strip()
        assert reply["content"]["status"] == "ok" and "Error" not in text, (code, reply["content"], text)
        return text

    def cell(n: int) -> str:
        return f"%%wgsql {testbed.dsn()} -o x\nSELECT {n} AS n\n" if n >= 0 else ""

    def query_in(kc, n: int) -> str:
        run(kc, cell(n))
        return run(kc, "print(int(x['n'][0]))")

    kernels = [start(), start()]
    try:
        run(kernels[0][1], f"%load_ext wgmagic\n%wg connect {config_file} --share --name db")
        up = run(kernels[1][1], f"%load_ext wgmagic\n%wg connect {config_file} --name db")
        assert "shared" in up, up  # attached to the host the first kernel started
        assert [query_in(kc, n) for n, (_km, kc) in enumerate(kernels)] == ["0", "1"]
        status = run(kernels[1][1], "s = %wg status\nprint(repr(s))")
        assert "shared (host process" in status and "db.internal" in status, status
        first_km, first_kc = kernels[0]
        first_kc.stop_channels()
        first_km.shutdown_kernel(now=False)
        assert query_in(kernels[1][1], 2) == "2"  # the second's next cell works
        kernels[0] = start()
        run(kernels[0][1], f"%load_ext wgmagic\n%wg connect {config_file} --name db")
        assert [query_in(kc, n + 3) for n, (_km, kc) in enumerate(kernels)] == ["3", "4"]
        run(kernels[0][1], "%wg disconnect db")
        assert query_in(kernels[1][1], 5) == "5"  # one notebook's disconnect leaves the other's tunnel up
    finally:
        for km, kc in kernels:
            kc.stop_channels()
            if km.is_alive():
                km.shutdown_kernel(now=True)
    wait_for(lambda: sessions(testbed) == 0, 30, "no session left once the host closed")


def test_a_killed_host_is_replaced_at_the_next_request(config, testbed):
    """The host is a process like any other: killed outright, the next request of a handle starts a new host
    (a short reconnect) and works; forwards made before are gone with the old one."""
    import signal

    with wgmagic.connect(config, share=True, timeout=20) as tunnel:
        assert isinstance(tunnel, HostedTunnel)
        assert query(tunnel.url(testbed.dsn()), 21) == 21
        old = tunnel.host_pid
        os.kill(old, signal.SIGKILL)
        wait_for(lambda: not os.path.exists(f"/proc/{old}"), 30, "the host to be gone (and reaped)")
        assert query(tunnel.url(testbed.dsn()), 22) == 22  # a new host, started by this request
        assert tunnel.host_pid not in (0, old) and tunnel.status()["pid"] == tunnel.host_pid


def test_share_from_the_environment_and_the_setting(config, config_file, testbed, monkeypatch, capsys):
    monkeypatch.setenv("WGMAGIC_SHARE", "1")
    with wgmagic.connect(config, timeout=20) as tunnel:
        assert isinstance(tunnel, HostedTunnel)
    path = control_path(load_config(config))
    wait_for(lambda: not os.path.exists(path), 30, "the host to end (it holds the key until then)")
    with wgmagic.connect(config, share=False, timeout=20) as tunnel:  # the argument wins over the environment
        assert isinstance(tunnel, wgmagic.Tunnel)
    monkeypatch.delenv("WGMAGIC_SHARE")
    with magic_shell(testbed) as shell:
        shell.run_line_magic("config", "WgMagic.share = True")
        try:
            result = shell.run_cell(f"%wg connect {config_file} --name viaset")
            assert result.success, result.error_in_exec
            assert isinstance(shell._wgmagic.tunnels["viaset"], HostedTunnel)
            assert "shared (host process" in capsys.readouterr().out
            result = shell.run_cell("%wg forward db.internal:5432")  # a listener in the host
            assert result.success and "libpq: host=" in capsys.readouterr().out
            shell.run_cell("%wg socks")
            out = capsys.readouterr()
            assert "does not serve SOCKS5" in out.out + out.err, out
            result = shell.run_cell("%wg disconnect viaset")
            assert result.success and "viaset" not in shell._wgmagic.tunnels
        finally:
            shell.run_line_magic("config", "WgMagic.share = None")
