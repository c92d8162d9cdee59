"""Every settings file wgmagic reads, read as INI and TOML users expect (issue 21, item 1 and 4): the
connections file as configparser/JupySQL read connections.ini (inline `;`/`#` comments after whitespace,
[DEFAULT], no interpolation, the same rules for every key, a bad value named by section and key), the
`[tool.wgmagic]` table and config.toml likewise, and the settings JupySQL also has accept what JupySQL accepts.
The README's own connections-file example is read exactly as printed."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from IPython.core.interactiveshell import InteractiveShell

from wgmagic.errors import ConfigError
from wgmagic.notebook.settings import load_settings, read_connection, user_config_dir

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_connections_file() -> str:
    """The ```ini block of README.md's "Named connections" paragraph, byte for byte."""
    match = re.search(r"Named connections live in.*?```ini\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert match, "README.md has no connections-file example"
    return match.group(1)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "connections.ini"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def home(tmp_path, monkeypatch):
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


# ---- the connections file ----------------------------------------------------------------------------------

def test_the_readme_example_as_printed(tmp_path):
    path = write(tmp_path, readme_connections_file())
    warehouse = read_connection(path, "warehouse")
    assert (warehouse.tunnel, warehouse.direct) == ("corp", False)  # was 'corp            ; the %wg ...'
    assert warehouse.dsn == "postgresql://analyst@db.internal:5432/warehouse?sslmode=verify-full"
    reports = read_connection(path, "reports")  # a comment after a [section] header too
    assert reports.dsn == "postgresql://reporter@reports.internal/reports"
    assert (reports.tunnel, reports.direct) == (None, False)


@pytest.mark.parametrize(("line", "tunnel", "direct"), [
    ("tunnel = none ; direct", None, True),
    ("tunnel = None # direct", None, True),
    ("tunnel = off\t; tab before the comment", None, True),
    ("tunnel = corp ; the one to go through", "corp", False),
    ("tunnel = corp\t# hash comment", "corp", False),
    ("tunnel = corp;no-space-is-part-of-the-value", "corp;no-space-is-part-of-the-value", False),
    ("tunnel =", None, False),
    ("tunnel = ; only a comment", None, False),
    ("Tunnel = corp", "corp", False),  # keys are case-insensitive, as in configparser
])
def test_tunnel_values(tmp_path, line, tunnel, direct):
    path = write(tmp_path, f"[w]\ndsn = postgresql://app@db.internal/app\n{line}\n")
    connection = read_connection(path, "w")
    assert (connection.tunnel, connection.direct) == (tunnel, direct)


def test_inline_comments_after_every_key(tmp_path):
    path = write(tmp_path, "; a whole-line comment\n# another\n[pg]   ; the section\n"
                 "drivername = postgresql   ; the dialect\nusername = app # who\nhost = db.internal ; where\n"
                 "port = 6432 ; pgbouncer\ndatabase = app ; which\nsslmode = verify-full ; an option\n")
    assert read_connection(path, "pg").dsn == "postgresql://app@db.internal:6432/app?sslmode=verify-full"
    path = write(tmp_path, "[w]\ndsn = postgresql://app@db.internal/app?sslmode=require   ; with a comment\n")
    assert read_connection(path, "w").dsn == "postgresql://app@db.internal/app?sslmode=require"
    path = write(tmp_path, "[w]\ndsn = host=db.internal user=app dbname=app # keywords\n")
    assert read_connection(path, "w").dsn == "host=db.internal user=app dbname=app"


def test_a_percent_stays_as_written(tmp_path):
    path = write(tmp_path, "[w]\ndsn = postgresql://an%40corp@db.internal/app%25x\ntunnel = corp\n"
                 "[k]\ndrivername = postgresql\nusername = 50%off\nhost = db.internal\napplication_name = %(x)s\n")
    assert read_connection(path, "w").dsn == "postgresql://an%40corp@db.internal/app%25x"
    assert read_connection(path, "k").dsn == ("postgresql://50%25off@db.internal/?application_name=%25%28x%29s")


