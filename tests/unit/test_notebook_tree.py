"""The notebook layer's shape (issue 24): a thin magic class, one module per command family, every `%wg`
subcommand wired to exactly one command function, no module over 500 lines, no alias of the magic class,
docstrings on public classes, and `%load_ext wgmagic` loading none of the commands."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "wgmagic"


def test_every_subcommand_has_one_command():
    from wgmagic.notebook.arguments import wg_parser
    from wgmagic.notebook.cmd import COMMANDS

    choices = next(a for a in wg_parser()._actions if getattr(a, "choices", None)).choices
    assert set(choices) - {"help"} == set(COMMANDS)


def test_no_module_over_500_lines():
    long = {str(path.relative_to(PACKAGE)): n for path in [*(PACKAGE / "notebook").rglob("*.py"),
                                                         *(PACKAGE / "cli").rglob("*.py")]
            if (n := len(path.read_text().splitlines())) > 500}
    assert not long, long


def test_no_alias_of_the_magic_class():
    import wgmagic.notebook.magics as magics

    assert not hasattr(magics, "WireGuardMagics")
    assert [name for name, value in vars(magics).items() if value is magics.WgMagic] == ["WgMagic"]


def test_public_classes_have_docstrings():
    missing = []
    for path in [*(PACKAGE / "notebook").rglob("*.py"), *(PACKAGE / "cli").rglob("*.py")]:
        tree = ast.parse(path.read_text())
        missing += [f"{path.name}:{node.name}" for node in ast.walk(tree)
                    if isinstance(node, ast.ClassDef) and not node.name.startswith("_") and not ast.get_docstring(node)]
    assert not missing, missing


SCRIPT = """
import json, sys
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
shell.run_line_magic("load_ext", "wgmagic")
print(json.dumps(sorted(name for name in sys.modules if name.startswith("wgmagic"))))
"""


def test_load_ext_loads_no_command_module():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True).stdout
    loaded = set(json.loads(out.strip().splitlines()[-1]))
    assert not {name for name in loaded if name.startswith(("wgmagic.notebook.cmd", "wgmagic.sql",
                                                             "wgmagic.runtime"))}, loaded
