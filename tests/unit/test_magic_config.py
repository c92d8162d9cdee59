"""Settings and named connections, as JupySQL users expect them (issue 17): `%config WgMagic.<name>`, the
`[tool.wgmagic]` table of a project's pyproject.toml or the user's config file, and `%%wgsql --section NAME` from
a connections file that holds no password. No root: `sqlite://` with --no-tunnel, as JupySQL tests its magic."""

from __future__ import annotations

import logging

import pytest
from IPython.core.interactiveshell import InteractiveShell

from tests.secret_probe import SECRET, leaks, seen
from wgmagic.errors import ConfigError
from wgmagic.notebook.settings import load_settings, read_connection, user_config_dir

TWENTY = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 20) SELECT x FROM c"


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty project directory as the current directory, and an empty user configuration directory."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text('[project]\nname = "analysis"\n')
    monkeypatch.chdir(project)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    return tmp_path


@pytest.fixture
def load(home):
    shells = []

    def load_extension():
        sh = InteractiveShell.instance()
        sh.run_line_magic("load_ext", "wgmagic")
        shells.append(sh)
        return sh

    yield load_extension
    for sh in shells:
        sh.run_line_magic("unload_ext", "wgmagic")
        sh.config.pop("WgMagic", None)


def _shown(result) -> int:
    """Rows the cell displayed: its result, or the head() it displayed itself."""
    return len(result.result) if result.result is not None else -1


def test_config_displaylimit_limits_the_rows_shown(load, capsys):
    sh = load()
    assert sh.run_cell(f"%%wgsql sqlite:// --no-tunnel --alias lite\n{TWENTY}").success
    sh.run_line_magic("config", "WgMagic.displaylimit = 5")
    capsys.readouterr()
    result = sh.run_cell(f"%%wgsql\n{TWENTY}")
    out = capsys.readouterr().out
    assert "20 rows; showing the first 5" in out
    assert len(result.result) == 20 and len(sh.user_ns["_"]) == 20  # the whole frame is the result
    shown = out.splitlines()
    assert any(line.split()[:1] == ["4"] for line in shown) and not any(line.split()[:1] == ["19"] for line in shown)
    sh.run_line_magic("config", "WgMagic.displaylimit = 0")  # 0: every row, as in JupySQL
    result = sh.run_cell(f"%%wgsql\n{TWENTY}")
    assert len(result.result) == 20
    sh.run_line_magic("config", "WgMagic.displaylimit = -1")  # refused (IPython logs the TraitError)
    assert sh._wgmagic.displaylimit == 0


def test_pyproject_tool_wgmagic_is_picked_up(home, load, capsys):
    (home / "project" / "pyproject.toml").write_text(
        '[project]\nname = "analysis"\n\n[tool.wgmagic]\ndisplaylimit = 3\ntimeout = 2.5\nautocommit = false\n')
    (home / "project" / "sub").mkdir()
    import os

    os.chdir(home / "project" / "sub")  # the nearest pyproject.toml is the parent's
    sh = load()
    assert "settings from" in capsys.readouterr().out
    magics = sh._wgmagic
    assert (magics.displaylimit, magics.timeout, magics.autocommit) == (3, 2.5, False)
    result = sh.run_cell(f"%%wgsql sqlite:// --no-tunnel\n{TWENTY}")
    assert "showing the first 3" in capsys.readouterr().out
    sh.run_line_magic("config", "WgMagic.displaylimit = 7")  # %config wins over the file
    sh.run_cell(f"%%wgsql\n{TWENTY}")
    assert "showing the first 7" in capsys.readouterr().out
    assert result.success


def test_user_config_file_when_the_project_has_no_table(home, load):
    directory = user_config_dir()
    assert str(directory).startswith(str(home / "xdg"))
    directory.mkdir(parents=True)
    (directory / "config.toml").write_text("[tool.wgmagic]\ndisplaylimit = 11\nprogress_bar = false\n")
    sh = load()
    assert (sh._wgmagic.displaylimit, sh._wgmagic.progress_bar) == (11, False)


def test_a_project_table_replaces_the_user_file(home):
    directory = user_config_dir()
    directory.mkdir(parents=True)
    (directory / "config.toml").write_text("displaylimit = 11\ntimeout = 4\n")  # top-level keys work too
    assert load_settings()[0] == {"displaylimit": 11, "timeout": 4}
    (home / "project" / "pyproject.toml").write_text("[tool.wgmagic]\ndisplaylimit = 2\n")
    values, path = load_settings()
    assert values == {"displaylimit": 2} and path == home / "project" / "pyproject.toml"


def test_ipython_config_beats_the_file(home, load):
    (home / "project" / "pyproject.toml").write_text("[tool.wgmagic]\ndisplaylimit = 3\ntimeout = 1\n")
    sh = InteractiveShell.instance()
    sh.config.WgMagic.displaylimit = 9
    sh = load()
    assert (sh._wgmagic.displaylimit, sh._wgmagic.timeout) == (9, 1.0)