def test_default_section_applies_to_every_section(tmp_path):
    path = write(tmp_path, "[DEFAULT]\ntunnel = corp ; every connection goes through corp\nsslmode = require\n"
                 "username = analyst\n\n[a]\ndsn = postgresql://app@db.internal/app\n\n"
                 "[b]\ndrivername = postgresql\nhost = db.internal\ndatabase = b\n\n"
                 "[c]\ndsn = postgresql://app@db.internal/app?sslmode=require\ntunnel = none ; this one direct\n")
    a = read_connection(path, "a")
    assert (a.tunnel, a.dsn) == ("corp", "postgresql://app@db.internal:5432/app?sslmode=require")
    b = read_connection(path, "b")
    assert (b.tunnel, b.dsn) == ("corp", "postgresql://analyst@db.internal/b?sslmode=require")
    c = read_connection(path, "c")
    assert (c.tunnel, c.direct, c.dsn) == (None, True, "postgresql://app@db.internal/app?sslmode=require")
    with pytest.raises(ConfigError, match=r"sections: a, b, c\)"):
        read_connection(path, "nosuch")
    with pytest.raises(ConfigError, match=r"\[DEFAULT\] holds the defaults"):
        read_connection(path, "DEFAULT")


def test_a_password_in_default_is_refused(tmp_path):
    path = write(tmp_path, "[DEFAULT]\npassword = hunter2\n[a]\ndsn = postgresql://app@db.internal/app\n")
    with pytest.raises(ConfigError, match="never reads passwords") as info:
        read_connection(path, "a")
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(("text", "named"), [
    ("[w]\ndsn = postgresql://app@db.internal/app\ntunnel = corp west\n", r"section \[w\], key tunnel"),
    ("[w]\ndsn =\n", r"section \[w\], key dsn is empty"),
    ("[w]\ndsn = not a dsn at all\n", r"section \[w\], key dsn: not a connection string"),
    ("[w]\ndsn = postgresql://app@db.internal:99999/app\n", r"section \[w\], key dsn"),
    ("[w]\ndrivername = postgresql\nhost = db\nport = five\n", r"section \[w\], key port"),
    ("[w]\ndrivername = postgresql\nhost = db\nport = 0\n", r"section \[w\], key port"),
    ("[w]\ndrivername = post gres\n", r"section \[w\], key drivername"),
    ("[w]\ndrivername = postgresql\nquery = nonsense\n", r"section \[w\], key query"),
    ("[w]\ndsn = postgresql://app@db.internal/app\nhost = other\n", r"section \[w\], key host"),
    ("[w]\ndsn = postgresql://app@db/app?sslmode=require\nsslmode = disable\n", r"section \[w\], key sslmode"),
    ("[w]\ndsn = postgresql://a@db/app\ndrivername = postgresql\n", r"section \[w\] has both dsn and drivername"),
    ("[w]\ntunnel = corp\n", r"section \[w\] needs a dsn"),
    ("[w]\ndsn = postgresql://a@db/app\ntunnel = a\ntunnel = b\n", r"section \[w\] has the key tunnel twice"),
    ("[w]\ndsn = postgresql://a@db/app\n[w]\n", r"has the section \[w\] twice"),
    ("dsn = postgresql://a@db/app\n[w]\n", r"line 1 comes before any \[section\]"),
])
def test_a_value_that_cannot_be_used_is_named_by_section_and_key(tmp_path, text, named):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=named) as info:
        read_connection(path, "w")
    assert str(path) in str(info.value)


_NAME = st.text(alphabet=st.characters(codec="ascii", categories=("L", "N")), min_size=1, max_size=12)
_COMMENT = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"),
                   max_size=30)


@settings(max_examples=200, deadline=None)
@given(section=_NAME, tunnel=_NAME, comment=_COMMENT, marker=st.sampled_from([";", "#"]),
       gap=st.sampled_from([" ", "\t", "   ", " \t "]), direct=st.booleans())
def test_any_comment_after_whitespace_is_a_comment(tmp_path_factory, section, tunnel, comment, marker, gap,
                                                   direct):
    tunnel_value = "none" if direct else tunnel
    path = tmp_path_factory.mktemp("ini") / "c.ini"
    path.write_text(f"[{section}]{gap}{marker}{comment}\ndsn = postgresql://app@db.internal/app{gap}{marker}"
                    f"{comment}\ntunnel = {tunnel_value}{gap}{marker}{comment}\n", encoding="utf-8")
    if section == "DEFAULT":
        return
    connection = read_connection(path, section)
    assert connection.dsn == "postgresql://app@db.internal/app"
    if direct or tunnel.lower() in ("none", "no", "false", "off"):
        assert connection.direct and connection.tunnel is None
    else:
        assert (connection.tunnel, connection.direct) == (tunnel, False)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_any_file_is_read_or_refused_with_a_config_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("ini") / "c.ini"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))  # a lone surrogate: bytes that are not UTF-8
    try:
        read_connection(path, "w")
    except ConfigError:
        pass


