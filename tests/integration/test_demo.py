"""`wgmagic demo --headless`: local PostgreSQL, a rootless gateway, the quickstart executed (issue 7)."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def _as_unprivileged(tmp_path: Path) -> list[str]:
    """Run as `nobody` when this checkout's Python is reachable for it; else as we are (still no TUN, no
    route, no capability used: the gateway and the client are plain UDP sockets either way)."""
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        return []
    probe = subprocess.run(["runuser", "-u", "nobody", "--", sys.executable, "-c", "import wgmagic"],
                           capture_output=True)
    if probe.returncode != 0:
        return []
    os.chown(tmp_path, 65534, 65534)
    return ["runuser", "-u", "nobody", "--", "env", f"HOME={tmp_path}"]


def test_demo_headless_executes_the_quickstart(tmp_path):
    out = tmp_path / "out"
    prefix = _as_unprivileged(tmp_path)
    done = subprocess.run([*prefix, sys.executable, "-m", "wgmagic.cli", "demo", "--headless", "--output-dir",
                           str(out)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    print(done.stdout, done.stderr[-2000:], "as nobody" if prefix else "as the test's user")
    assert done.returncode == 0
    notebook = json.loads((out / "quickstart.ipynb").read_text())
    outputs = [o for cell in notebook["cells"] if cell["cell_type"] == "code" for o in cell["outputs"]]
    assert not [o for o in outputs if o["output_type"] == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "no chart in the executed notebook"
    assert any("mean_value" in "".join(o.get("data", {}).get("text/html", "")) for o in outputs)
    printed = "".join("".join(o.get("text", "")) for o in outputs if o["output_type"] == "stream")
    found = re.search(r"(\d+) readings above (\d+)", printed)
    assert found and int(found.group(1)) > 0, printed  # the parameter example returns rows of the sample data
    sources = ["".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert "%wg plot" in sources and not any("--window" in s for s in sources)  # the axis fits what ran
    assert (out / "quickstart.html").stat().st_size > 10_000
    assert (out / "wg-demo.conf").stat().st_mode & 0o077 == 0
    assert "stopped the gateway and PostgreSQL" in done.stdout
    # The password for use outside the notebook: in a private .pgpass-format file, never in the output.
    pgpass = out / "pgpass"
    assert stat.S_IMODE(pgpass.stat().st_mode) == 0o600
    # The real name first (%%wgsql, hostaddr), then any host for a forward's Unix socket (libpq matches the
    # socket's directory): the same password, this database's port, user and database only.
    lines = [line.split(":", 4) for line in pgpass.read_text().splitlines()]
    assert [fields[:4] for fields in lines] == [["db.internal", "5432", "app", "app"], ["*", "5432", "app", "app"]]
    password = lines[0][4]
    assert len(password) >= 16 and lines[1][4] == password
    assert password not in done.stdout + done.stderr and f"PGPASSFILE={pgpass}" in done.stdout


def test_demo_output_lands_where_it_says_private_whatever_was_there(tmp_path):
    """Issue 21 item 2: an output directory left loose (0777) by an earlier run, a symlink where the client
    config goes and an old 0644 HTML copy: the directory becomes 0700, each file is replaced (never written
    through the symlink) and is 0600; the messages name the absolute paths."""
    prefix = _as_unprivileged(tmp_path)
    uid = 65534 if prefix else os.getuid()
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "notes.txt"
    victim.write_text("the user's own file")
    (out / "wg-demo.conf").symlink_to(victim)
    (out / "quickstart.html").write_text("an old copy")
    for path in (out, victim, out / "quickstart.html"):
        os.chown(path, uid, uid)
    os.lchown(out / "wg-demo.conf", uid, uid)
    out.chmod(0o777)
    victim.chmod(0o644)
    (out / "quickstart.html").chmod(0o644)
    done = subprocess.run([*prefix, sys.executable, "-m", "wgmagic.cli", "demo", "--headless", "--output-dir",
                           "out"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    print(done.stdout, done.stderr[-2000:])
    assert done.returncode == 0
    assert victim.read_text() == "the user's own file" and stat.S_IMODE(victim.stat().st_mode) == 0o644
    for name in ("wg-demo.conf", "pgpass", "quickstart.ipynb", "quickstart.html"):
        assert not (out / name).is_symlink() and stat.S_IMODE((out / name).lstat().st_mode) == 0o600, name
    assert "PrivateKey" in (out / "wg-demo.conf").read_text()
    assert stat.S_IMODE(out.lstat().st_mode) == 0o700
    absolute = tmp_path.resolve() / "out"
    assert f"client config written to {absolute / 'wg-demo.conf'}" in done.stdout
    assert f"made {absolute} private (mode 0777 -> 0700)" in done.stdout
