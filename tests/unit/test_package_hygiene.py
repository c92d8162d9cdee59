"""What every module of wgmagic/ keeps to, checked by reading the source: a docstring on every public class, no
tracker numbers in comments or docstrings (they say why in words, and outlive the tracker), no `Any` where
an engine, a connection, a tunnel or a transport is passed, and no module over MAX_LINES lines (one job a
module: a longer one is split by job, not squeezed) (docs/layers.md, its first section)."""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "wgmagic"
SOURCES = sorted(PACKAGE.rglob("*.py"))

# "issue 13", "issues 4 and 5", "(#12)", "#12" in a comment: a tracker's number standing in for a reason.
TRACKER = re.compile(r"(?i)\bissues?\s*#?\d+|\(#\d+\)")
COMMENT_NUMBER = re.compile(r"(?<![&\w])#\d+\b")
# A parameter or attribute typed Any where one of the package's own objects is passed.
SEAM_ANY = re.compile(r"\b(engine|tunnel|transport|conn): Any\b")
# Modules that still pass Any at a seam, each owned by a branch that types it: remove a line when its module is
# typed (the test fails until then, so the list only shrinks).
SEAM_ANY_TODO: set[str] = set()
MAX_LINES = 500
# One job organised by its RFC's sections (RFC 9293's TCP connection state machine): long, and not split.
LONG_MODULES = {"netstack/tcp/connection.py"}
# Modules over the limit that their owner is to split by job: remove a line when its module is under (the test
# fails until then, so the list only shrinks).
LONG_TODO: set[str] = set()


def _relative(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


def _public_classes(tree: ast.Module) -> list[ast.ClassDef]:
    """Module-level classes and the classes nested in them (a class made inside a function is not public)."""
    found: list[ast.ClassDef] = []
    pending: list[ast.AST] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.ClassDef):
            if not node.name.startswith("_"):
                found.append(node)
            pending.extend(node.body)
    return found


def test_every_public_class_has_a_docstring() -> None:
    missing = [f"{_relative(path)}:{node.lineno} {node.name}" for path in SOURCES
               for node in _public_classes(ast.parse(path.read_text(), str(path))) if ast.get_docstring(node) is None]
    assert not missing, "public classes without a docstring:\n  " + "\n  ".join(missing)


def test_the_docstring_check_sees_a_bare_class() -> None:
    tree = ast.parse("class Bare:\n    x: int\n\nclass _Private:\n    pass\n\n"
                     "def f():\n    class Local:\n        pass\n")
    assert [node.name for node in _public_classes(tree)] == ["Bare"]


def _tracker_numbers(text: str) -> set[int]:
    """The lines of `text` (Python source) that cite a tracker number."""
    lines = {text.count("\n", 0, m.start()) + 1 for m in TRACKER.finditer(text)}
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type == tokenize.COMMENT and COMMENT_NUMBER.search(token.string[1:]):
            lines.add(token.start[0])
    return lines


def test_no_tracker_numbers_in_the_package() -> None:
    found = {_relative(path): sorted(lines) for path in SOURCES if (lines := _tracker_numbers(path.read_text()))}
    assert not found, f"tracker numbers instead of reasons (file: lines): {found}"


def test_the_tracker_check_sees_each_form() -> None:
    sample = '"""Fixed in issue 13."""\nx = 1  # see (#12)\ny = 2  # as #7 asked\nz = "&#38;"  # an entity, 3 #s\n'
    assert _tracker_numbers(sample) == {1, 2, 3}


def test_no_any_at_the_seams() -> None:
    untyped = {_relative(path): [n for n, line in enumerate(path.read_text().splitlines(), 1) if SEAM_ANY.search(line)]
               for path in SOURCES}
    new = {path: lines for path, lines in untyped.items() if lines and path not in SEAM_ANY_TODO}
    assert not new, f"`Any` where an engine, connection, tunnel or transport is passed (use its class or a Protocol, " \
                    f"under TYPE_CHECKING): {new}"
    typed = sorted(path for path in SEAM_ANY_TODO if not untyped.get(path))
    assert not typed, f"typed now: remove from SEAM_ANY_TODO: {typed}"


def _line_count(path: Path) -> int:
    return len(path.read_text().splitlines())


def test_no_module_over_the_line_limit() -> None:
    long = {_relative(path): lines for path in SOURCES
            if (lines := _line_count(path)) > MAX_LINES and _relative(path) not in LONG_MODULES | LONG_TODO}
    assert not long, f"modules over {MAX_LINES} lines (split one job out into a module of its own): {long}"
    short = sorted(path for path in LONG_MODULES | LONG_TODO
                   if not (PACKAGE / path).exists() or _line_count(PACKAGE / path) <= MAX_LINES)
    assert not short, f"under {MAX_LINES} lines now (or gone): remove from LONG_MODULES / LONG_TODO: {short}"
