"""The magics' argument text: argparse that reports as IPython does, `{var}`/`$var` references, and the
one-line `%wgsql [DSN|ALIAS] [options] SQL` split.

Pure functions of the text (and of the parser's own option table); the magics call them, tests drive them with
Hypothesis (tests/unit/test_wgsql_line.py).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from dataclasses import dataclass

VARIABLE = re.compile(r"^(?:\{\s*([A-Za-z_][\w.]*)\s*\}|\$([A-Za-z_]\w*))$")
KEYWORD_ARGUMENT = re.compile(r"^[A-Za-z_]\w*=")
# One shell-like word of a magic's line: runs of plain characters, backslash escapes, '...' (libpq quoting:
# backslash escapes inside) and "..." (an unclosed quote ends the line's words: argparse's shlex reports it).
_WORD = re.compile(r"""(?:[^\s'"\\]|\\.|'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")+""", re.DOTALL)


def words_with_offsets(line: str) -> list[tuple[int, str]]:
    """The line's words, each with the offset it starts at (quotes kept as written)."""
    return [(match.start(), match.group()) for match in _WORD.finditer(line)]


@dataclass(frozen=True)
class SqlLine:
    """`%wgsql` on one line, cut where the SQL begins: `arguments` for the magic's parser, `sql` as typed."""

    arguments: str
    sql: str


def is_dsn_word(word: str) -> bool:
    """A word that starts a connection: a URL (`postgresql://...`, `sqlite://`), a libpq keyword
    (`host=db`), or a `{var}`/`$var` that holds one."""
    return "://" in word or bool(KEYWORD_ARGUMENT.match(word)) or bool(VARIABLE.match(word))


def split_sql_line(line: str, parser: argparse.ArgumentParser, is_alias: Callable[[str], bool]) -> SqlLine:
    """`x = %wgsql DSN SELECT ...`, as JupySQL users write it: the leading words that are the magic's own (its
    options with their values, one DSN, URL or libpq keywords, or an alias) and the SQL that follows.

    The SQL starts at the first word that is none of these; it is returned exactly as typed (not re-quoted).
    An unknown `-x`/`--word` stays with the arguments, so the parser names it. `arguments + sql == line`.
    """
    table = parser._option_string_actions  # argparse's own table: option string -> action
    words = words_with_offsets(line)
    target = keywords = False
    index = 0
    while index < len(words):
        offset, word = words[index]
        name = word.split("=", 1)[0] if word.startswith("--") else word
        action = table.get(name)
        if action is not None:
            takes_value = action.nargs != 0
            index += 2 if takes_value and name == word else 1
            continue
        if re.match(r"^--?[A-Za-z]", word):
            index += 1  # not one of ours: the parser reports it
            continue
        if KEYWORD_ARGUMENT.match(word) and (not target or keywords):
            target = keywords = True
            index += 1
            continue
        if not target and (is_dsn_word(word) or is_alias(word)):
            target = True
            index += 1
            continue
        return SqlLine(line[:offset], line[offset:])
    return SqlLine(line, "")