def test_configparser_agrees_on_the_readme_values(tmp_path):
    """The values wgmagic reads are configparser's own with JupySQL-style inline comments (no private rules)."""
    reference = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=("#", ";"))
    reference.read_string(readme_connections_file())
    path = write(tmp_path, readme_connections_file())
    assert read_connection(path, "warehouse").tunnel == reference["warehouse"]["tunnel"]
    assert read_connection(path, "warehouse").dsn == reference["warehouse"]["dsn"]


# ---- the TOML settings file --------------------------------------------------------------------------------

def test_toml_comments_and_the_class_sub_table(home):
    (home / "project" / "pyproject.toml").write_text(
        "[tool.wgmagic]  # wgmagic's settings\ndisplaylimit = 20  # rows\n\n"
        "[tool.wgmagic.WgMagic]  # as [tool.jupysql.SqlMagic]\ntimeout = 3  # seconds\n")
    assert load_settings()[0] == {"displaylimit": 20, "timeout": 3}
    from wgmagic.notebook.settings import read_settings

    found = read_settings()
    assert found.where("timeout").endswith("[tool.wgmagic.WgMagic] timeout")
    assert found.where("displaylimit").endswith("[tool.wgmagic] displaylimit")


def test_a_bad_value_in_a_settings_file_is_named_by_table_and_key(home, load, capsys):
    (home / "project" / "pyproject.toml").write_text(
        '[tool.wgmagic]\ndisplaylimit = "many"\ntimeout = -1\ncolour = 1\nnested = {a = 1}\n')
    sh = load()
    err = capsys.readouterr().err
    assert "pyproject.toml: [tool.wgmagic] displaylimit:" in err
    assert "pyproject.toml: [tool.wgmagic] timeout:" in err
    assert "[tool.wgmagic] colour: unknown setting" in err and "[tool.wgmagic] nested: unknown setting" in err
    assert (sh._wgmagic.displaylimit, sh._wgmagic.timeout) == (50, 10.0)


def test_user_config_top_level_keys_are_named_too(home, load, capsys):
    directory = user_config_dir()
    directory.mkdir(parents=True)
    (directory / "config.toml").write_text("displaylimit = 4  # rows\nprogress = true\n[other]\nx = 1\n")
    (home / "project" / "pyproject.toml").unlink()
    sh = load()
    err = capsys.readouterr().err
    assert "config.toml: progress: unknown setting" in err and "config.toml: other: unknown setting" in err
    assert sh._wgmagic.displaylimit == 4


def test_dsn_filename_in_a_project_file_is_relative_to_that_file(home, load):
    import os

    (home / "project" / "pyproject.toml").write_text('[tool.wgmagic]\ndsn_filename = "conf/connections.ini"\n')
    (home / "project" / "notebooks").mkdir()
    os.chdir(home / "project" / "notebooks")
    sh = load()
    assert sh._wgmagic.dsn_filename == str(home / "project" / "conf" / "connections.ini")


# ---- settings JupySQL also has: what JupySQL accepts -------------------------------------------------------

def test_displaylimit_none_shows_every_row_as_in_jupysql(load, capsys):
    sh = load()
    sh.run_line_magic("config", "WgMagic.displaylimit = None")
    assert sh._wgmagic.displaylimit == 0
    assert sh.run_cell("%%wgsql sqlite:// --no-tunnel\nWITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 "
                       "FROM c WHERE x < 80) SELECT x FROM c").success
    assert "showing the first" not in capsys.readouterr().out
    sh.run_line_magic("config", "WgMagic.displaylimit = 3")
    assert sh._wgmagic.displaylimit == 3
    sh.run_line_magic("config", "WgMagic.displaylimit = -1")  # refused, as JupySQL refuses it
    assert sh._wgmagic.displaylimit == 3


def test_autocommit_and_dsn_filename_as_in_jupysql(load):
    sh = load()
    for value, expected in (("False", False), ("True", True), ("0", False), ("1", True)):
        sh.run_line_magic("config", f"WgMagic.autocommit = {value}")  # traitlets' Bool: JupySQL's too
        assert sh._wgmagic.autocommit is expected
    sh.run_line_magic("config", "WgMagic.dsn_filename = '~/connections.ini'")  # JupySQL expands ~
    assert sh._wgmagic.dsn_filename == str(Path("~/connections.ini").expanduser())


def test_a_tunnel_in_the_file_that_is_not_up_is_named_by_section_and_key(home, load):
    path = write(home, "[w]\ndsn = postgresql://app@db.internal/app\ntunnel = corp ; not up\n")
    sh = load()
    sh.run_line_magic("config", f"WgMagic.dsn_filename = {str(path)!r}")
    error = str(sh.run_cell("%%wgsql --section w\nSELECT 1").error_in_exec)
    assert f"{path}: section [w], key tunnel: no tunnel is up" in error and "--name corp" in error
