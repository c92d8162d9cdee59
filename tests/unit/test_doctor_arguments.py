"""`%wg doctor` takes its target as the CLI does (`wgmagic doctor CONFIG TARGET`), as --target, or alone for the
current tunnel (`%wg doctor db.internal:5432`); a lone word that is no HOST:PORT stays a config."""

from __future__ import annotations

import pytest
from IPython.core.interactiveshell import InteractiveShell

from wgmagic.notebook.cmd import diagnose

TEXT = "[Interface]\nAddress = 10.0.0.2/32\n"  # wg-quick text in a notebook variable (the doctor is not run)


@pytest.fixture
def calls(monkeypatch):
    seen: list[tuple] = []
    import wgmagic.tools.doctor as doctor

    monkeypatch.setattr(doctor, "run_doctor", lambda config, **kw: seen.append((config, kw.get("target"),
                                                                                  kw.get("tunnel"))))
    monkeypatch.setattr(diagnose, "find_tunnel", lambda magic, name: "the current tunnel")
    sh = InteractiveShell.instance()
    sh.run_line_magic("load_ext", "wgmagic")
    yield sh, seen
    sh.run_line_magic("unload_ext", "wgmagic")


@pytest.mark.parametrize(("line", "config", "target", "tunnel"), [
    ("{conf} db.internal:5432", TEXT, "db.internal:5432", None),  # the CLI's form
    ("{conf} --target db.internal:5432", TEXT, "db.internal:5432", None),
    ("db.internal:5432", None, "db.internal:5432", "the current tunnel"),  # alone: the current tunnel's target
    ("--target [fd00::1]:5432", None, "[fd00::1]:5432", "the current tunnel"),
    ("", None, None, "the current tunnel"),
])
def test_where_the_target_goes(calls, line, config, target, tunnel):
    sh, seen = calls
    sh.user_ns["conf"] = TEXT
    assert sh.run_cell(f"%wg doctor {line}").success
    assert seen == [(config, target, tunnel)]


def test_the_target_given_twice_is_refused(calls, capsys):
    sh, seen = calls
    sh.user_ns["conf"] = TEXT
    sh.run_cell("%wg doctor {conf} a:1 --target b:2")
    out = capsys.readouterr()
    assert not seen and "give the target once" in out.out + out.err


def test_a_lone_word_that_is_no_host_port_stays_a_config(calls, capsys):
    sh, seen = calls
    sh.run_cell("%wg doctor wg0.cnf")
    out = capsys.readouterr()
    assert not seen and "wg0.cnf" in out.out + out.err  # the config error names the file
