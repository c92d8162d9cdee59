"""Split a cell into statements and bind `:name` / `{name}` placeholders as driver parameters.

Values are never pasted into the SQL text: each placeholder becomes psycopg's `%(name)s` and the value
travels separately. The scanner knows enough of PostgreSQL's lexical rules (strings with '' and E'\\'
escapes, quoted identifiers, dollar quoting, nested block comments, line comments) that `::int` casts,
`arr[1:2]` slices and colons or braces inside literals and comments are left alone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from wgmagic.errors import WgMagicError

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DOLLAR_TAG = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")
_WORD = re.compile(r"[A-Za-z0-9_$]")


class UnknownParameterError(WgMagicError, NameError):
    """A placeholder names a variable the notebook does not define."""

    def __init__(self, name: str, style: str) -> None:
        shown = f":{name}" if style == ":" else f"{{{name}}}"
        hint = f"escape the colon as \\:{name}" if style == ":" else "write it inside a string literal"
        super().__init__(f"{shown} is not defined in the notebook: define the variable `{name}` or {hint}")
        self.parameter = name


@dataclass
class Statement:
    text: str  # what the user wrote (escapes resolved), for messages
    sql: str  # what the driver gets: placeholders as %(name)s and % doubled when there are parameters
    params: dict[str, object] | None = field(default=None)
    # For SQLAlchemy's text(), which renders each driver's own paramstyle: placeholders as :name and every
    # other colon escaped, so casts, slices and literals are never taken for binds.
    bind_sql: str = ""


def split_statements(cell: str, namespace: Mapping[str, object] | None = None) -> list[Statement]:
    """The cell's statements in order, with parameters bound from `namespace` (None: no binding at all).

    Statements that hold nothing but whitespace and comments are dropped.
    """
    statements: list[Statement] = []
    for pieces in _scan(cell):
        shown = "".join(value if kind != "param" else (f":{value}" if style == ":" else f"{{{value}}}")
                        for kind, value, style in pieces)
        if namespace is None or not any(kind == "param" for kind, _, _ in pieces):
            statements.append(Statement(shown, shown))
            continue
        sql_parts: list[str] = []
        bind_parts: list[str] = []
        params: dict[str, object] = {}
        for kind, value, style in pieces:
            if kind == "param":
                if value not in namespace:
                    raise UnknownParameterError(value, style)
                params[value] = namespace[value]
                sql_parts.append(f"%({value})s")
                bind_parts.append(f":{value}")
            else:
                sql_parts.append(value.replace("%", "%%"))
                bind_parts.append(value.replace(":", "\\:"))
        statements.append(Statement(shown, "".join(sql_parts), params, "".join(bind_parts)))
    return statements


Piece = tuple[str, str, str]  # ("sql", text, "") or ("param", name, ":" or "{")


def _scan(cell: str) -> list[list[Piece]]:
    """Each meaningful statement as pieces of SQL text and placeholders."""
    statements: list[list[Piece]] = []
    pieces: list[Piece] = []
    text: list[str] = []
    start = i = 0
    n = len(cell)
    brackets = 0
    meaningful = False

    def take(upto: int, resume: int) -> None:
        nonlocal start
        if upto > start:
            text.append(cell[start:upto])
        start = resume

    def end_text() -> None:
        if text:
            pieces.append(("sql", "".join(text), ""))
            text.clear()

    while i < n:
        c = cell[i]
        if c in " \t\r\n\f\v":  # PostgreSQL's whitespace
            i += 1
            continue
        if c == "-" and cell.startswith("--", i):
            end = cell.find("\n", i)
            i = n if end < 0 else end + 1
            continue
        if c == "/" and cell.startswith("/*", i):
            i = _skip_block_comment(cell, i)
            continue
        if c == ";" and brackets == 0:
            take(i + 1, i + 1)
            end_text()
            if meaningful:
                statements.append(pieces)
            pieces, meaningful = [], False
            i += 1
            continue
        meaningful = True
        if c == "'":
            escapes = i > 0 and cell[i - 1] in "eE" and (i < 2 or not _WORD.match(cell[i - 2]))
            i = _skip_quoted(cell, i, "'", escapes)
        elif c == '"':
            i = _skip_quoted(cell, i, '"', False)
        elif c == "$" and (i == 0 or not _WORD.match(cell[i - 1])) and (tag := _DOLLAR_TAG.match(cell, i)):
            end = cell.find(tag.group(0), tag.end())
            i = n if end < 0 else end + len(tag.group(0))
        elif c == "[":
            brackets += 1
            i += 1
        elif c == "]":
            brackets = max(0, brackets - 1)
            i += 1
        elif c == "\\" and cell.startswith(":", i + 1):
            take(i, i + 1)  # drop the backslash; the colon stays SQL
            i += 2
        elif c == ":" and cell.startswith("::", i):
            i += 2
        elif c == ":" and brackets == 0 and (name := _IDENT.match(cell, i + 1)) and not (
                i > 0 and (_WORD.match(cell[i - 1]) or cell[i - 1] == ":")):
            take(i, name.end())
            end_text()
            pieces.append(("param", name.group(0), ":"))
            i = name.end()
        elif c == "{" and (name := _IDENT.match(cell, i + 1)) and cell.startswith("}", name.end()):
            take(i, name.end() + 1)
            end_text()
            pieces.append(("param", name.group(0), "{"))
            i = name.end() + 1
        else:
            i += 1
    take(n, n)
    end_text()
    if meaningful:
        statements.append(pieces)
    return statements


def _skip_quoted(text: str, i: int, quote: str, backslash_escapes: bool) -> int:
    j, n = i + 1, len(text)
    while j < n:
        c = text[j]
        if backslash_escapes and c == "\\":
            j += 2
            continue
        if c == quote:
            if text.startswith(quote, j + 1):  # a doubled quote stands for itself
                j += 2
                continue
            return j + 1
        j += 1
    return n


def _skip_block_comment(text: str, i: int) -> int:
    depth, j, n = 0, i, len(text)
    while j < n:
        if text.startswith("/*", j):
            depth += 1
            j += 2
        elif text.startswith("*/", j):
            depth -= 1
            j += 2
            if depth == 0:
                return j
        else:
            j += 1
    return n
