"""Long temporary directories (issue 11, item 6): with a TMPDIR of 77 bytes or more, the default Unix-socket
forward (sun_path holds 108 bytes) still works from a short private directory or, failing that, loopback TCP
with a logged warning (the loopback guard keeps other users out); a directory that cannot hold the socket is
named as the cause; no directory is left behind."""

from __future__ import annotations

import logging
import os
import re
import tempfile
import warnings

import psycopg
import pytest

from tests.integration.helpers import magic_shell
from wgmagic.runtime.services import forward as forward_module
from wgmagic.runtime.services.listener import SUN_PATH_MAX, SocketPathError
from wgmagic.runtime.tunnel import connect

pytestmark = pytest.mark.integration


@pytest.fixture
def long_tmpdir(tmp_path, monkeypatch):
    """A private TMPDIR of 120 bytes, as an HPC scheduler or a JupyterHub spawner may set."""
    path = str(tmp_path)
    path = os.path.join(path, "j" * (120 - len(path) - 1))
    os.mkdir(path, 0o700)
    assert len(os.fsencode(path)) == 120
    monkeypatch.setenv("TMPDIR", path)
    monkeypatch.setattr(tempfile, "tempdir", None)  # tempfile caches its directory: let it see TMPDIR
    assert tempfile.gettempdir() == path
    return path


def _ours(directory: str | None) -> set[str]:
    """wgmagic's temporary directories in `directory` (not the test bed's, nor the per-user key-lock
    directory wgmagic-UID, which is meant to stay)."""
    if not directory or not os.path.isdir(directory):
        return set()
    return {name for name in os.listdir(directory)
            if name.startswith("wgmagic-") and "bed" not in name and name != f"wgmagic-{os.getuid()}"}


@pytest.fixture(scope="module")
def tunnel(testbed):
    with connect(testbed.client_config(identity=1)) as tun:
        yield tun


def _query(params: dict[str, str], testbed) -> int:
    with psycopg.connect(**params, user="app", password=testbed.db_password, dbname="app",
                         sslmode="disable") as conn:
        return conn.execute("select count(*) from measurements").fetchone()[0]


@pytest.mark.parametrize("xdg", [True, False])
def test_default_forward_under_a_long_tmpdir(testbed, tunnel, long_tmpdir, tmp_path_factory, monkeypatch, xdg):
    if xdg:
        runtime = str(tmp_path_factory.mktemp("xdg", numbered=True))
        monkeypatch.setenv("XDG_RUNTIME_DIR", runtime)
    else:
        monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    homes = [long_tmpdir, os.environ.get("XDG_RUNTIME_DIR"), "/tmp"]
    before = {home: _ours(home) for home in homes}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a short private directory exists: no fallback, no warning
        forward = tunnel.forward("db.internal:5432")
    try:
        socket_path = forward.local_address
        assert isinstance(socket_path, str) and len(os.fsencode(socket_path)) <= SUN_PATH_MAX
        directory = os.path.dirname(socket_path)
        assert os.path.dirname(directory) == (os.environ["XDG_RUNTIME_DIR"] if xdg else "/tmp")
        assert os.stat(directory).st_mode & 0o777 == 0o700
        assert _query(forward.libpq_params(), testbed) == 100
    finally:
        tunnel.close_forward(forward)
    assert not os.path.exists(directory)
    assert {home: _ours(home) for home in homes} == before


def test_falls_back_to_loopback_tcp_with_a_warning_when_no_short_directory_exists(testbed, tunnel, long_tmpdir,
                                                                                   monkeypatch, caplog):
    monkeypatch.setattr(forward_module, "_short_private_directory", lambda name: None)
    with caplog.at_level(logging.WARNING, logger="wgmagic"):
        forward = tunnel.forward("db.internal:5432")
    assert re.search(r"TMPDIR .* 120 bytes long.*sun_path.*listens on TCP 127\.0\.0\.1 instead, and admits "
                     r"connections from this user's processes only", caplog.text), caplog.text
    try:
        host, port = forward.local_address
        assert host == "127.0.0.1" and port > 0
        assert _query(forward.libpq_params(), testbed) == 100
    finally:
        tunnel.close_forward(forward)
    assert not _ours(long_tmpdir)


def test_a_named_directory_too_long_for_a_socket_is_the_error(tunnel, long_tmpdir):
    with pytest.raises(SocketPathError, match=r"Unix socket path .* bytes long, more than the 107 .*sun_path"):
        tunnel.forward("db.internal:5432", local=f"unix:{long_tmpdir}")
    assert not _ours(long_tmpdir)
    assert not tunnel.forwards


def test_wgsql_under_a_long_tmpdir(testbed, long_tmpdir, capsys):
    homes = [long_tmpdir, os.environ.get("XDG_RUNTIME_DIR"), "/tmp"]
    before = {home: _ours(home) for home in homes}
    with magic_shell(testbed, 2, name="longtmp", long_dsn=testbed.dsn()) as shell:
        result = shell.run_cell("%%wgsql {long_dsn} --alias longdb --tunnel longtmp\n"
                                "SELECT count(*) AS n FROM measurements")
        out = capsys.readouterr()
        assert result.success, (result.error_in_exec, out)
        assert result.result["n"][0] == 100
        assert testbed.db_password not in out.out + out.err
        shell.run_cell("%wgsql longdb --close")
        shell.run_cell("%wg disconnect longtmp")
    assert {home: _ours(home) for home in homes} == before
