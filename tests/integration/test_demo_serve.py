"""`wgmagic demo --serve`: the demo's database and gateway kept up for one's own IPython, script or editor, the
lines it prints pasted as printed, and everything stopped and removed on Ctrl-C."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.helpers import NOBODY, magic_shell

pytestmark = pytest.mark.integration


@pytest.fixture
def home() -> Iterator[Path]:
    """A directory of its own under the system's temporary directory (pytest's tmp_path sits in a 0700
    directory of root's, which `nobody` cannot pass through); removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="wgmagic-serve-test-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _as_nobody(home: Path) -> list[str]:
    """setpriv to `nobody` (it execs, so a signal to the child's pid reaches the demo itself) when this
    checkout's Python is reachable for it; else as we are (nothing it does needs root either way)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        return []
    os.chown(home, 65534, 65534)
    probe = subprocess.run([*NOBODY, sys.executable, "-c", "import wgmagic"], capture_output=True, cwd=home)
    return NOBODY if probe.returncode == 0 else []


class _Output:
    """The demo's stdout+stderr, read by a thread; `wait_for(pattern)` waits (generously) until it appears."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.text, self.process = "", process
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._thread.start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            with self._changed:
                self.text += line
                self._changed.notify_all()

    def wait_for(self, pattern: str, timeout: float = 120.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not (found := re.search(pattern, self.text, re.MULTILINE)):
                left = deadline - time.monotonic()
                assert left > 0 and self.process.poll() is None, f"no {pattern!r} in the demo's output:\n{self.text}"
                self._changed.wait(min(left, 1.0))
            return found

    def finish(self) -> str:
        self._thread.join(30)
        return self.text


def _processes_mentioning(text: str) -> list[int]:
    """Pids whose command line contains `text` (the database's temporary directory: postgres and its children)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
    return found


def test_demo_serve_keeps_the_database_up_for_the_readme_lines_then_stops_on_ctrl_c(home, monkeypatch, capsys):
    out = home / "out"
    prefix = _as_nobody(home)
    process = subprocess.Popen([*prefix, sys.executable, "-m", "wgmagic.cli", "demo", "--serve", "--output-dir",
                                str(out)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               cwd=home, start_new_session=True, env={**os.environ, "HOME": str(home)})
    output = _Output(process)
    pg_dir = None
    try:
        output.wait_for(r"^\s+psycopg\.connect")
        pg_dir = output.wait_for(r"data in (\S+)\)").group(1)
        assert _processes_mentioning(pg_dir), "PostgreSQL is not running while --serve serves"
        pgpass = output.wait_for(r"^\s+export PGPASSFILE=(\S+)$").group(1)
        connect = output.wait_for(r"^\s+(%wg connect \S+)$").group(1)
        wgsql = output.wait_for(r"^\s+(%%wgsql \S+)$").group(1)
        assert pgpass == str(out.resolve() / "pgpass") and connect == f"%wg connect {out.resolve() / 'wg-demo.conf'}"
        monkeypatch.setenv("PGPASSFILE", pgpass)  # the only source of the password below
        monkeypatch.delenv("PGPASSWORD", raising=False)
        with magic_shell(None) as shell:
            # The printed lines, run as printed, in this process.
            result = shell.run_cell(connect)
            assert result.success, result.error_in_exec
            result = shell.run_cell(f"{wgsql}\nSELECT count(*) AS n FROM measurements")
            assert result.success, result.error_in_exec
            assert int(result.result["n"].iloc[0]) == 2000
            capsys.readouterr()
            result = shell.run_cell("%wg forward db.internal:5432")
            assert result.success, result.error_in_exec
            libpq = re.search(r"libpq: (.*)$", capsys.readouterr().out, re.MULTILINE)
            assert libpq and libpq.group(1).startswith("host=/"), "not a Unix-socket forward"
            # psql through the forward, with the libpq string %wg forward printed and only PGPASSFILE.
            env = {k: v for k, v in os.environ.items() if k != "PGPASSWORD"}
            done = subprocess.run(["psql", "-X", "-w", "-At", "-c", "SELECT count(*) FROM measurements",
                                   f"{libpq.group(1)} user=app dbname=app"], capture_output=True, text=True,
                                  timeout=60, env=env)
            assert (done.returncode, done.stdout.strip()) == (0, "2000"), done.stderr
            # The README's psycopg row, as written.
            import psycopg

            import wgmagic

            tunnel = wgmagic.get_tunnel()
            with psycopg.connect(tunnel.url("host=db.internal user=app dbname=app")) as db:
                assert db.execute("SELECT count(*) FROM measurements").fetchone() == (2000,)
        process.send_signal(signal.SIGINT)
        assert process.wait(60) == 0
        text = output.finish()
        print(text, "as nobody" if prefix else "as the test's user")
        assert "stopped the gateway and PostgreSQL" in text
        # Nothing left: the gateway lived in the demo's process (gone: it exited), PostgreSQL's processes are
        # gone and its temporary directory (data, socket, log) removed.
        assert not _processes_mentioning(pg_dir) and not Path(pg_dir).exists()
        # The output directory stays, private: the config, the pgpass file.
        assert stat.S_IMODE(out.lstat().st_mode) == 0o700
        assert out.lstat().st_uid == (65534 if prefix else os.getuid())
        names = sorted(path.name for path in out.iterdir())
        assert names == ["pgpass", "wg-demo.conf"], names
        for path in out.iterdir():
            assert stat.S_IMODE(path.lstat().st_mode) == 0o600 and not path.is_symlink(), path
        password = (out / "pgpass").read_text().splitlines()[0].split(":", 4)[4]
        assert password not in text
    finally:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
        if pg_dir:
            for pid in _processes_mentioning(pg_dir):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            shutil.rmtree(pg_dir, ignore_errors=True)


def test_demo_serve_stops_on_sigterm(tmp_path):
    """SIGTERM (a service manager, `kill`) stops it as Ctrl-C does."""
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", "wgmagic.cli", "demo", "--serve", "--output-dir", str(out)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
                               start_new_session=True)
    output = _Output(process)
    pg_dir = None
    try:
        pg_dir = output.wait_for(r"data in (\S+)\)").group(1)
        output.wait_for(r"^\s+psycopg\.connect")
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
        assert "stopped the gateway and PostgreSQL" in output.finish()
        assert not _processes_mentioning(pg_dir) and not Path(pg_dir).exists()
    finally:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        if pg_dir:
            for pid in _processes_mentioning(pg_dir):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            shutil.rmtree(pg_dir, ignore_errors=True)
