"""%load_ext wgmagic stays cheap: nothing heavy is imported until it is used."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("pandas", "matplotlib", "ipywidgets", "psycopg", "sqlalchemy", "numpy", "tqdm")

SCRIPT = """
import json, sys
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
shell.run_line_magic("load_ext", "wgmagic")
assert "wg" in shell.magics_manager.magics["line"] and "wgsql" in shell.magics_manager.magics["cell"]
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""


def test_loading_the_extension_imports_nothing_heavy():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True).stdout
    loaded = set(json.loads(out.strip().splitlines()[-1]))
    assert not loaded & set(HEAVY), loaded & set(HEAVY)