def test_bad_settings_are_reported_not_fatal(home, load, capsys):
    (home / "project" / "pyproject.toml").write_text('[tool.wgmagic]\ndisplaylimit = "many"\ncolour = 1\n')
    sh = load()
    err = capsys.readouterr().err
    assert "displaylimit" in err and "unknown setting 'colour'" in err
    assert sh._wgmagic.displaylimit == 50
    (home / "project" / "pyproject.toml").write_text("[tool.wgmagic\n")
    with pytest.raises(ConfigError, match=r"pyproject\.toml: is not valid TOML"):
        load_settings()


def test_section_connects_from_the_connections_file(home, load, capsys):
    (home / "connections.ini").write_text("[lite]\ndrivername = sqlite\ntunnel = none\n\n"
                                          "[pg]\ndsn = postgresql://app@db.internal:5432/app\ntunnel = corp\n")
    sh = load()
    sh.run_line_magic("config", f"WgMagic.dsn_filename = {str(home / 'connections.ini')!r}")
    result = sh.run_cell("%%wgsql --section lite\nSELECT 41 + 1 AS answer")
    assert result.success, result.error_in_exec
    assert int(result.result["answer"][0]) == 42
    assert "lite" in sh._wgmagic.connections  # the alias is the section name, as in JupySQL 0.10
    result = sh.run_cell("%%wgsql --section pg\nSELECT 1")  # that tunnel is not up: said so
    assert "no tunnel is up" in str(result.error_in_exec)
    result = sh.run_cell("%%wgsql --section nosuch\nSELECT 1")
    assert "has no section [nosuch] (sections: lite, pg)" in str(result.error_in_exec)


@pytest.mark.parametrize("text", [
    f"[w]\ndsn = postgresql://app:{SECRET}@db.internal/app\n",
    f"[w]\ndsn = host=db.internal user=app password={SECRET}\n",
    f"[w]\ndrivername = postgresql\nusername = app\npassword = {SECRET}\nhost = db.internal\n",
])
def test_a_password_in_the_connections_file_is_refused_and_never_shown(home, load, capsys, caplog, text):
    path = home / "connections.ini"
    path.write_text(text)
    with pytest.raises(ConfigError, match="never reads passwords") as info:
        read_connection(path, "w")
    assert SECRET not in str(info.value)
    sh = load()
    sh._wgmagic.dsn_filename = str(path)
    caplog.set_level(logging.DEBUG)
    shown = seen(sh, "%%wgsql --section w --no-tunnel\nSELECT 1", capsys, caplog)
    assert "never reads passwords" in shown and not leaks(shown), shown


def test_jupysql_keys_make_a_url(home):
    path = home / "c.ini"
    path.write_text("[pg]\ndrivername = postgresql\nusername = app\nhost = fd00::1\nport = 6432\n"
                    "database = app\nsslmode = verify-full\n")
    connection = read_connection(path, "pg")
    assert connection.dsn == "postgresql://app@[fd00::1]:6432/app?sslmode=verify-full"
    assert (connection.tunnel, connection.direct) == (None, False)


def test_assigned_wgsql_line_holds_every_row_beyond_the_display_limit(load, capsys):
    """`y = %wgsql SELECT ...` with more rows than displaylimit: a DataFrame with every row (it was None), shown
    limited; what is derived from it is a plain DataFrame."""
    import pandas as pd

    sh = load()
    assert sh.run_cell(f"%%wgsql sqlite:// --no-tunnel --alias lite\n{TWENTY}").success
    sh.run_line_magic("config", "WgMagic.displaylimit = 5")
    assert sh.run_cell(f"y = %wgsql {TWENTY}").success
    y = sh.user_ns["y"]
    assert isinstance(y, pd.DataFrame) and len(y) == 20 and list(y["x"]) == list(range(1, 21))
    assert "20 rows; showing the first 5" in repr(y) and "20 rows" in y._repr_html_()
    assert type(y.head(10)) is pd.DataFrame and len(y[y["x"] > 2]) == 18
    sh.run_line_magic("config", "WgMagic.displaylimit = 50")
    assert sh.run_cell(f"z = %wgsql {TWENTY}").success and type(sh.user_ns["z"]) is pd.DataFrame


def test_a_limited_result_pickles_and_compares_as_its_rows():
    import pickle

    import pandas as pd

    from wgmagic.notebook.frames import limited_frame

    frame = pd.DataFrame({"x": range(100)})
    limited = limited_frame(frame, 5)
    back = pickle.loads(pickle.dumps(limited))
    pd.testing.assert_frame_equal(pd.DataFrame(back), frame)
    assert "100 rows; showing the first 5" in repr(back)


def test_closing_an_alias_that_is_not_open_says_so(load, capsys):
    """`%wgsql NAME --close` with a name that is no open connection: a UsageError naming it and the open ones
    (it was run as the SQL "NAME --close" on the current connection)."""
    sh = load()
    assert sh.run_cell(f"%%wgsql sqlite:// --no-tunnel --alias lite\n{TWENTY}").success
    capsys.readouterr()
    sh.run_cell("%wgsql app --close")
    out = capsys.readouterr()
    assert "no connection named 'app'; known: lite" in out.out + out.err
    assert "syntax error" not in (out.out + out.err).lower()
    assert sh.run_cell("%wgsql lite --close").success
    assert "closed connection 'lite'" in capsys.readouterr().out
