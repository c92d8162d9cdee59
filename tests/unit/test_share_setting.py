"""Sharing a tunnel is chosen as the other connect options are: the argument (`share=`, `%wg connect --share`),
else the magic's `share` setting (`%config WgMagic.share`, or `share = true` in a settings file), else
$WGMAGIC_SHARE."""

from __future__ import annotations

import pytest
from IPython.core.interactiveshell import InteractiveShell

from wgmagic.notebook.arguments import wg_parser
from wgmagic.notebook.magics import WgMagic
from wgmagic.runtime.share import share_default


@pytest.mark.parametrize(("given", "env", "expected"), [
    (None, None, False), (None, "1", True), (None, "yes", True), (None, "0", False), (None, "", False),
    (False, "1", False), (True, None, True), (True, "0", True)])
def test_the_argument_then_the_environment(given, env, expected, monkeypatch):
    if env is None:
        monkeypatch.delenv("WGMAGIC_SHARE", raising=False)
    else:
        monkeypatch.setenv("WGMAGIC_SHARE", env)
    assert share_default(given) is expected


def test_the_setting_from_a_settings_file(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "analysis"\n\n[tool.wgmagic]\nshare = true\n')
    magic = WgMagic(InteractiveShell.instance(), settings_from=tmp_path)
    assert magic.share is True
    assert WgMagic.share.default_value is None  # unset: the environment decides


def test_connect_takes_share():
    parser = wg_parser()
    assert parser.parse_args(["connect", "wg0.conf", "--share"]).share is True
    assert parser.parse_args(["connect", "wg0.conf"]).share is None  # then the setting, then the environment
