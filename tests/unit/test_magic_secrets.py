"""No secret in any output of any %wg / %%wgsql error path, with no tunnel up (issue 11, item 7)."""

from __future__ import annotations

import logging

import pytest
from IPython.core.interactiveshell import InteractiveShell

from tests.secret_probe import SECRET, leaks, lines, seen


@pytest.fixture(scope="module")
def shell():
    sh = InteractiveShell.instance()
    sh.run_line_magic("load_ext", "wgmagic")
    yield sh
    sh.run_line_magic("unload_ext", "wgmagic")


@pytest.mark.parametrize("line", lines())
def test_no_secret_in_any_output(shell, line, capsys, caplog, monkeypatch):
    monkeypatch.setenv("PGCONNECT_TIMEOUT", "2")
    monkeypatch.setattr("getpass.getpass", lambda *a, **k: "")
    caplog.set_level(logging.DEBUG)
    text = seen(shell, line, capsys, caplog)
    assert not leaks(text), text
    assert "Traceback (most recent call last)" not in text, text  # one clean line, never a raw traceback


def test_keyword_dsn_on_the_magic_line_is_accepted(shell, capsys, caplog):
    text = seen(shell, f"%%wgsql host=127.0.0.1 port=1 user=app password={SECRET} --no-tunnel\nSELECT 1",
                capsys, caplog)
    assert "unrecognized arguments" not in text and "127.0.0.1" in text and not leaks(text)
