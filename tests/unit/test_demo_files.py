"""`wgmagic demo`'s files (wgmagic/demo/run.py) end up where it says, private, whatever was there before
(issue 21, item 2): the output directory 0700, the client config (a private key), the executed notebook and its
HTML copy 0600, a symlink at any of those paths replaced and never followed."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import nbformat
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wgmagic.demo.run import Demo


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def victim(tmp_path):
    path = tmp_path / "victim.txt"
    path.write_text("the user's own file")
    path.chmod(0o644)
    return path


def test_the_demo_replaces_whatever_was_at_its_paths_and_keeps_them_private(tmp_path, victim, capsys):
    out = tmp_path / "wgmagic-demo"
    out.mkdir()
    out.chmod(0o777)
    (out / "wg-demo.conf").symlink_to(victim)
    (out / "quickstart.ipynb").symlink_to(victim)
    (out / "quickstart.html").write_text("an old copy")
    (out / "quickstart.html").chmod(0o644)
    demo = Demo(out)
    assert demo.make_workdir() == out and _mode(out) == 0o700
    assert f"made {out} private (mode 0777 -> 0700)" in capsys.readouterr().out
    assert demo.write_config("[Interface]\nPrivateKey = x\n") == out / "wg-demo.conf"
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 + 1")])
    executed, html = demo.write_outputs(notebook, "quickstart.ipynb")
    assert (executed, html) == (out / "quickstart.ipynb", out / "quickstart.html")
    for path in (out / "wg-demo.conf", executed, html):
        assert not path.is_symlink() and _mode(path) == 0o600, path
    assert (out / "wg-demo.conf").read_text() == "[Interface]\nPrivateKey = x\n"
    assert nbformat.read(executed, as_version=4).cells[0].source == "1 + 1"
    assert "<html" in html.read_text()
    assert victim.read_text() == "the user's own file" and _mode(victim) == 0o644
    assert sorted(p.name for p in out.iterdir()) == ["quickstart.html", "quickstart.ipynb", "wg-demo.conf"]


def test_a_new_output_directory_is_made_0700_under_any_umask(tmp_path, capsys):
    old = os.umask(0o000)
    try:
        demo = Demo(tmp_path / "a" / "b")
        demo.make_workdir()
        demo.write_config("x")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "a" / "b") == 0o700 and _mode(tmp_path / "a" / "b" / "wg-demo.conf") == 0o600
    assert "private" not in capsys.readouterr().out


def test_a_relative_output_directory_is_resolved_when_given(tmp_path, monkeypatch):
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    monkeypatch.chdir(tmp_path / "first")
    demo = Demo("wgmagic-demo")
    assert demo.workdir == tmp_path.resolve() / "first" / "wgmagic-demo"
    assert demo.config_path == demo.workdir / "wg-demo.conf"
    monkeypatch.chdir(tmp_path / "second")
    demo.make_workdir()
    demo.write_config("x")
    assert (tmp_path / "first" / "wgmagic-demo" / "wg-demo.conf").read_text() == "x"
    assert list((tmp_path / "second").iterdir()) == []


def test_an_output_directory_that_is_a_symlink_is_refused(tmp_path, victim):
    real = tmp_path / "shared"
    real.mkdir()
    real.chmod(0o777)
    (tmp_path / "wgmagic-demo").symlink_to(real)
    with pytest.raises(NotADirectoryError) as caught:
        Demo(tmp_path / "wgmagic-demo").make_workdir()
    assert caught.value.filename == str(tmp_path / "wgmagic-demo")
    assert _mode(real) == 0o777 and list(real.iterdir()) == []


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(password=st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r\x00"), min_size=1))
def test_the_demo_pgpass_gives_any_password_back_for_the_real_name_and_for_a_forward_socket(tmp_path, monkeypatch,
                                                                                           password):
    """The demo's pgpass, read back as libpq reads it (wgmagic.sql.passwords follows libpq's rules): the
    password, whatever its characters (':' and '\\' escaped), for db.internal:5432 (%%wgsql) and for a
    forward's Unix socket (host = the socket's directory, as `%wg forward` prints it); nothing for another
    port, user or database. 0600."""
    from wgmagic.connstr import parse_dsn
    from wgmagic.sql.passwords import pgpass_lookup

    demo = Demo(tmp_path / "wgmagic-demo")
    demo.make_workdir()
    path = demo.write_pgpass(password)
    assert _mode(path) == 0o600
    monkeypatch.setenv("PGPASSFILE", str(path))
    assert pgpass_lookup(parse_dsn("postgresql://app@db.internal:5432/app")) == password
    assert pgpass_lookup(parse_dsn("host=/tmp/wgmagic-abcd1234 port=5432 user=app dbname=app")) == password
    assert pgpass_lookup(parse_dsn("host=/tmp/wgmagic-abcd1234 port=5433 user=app dbname=app")) is None
    assert pgpass_lookup(parse_dsn("host=/tmp/wgmagic-abcd1234 port=5432 user=other dbname=app")) is None
    assert pgpass_lookup(parse_dsn("postgresql://app@db.internal:5432/other")) is None
