"""`%wg` finds each command's function when it first runs (wgmagic.notebook.cmd.command): every subcommand still
reaches its function, `%wg connect` loads the tunnel commands' module alone, and the parser is built once."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def test_every_command_resolves_to_its_function():
    from wgmagic.notebook.cmd import COMMANDS, command

    for name, (module, function) in COMMANDS.items():
        found = command(name)
        assert callable(found), name
        assert found.__module__ == f"wgmagic.notebook.cmd.{module}" and found.__name__ == function, name


def test_an_unknown_command_is_a_key_error():
    from wgmagic.notebook.cmd import command

    with pytest.raises(KeyError):
        command("no-such-command")


def test_the_parser_is_built_once_and_parses_each_line_afresh():
    from wgmagic.notebook.arguments import parse_arguments, without_comment
    from wgmagic.notebook.magics import _wg_parser

    assert _wg_parser() is _wg_parser()
    first = parse_arguments(_wg_parser(), without_comment("expose 8080=localhost:80 --allow 198.18.0.0/16"))
    second = parse_arguments(_wg_parser(), without_comment("expose 8080=localhost:80"))
    assert first is not None and second is not None
    assert first.allow == ["198.18.0.0/16"] and second.allow is None  # nothing carried over between lines


SCRIPT = """
import json, sys
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
shell.run_line_magic("load_ext", "wgmagic")
ok = shell.run_cell("%wg status").success
print(json.dumps([ok, sorted(name for name in sys.modules if name.startswith("wgmagic.notebook.cmd"))]))
"""


def test_a_command_loads_its_own_module_only():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True).stdout
    ok, loaded = json.loads(out.strip().splitlines()[-1])
    assert ok
    assert loaded == ["wgmagic.notebook.cmd", "wgmagic.notebook.cmd.tunnels"]
