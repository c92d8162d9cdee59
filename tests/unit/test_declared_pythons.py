"""What pyproject.toml declares about Python versions is one statement, said the same way everywhere (issue 21,
item 5): requires-python, the version classifiers (consecutive, from its floor), ruff's target and mypy's
python_version; and the interpreter running these tests is one of the declared ones (scripts/test-pythons runs
them under every declared CPython the machine has)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the backport, a dependency there
    import tomli as tomllib

PYPROJECT = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text(encoding="utf-8"))


def declared() -> list[tuple[int, int]]:
    return sorted(tuple(int(part) for part in c.rsplit("::", 1)[1].strip().split("."))
                  for c in PYPROJECT["project"]["classifiers"]
                  if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c))


def test_requires_python_and_the_classifiers_agree():
    versions = declared()
    floor = re.fullmatch(r">=\s*3\.(\d+)", PYPROJECT["project"]["requires-python"].strip())
    assert floor, PYPROJECT["project"]["requires-python"]
    assert versions[0] == (3, int(floor.group(1)))
    assert versions == [(3, minor) for minor in range(versions[0][1], versions[-1][1] + 1)]


def test_the_tools_target_the_floor():
    low = declared()[0]
    assert PYPROJECT["tool"]["ruff"]["target-version"] == f"py{low[0]}{low[1]}"
    assert PYPROJECT["tool"]["mypy"]["python_version"] == f"{low[0]}.{low[1]}"


def test_this_python_is_declared():
    assert sys.version_info[:2] in declared(), f"Python {sys.version.split()[0]} is not among {declared()}"
