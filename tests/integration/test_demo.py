"""`wgmagic demo --headless`: local PostgreSQL, a rootless gateway, the quickstart executed (issue 7)."""

from __future__ import annotations

import json
import os
import shutil
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
    assert (out / "quickstart.html").stat().st_size > 10_000
    assert (out / "wg-demo.conf").stat().st_mode & 0o077 == 0
    assert "stopped the gateway and PostgreSQL" in done.stdout
