"""`wgmagic demo --serve`: the demo's database and gateway kept up for one's own IPython, script or editor, the
lines it prints pasted as printed, and everything stopped and removed on Ctrl-C."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
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


README = Path(__file__).resolve().parents[2] / "README.md"


def _readme_serve_section() -> tuple[list[str], str]:
    """The README's `--serve` examples: its ```python blocks and the psql line, as printed there."""
    text = README.read_text()
    section = text[text.index("With `scripts/demo --serve` running"):text.index("The password comes from `pgpass`")]
    blocks = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    psql = re.search(r'`(psql "host=/tmp/wgmagic-xxxx port=5432 [^"]*")`', section)
    assert len(blocks) == 4 and psql, "the README's --serve examples moved"
    return blocks, psql.group(1)


def _remove_leftovers(pg_dir: str | None) -> None:
    """Whatever a failed test left of the demo's database: its processes killed, its directory removed."""
    if pg_dir:
        for pid in _processes_mentioning(pg_dir):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(pg_dir, ignore_errors=True)


def test_demo_serve_keeps_the_database_up_for_the_readme_lines_then_stops_on_ctrl_c(home, monkeypatch, capsys):
    """`wgmagic demo --serve` from a directory (its default output ./wgmagic-demo), the README's examples run
    there as printed (%wg connect and %%wgsql in this process's IPython, psql through the forward, the
    script in a process of its own) with the password from PGPASSFILE alone; then Ctrl-C."""
    blocks, psql_line = _readme_serve_section()
    out = home / "wgmagic-demo"
    prefix = _as_nobody(home)
    process = subprocess.Popen([*prefix, sys.executable, "-m", "wgmagic.cli", "demo", "--serve"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=home,
                               start_new_session=True, env={**os.environ, "HOME": str(home)})
    output = _Output(process)
    pg_dir = None
    try:
        output.wait_for(r"^\s+psycopg\.connect")
        pg_dir = output.wait_for(r"data in (\S+)\)").group(1)
        assert _processes_mentioning(pg_dir), "PostgreSQL is not running while --serve serves"
        # What it prints to paste: the README's lines, with the absolute paths of this run.
        printed = output.text
        assert f"export PGPASSFILE={out.resolve() / 'pgpass'}\n" in printed
        assert f"%wg connect {out.resolve() / 'wg-demo.conf'}\n" in printed
        assert f"  {blocks[1].splitlines()[0]}\n" in printed  # %%wgsql postgresql://app@db.internal:5432/app
        # The README's steps, from the directory --serve was started in.
        monkeypatch.chdir(home)
        monkeypatch.setenv("PGPASSFILE", "wgmagic-demo/pgpass")  # export PGPASSFILE=wgmagic-demo/pgpass
        monkeypatch.delenv("PGPASSWORD", raising=False)  # the only source of the password: the file
        with magic_shell(None) as shell:
            result = shell.run_cell(blocks[0].replace("%load_ext wgmagic\n", ""))  # magic_shell loaded it
            assert result.success, result.error_in_exec
            result = shell.run_cell(blocks[1])
            assert result.success, result.error_in_exec
            frame = result.result
            assert list(frame.columns) == ["sensor", "readings", "mean_value"] and frame["readings"].sum() == 2000
            capsys.readouterr()
            result = shell.run_cell(blocks[2])
            assert result.success, result.error_in_exec
            libpq = re.search(r"libpq: (host=/\S+ port=5432)$", capsys.readouterr().out, re.MULTILINE)
            assert libpq, "%wg forward printed no Unix-socket libpq string"
            # psql as the README prints it, with the forward's string: PGPASSFILE's `*` line matches the socket.
            conninfo = shlex.split(psql_line)[1].replace("host=/tmp/wgmagic-xxxx port=5432", libpq.group(1))
            done = subprocess.run(["psql", "-X", "-w", "-At", "-c", "SELECT count(*) FROM measurements", conninfo],
                                  capture_output=True, text=True, timeout=60, cwd=home, env=dict(os.environ))
            assert (done.returncode, done.stdout.strip()) == (0, "2000"), done.stderr
        # The script, as printed (its own process: one key, one tunnel; the shell's tunnel is closed now).
        done = subprocess.run([sys.executable, "-c", blocks[3]], capture_output=True, text=True, timeout=120,
                              cwd=home, env=dict(os.environ))
        assert (done.returncode, done.stdout.strip()) == (0, "(2000,)"), done.stderr[-2000:]
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
        _remove_leftovers(pg_dir)


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
        _remove_leftovers(pg_dir)
