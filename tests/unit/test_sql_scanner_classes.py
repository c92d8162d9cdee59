"""The splitter's character classes, written as complements of ASCII sets (fast to compile), are exactly
PostgreSQL's lexer classes (src/backend/parser/scan.l: ident_start [A-Za-z\\200-\\377_], ident_cont adds
[0-9\\$]), with every non-ASCII character counted as a letter, over the whole of Unicode."""

from __future__ import annotations

import re
import string

from wgmagic.sql import parameters

LETTERS = set(string.ascii_letters + "_")


def _members(pattern: str) -> set[int]:
    compiled = re.compile(pattern)
    return {c for c in range(0x110000) if compiled.fullmatch(chr(c))}


def test_the_classes_are_postgres_lexer_classes_over_all_of_unicode() -> None:
    non_ascii = set(range(0x80, 0x110000))
    letter = {ord(c) for c in LETTERS} | non_ascii
    assert _members(parameters._LETTER) == letter
    assert _members(parameters._LETTER_DIGIT) == letter | {ord(c) for c in string.digits}
    assert _members(parameters._LETTER_DIGIT_DOLLAR) == letter | {ord(c) for c in string.digits + "$"}
