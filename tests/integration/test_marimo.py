"""marimo: a notebook that connects and queries through wgmagic, run headless with `marimo export html`; its
connect cell run twice in one process (marimo re-runs a cell whenever its inputs change, and serves every viewer
of an app from one process), and two nested `with wgmagic.connect(conf)` blocks, plain and shared."""

from __future__ import annotations

import html
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

import wgmagic
from tests.integration.helpers import wait_for
from wgmagic.config import load_config
from wgmagic.runtime.host import control_path
from wgmagic.runtime.hosted import HostedTunnel

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
marimo = pytest.importorskip("marimo")

IDENTITY = 1
REPO = Path(__file__).resolve().parents[2]
APP = Path(__file__).with_name("marimo") / "query_app.py"
EXPECTED = "wgmagic-marimo: rows=100 nested=42 same=True"


@pytest.fixture
def app_env(testbed, tmp_path, monkeypatch):
    """The config in a 0600 file and the DSN (with its password) in the environment: nothing secret on a
    command line that ps shows."""
    config = tmp_path / "marimo.conf"
    config.write_text(testbed.client_config(identity=IDENTITY))
    config.chmod(0o600)
    values = {"WGMAGIC_TEST_CONFIG": str(config), "WGMAGIC_TEST_DSN": testbed.dsn()}
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return {**os.environ, **values, "PYTHONPATH": str(REPO)}


@pytest.fixture
def app_file(tmp_path):
    """A copy of the notebook in tmp_path: marimo keeps a session cache (__marimo__/) beside the file."""
    copy = tmp_path / APP.name
    shutil.copyfile(APP, copy)
    return copy


def load_app(path: Path):
    spec = importlib.util.spec_from_file_location("wgmagic_marimo_query_app", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.app


def test_marimo_export_html_connects_and_queries(app_env, app_file, testbed, tmp_path):
    out = tmp_path / "query_app.html"
    marimo_bin = shutil.which("marimo", path=os.path.dirname(sys.executable)) or "marimo"
    result = subprocess.run([marimo_bin, "export", "html", str(app_file), "-o", str(out)], env=app_env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    page = out.read_text()
    assert EXPECTED in html.unescape(page) or EXPECTED in page.replace("\\u003d", "="), page[-2000:]
    assert testbed.db_password not in page and testbed.clients[IDENTITY][0] not in page


def test_the_connect_cell_run_twice_in_one_process(app_env, app_file, testbed):
    app = load_app(app_file)
    _outputs, first = app.run()
    _outputs, second = app.run()  # a re-run of every cell, the connect cell included, in the same process
    tunnel = first["tunnel"]
    try:
        assert second["tunnel"] is tunnel and tunnel.holders == 2  # connecting again hands the tunnel back
        assert first["rows"] == second["rows"] == 100
        assert second["nested"] == 42 and second["nested_same"] is True
        second["tunnel"].close()  # one holder lets go: the tunnel stays up for the other
        assert not tunnel.closed and tunnel.holders == 1
        with psycopg.connect(tunnel.url(testbed.dsn()), connect_timeout=20) as conn:
            assert conn.execute("SELECT 7").fetchone()[0] == 7
    finally:
        tunnel.close()
    assert tunnel.closed and tunnel.holders == 0


def test_nested_with_blocks_plain_and_shared(app_env, testbed):
    config = testbed.client_config(identity=IDENTITY)
    with wgmagic.connect(config, timeout=20) as outer:
        with wgmagic.connect(config, timeout=20) as inner:
            assert inner is outer and outer.holders == 2
        assert not outer.closed and outer.holders == 1
        with psycopg.connect(outer.url(testbed.dsn()), connect_timeout=20) as conn:
            assert conn.execute("SELECT 1").fetchone()[0] == 1
    assert outer.closed
    with wgmagic.connect(config, share=True, timeout=20) as outer:
        assert isinstance(outer, HostedTunnel)
        with wgmagic.connect(config, share=True) as inner:
            assert inner is outer and outer.holders == 2
        assert not outer.closed
        with psycopg.connect(outer.url(testbed.dsn()), connect_timeout=20) as conn:
            assert conn.execute("SELECT 2").fetchone()[0] == 2
    assert outer.closed
    path = control_path(load_config(config))
    assert path is not None
    wait_for(lambda: not os.path.exists(path), 30, "the host to end once nobody is attached")
