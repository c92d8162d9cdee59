"""Split a cell into statements and bind `:name` / `{name}` placeholders as driver parameters.

Values are never pasted into the SQL text: each placeholder becomes psycopg's `%(name)s` and the value
travels separately. Statements are cut where psql cuts them: the scanner follows psql's lexer
(src/fe_utils/psqlscan.l: '...' with '' doubling, E'...' with backslash escapes, B'', X'', N'', U&'...',
quoted identifiers, $tag$ dollar quotes, $1 parameters, nested /* */ and -- comments, literal continuation
across newlines, parentheses, and the BEGIN ... END body of CREATE [OR REPLACE] FUNCTION/PROCEDURE), so
`::int` casts, `arr[1:2]` slices and colons or braces inside literals and comments are left alone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from wgmagic.errors import WgMagicError

_BIND_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class UnknownParameterError(WgMagicError, NameError):
    """A placeholder names a variable the notebook does not define."""

    def __init__(self, name: str, style: str) -> None:
        shown = f":{name}" if style == ":" else f"{{{name}}}"
        hint = f"escape the colon as \\:{name}" if style == ":" else "write it inside a string literal"
        super().__init__(f"{shown} is not defined in the notebook: define the variable `{name}` or {hint}")
        self.parameter = name


@dataclass
class Statement:
    """One statement of a cell, as written and as each kind of driver takes it (split_statements makes it)."""

    text: str  # what the user wrote (escapes resolved), for messages
    sql: str  # what the driver gets: placeholders as %(name)s and % doubled when there are parameters
    params: dict[str, object] | None = field(default=None)
    # For SQLAlchemy's text(), which renders each driver's own paramstyle: placeholders as :name and every
    # other colon escaped, so casts, slices and literals are never taken for binds.
    bind_sql: str = ""


def split_sql(text: str, *, standard_conforming_strings: bool = True) -> list[str]:
    """`text` cut after each semicolon that ends a statement, exactly where psql cuts it.

    The parts are the raw text (placeholders and `\\:` left as written): `"".join(parts) == text`. The last
    part holds what follows the last semicolon (possibly only whitespace). `standard_conforming_strings`
    is the server setting of that name: off, backslashes escape inside '...' too.
    Source: psql's lexer, src/fe_utils/psqlscan.l in PostgreSQL.
    """
    return [text[part.start:part.end] for part in _scan(text, standard_conforming_strings)]


def split_statements(cell: str, namespace: Mapping[str, object] | None = None, *,
                     standard_conforming_strings: bool = True, mysql: bool = False) -> list[Statement]:
    """The cell's statements in order, cut where psql cuts them (see split_sql), with parameters bound from
    `namespace` (None: no binding at all). Raises UnknownParameterError for a placeholder the namespace
    lacks.

    Statements that hold nothing but whitespace and comments are dropped (the server would answer them
    with an empty-query response).

    mysql=True reads MySQL/MariaDB's lexical rules on top (sql/sql_lex.cc): `#` comments to the end of the
    line, `backtick` identifiers and "..." strings (as '...', escapes per standard_conforming_strings), so
    neither a semicolon nor a `:name` inside them is taken for SQL.
    """
    statements: list[Statement] = []
    for part in _scan(cell, standard_conforming_strings, mysql=mysql):
        if not part.meaningful:
            continue
        pieces = part.pieces
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

# Character classes of PostgreSQL's lexer (src/backend/parser/scan.l, mirrored by psql's psqlscan.l). The
# lexer works on bytes; every byte of a non-ASCII UTF-8 character is >= 0x80, which the lexer counts as a
# letter, so any non-ASCII character is a letter here.
_SPACE = frozenset(" \t\n\r\f\v")
_NEWLINE = re.compile(r"[\n\r]")
_SPACES = re.compile(r"[ \t\n\r\f\v]+")
# Operator and punctuation characters that start nothing the scanner tracks (- and / may start a comment, and
# are left to the loop), taken a run at a time.
_INERT = frozenset(",+*%^<>=~!@#&|`?")
_INERT_RUN = re.compile(r"[,+*%^<>=~!@#&|`?]+")
# The classes as complements of ASCII sets: a class that names the range \x80-\U0010ffff takes sre tens of ms
# to compile (it builds a map of the whole BMP), which every first %%wgsql paid on import (issue 15).
_LETTER = r"[^\x00-\x40\x5b-\x5e\x60\x7b-\x7f]"  # [A-Za-z_] and any non-ASCII character
_LETTER_DIGIT = r"[^\x00-\x2f\x3a-\x40\x5b-\x5e\x60\x7b-\x7f]"  # [A-Za-z0-9_] and any non-ASCII
_LETTER_DIGIT_DOLLAR = r"[^\x00-\x23\x25-\x2f\x3a-\x40\x5b-\x5e\x60\x7b-\x7f]"  # [A-Za-z0-9_$], non-ASCII
_IDENTIFIER = re.compile(rf"{_LETTER}{_LETTER_DIGIT_DOLLAR}*")
_DOLLAR_DELIMITER = re.compile(rf"\$(?:{_LETTER}{_LETTER_DIGIT}*)?\$")
_PARAM = re.compile(rf"\$[0-9]+(?:{_LETTER}{_LETTER_DIGIT_DOLLAR}*)?")  # $1, and $1abc as one token
_DIGITS = r"[0-9](?:_?[0-9])*"
_NUMBER = re.compile(
    rf"(?:0[xX](?:_?[0-9A-Fa-f])+|0[oO](?:_?[0-7])+|0[bB](?:_?[01])+"
    rf"|(?:{_DIGITS}(?:\.(?!\.)(?:{_DIGITS})?)?|\.{_DIGITS})(?:[Ee][-+]?(?:{_DIGITS})?)?)"
    rf"(?:{_LETTER}{_LETTER_DIGIT_DOLLAR}*)?")  # trailing junk is part of the token
# After a closing quote, whitespace holding a newline and then another quote continue the same literal (SQL's
# 'a'<newline>'b'). psql feeds its lexer one line at a time, without the \n, so it only ever sees such a
# continuation across a bare \r; across a \n it sees two literals and may cut between them. We cut where
# psql cuts.
_QUOTE_CONTINUE = re.compile(r"(?:[ \t\f]|--[^\n\r]*)*\r(?:[ \t\r\f]+|--[^\n\r]*\r)*'")
_QUOTE_OR_BACKSLASH = re.compile(r"['\\]")
_WORD = re.compile(r"[A-Za-z0-9_$]")
_ROUTINE_WORDS = {"create": "c", "function": "f", "procedure": "p", "or": "o", "replace": "r"}


@dataclass
class _Scanned:
    start: int  # the statement's raw text is cell[start:end]
    end: int
    pieces: list[Piece]
    meaningful: bool  # holds a token other than whitespace, comments and the final semicolon


def _scan(cell: str, standard_conforming_strings: bool = True, *, mysql: bool = False) -> list[_Scanned]:
    """The cell cut where psql cuts it (psqlscan.l's rules), each part as pieces of SQL text and placeholders.

    A semicolon ends a statement unless it is inside a literal, a quoted identifier, a comment, parentheses,
    or the BEGIN ... END body of CREATE [OR REPLACE] FUNCTION/PROCEDURE (SQL-standard bodies, BEGIN ATOMIC).
    The parts together cover the whole cell; the last one holds whatever follows the last semicolon.
    """
    out: list[_Scanned] = []
    pieces: list[Piece] = []
    text: list[str] = []
    n = len(cell)
    start = i = 0  # start: first character not yet copied into `text`
    statement_start = 0
    parens = brackets = begin_depth = 0
    words: list[str] = []  # psql's first four identifiers of the statement, as routine-word codes or ""
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
        nxt = cell[i + 1] if i + 1 < n else ""
        if c in _SPACE:
            i = _SPACES.match(cell, i).end()  # type: ignore[union-attr]
            continue
        if c == "-" and nxt == "-":
            i = _line_end(cell, i)
            continue
        if c == "/" and nxt == "*":
            i = _block_comment_end(cell, i)
            continue
        if mysql and c == "#":
            i = _line_end(cell, i)
            continue
        if c == ";":
            i += 1
            if parens == 0 and begin_depth == 0:
                take(i, i)
                end_text()
                out.append(_Scanned(statement_start, i, pieces, meaningful))
                pieces, meaningful, words, brackets, statement_start = [], False, [], 0, i
            continue
        meaningful = True
        if mysql and c in "`\"":  # a `quoted identifier` or a "string", each with its quote doubled
            i = _mysql_quoted_end(cell, i + 1, c, escapes=c == '"' and not standard_conforming_strings)
        elif c in _INERT:
            i = _INERT_RUN.match(cell, i).end()  # type: ignore[union-attr]
        elif c == "'":
            i = _string_end(cell, i + 1, escapes=not standard_conforming_strings, doubling=True)
        elif c in "eE" and nxt == "'":
            i = _string_end(cell, i + 2, escapes=True, doubling=True)
        elif c in "bBxX" and nxt == "'":
            i = _string_end(cell, i + 2, escapes=False, doubling=False)
        elif c in "nN" and nxt == "'":
            i += 1  # N'...': the N alone, then an ordinary literal
        elif c in "uU" and nxt == "&":
            after = cell[i + 2] if i + 2 < n else ""
            if after == "'":
                i = _string_end(cell, i + 3, escapes=False, doubling=True)
            elif after == '"':
                i = _quoted_identifier_end(cell, i + 3)
            else:
                i += 1  # U& without a quote: the U alone (not an identifier)
        elif c == '"':
            i = _quoted_identifier_end(cell, i + 1)
        elif c == "$":
            if delimiter := _DOLLAR_DELIMITER.match(cell, i):
                end = cell.find(delimiter.group(0), delimiter.end())
                i = n if end < 0 else end + len(delimiter.group(0))
            elif param := _PARAM.match(cell, i):
                i = param.end()
            else:
                i += 1
        elif word := _IDENTIFIER.match(cell, i):
            i = word.end()
            if parens == 0:
                lower = word.group(0).lower()
                if len(words) < 4:
                    words.append(_ROUTINE_WORDS.get(lower, ""))
                if _is_create_routine(words):
                    if lower == "begin":
                        begin_depth += 1
                    elif lower == "case":
                        begin_depth += 1 if begin_depth >= 1 else 0
                    elif lower == "end" and begin_depth > 0:
                        begin_depth -= 1
        elif c.isdigit() or (c == "." and nxt.isdigit()):
            number = _NUMBER.match(cell, i)
            i = number.end() if number and number.end() > i else i + 1
        elif c in "()":  # depths never go below 0: a stray closer is the server's to report
            parens = max(0, parens + (1 if c == "(" else -1))
            i += 1
        elif c in "[]":
            brackets = max(0, brackets + (1 if c == "[" else -1))
            i += 1
        elif c == "\\" and nxt == ":":
            take(i, i + 1)  # drop the backslash; the colon stays SQL (as psql does with \:)
            i += 2
        elif c == ":" and nxt == ":":
            i += 2
        elif c == ":" and brackets == 0 and (name := _BIND_NAME.match(cell, i + 1)) and not (
                i > 0 and (_WORD.match(cell[i - 1]) or cell[i - 1] == ":")):
            take(i, name.end())
            end_text()
            pieces.append(("param", name.group(0), ":"))
            i = name.end()
        elif c == "{" and (name := _BIND_NAME.match(cell, i + 1)) and cell.startswith("}", name.end()):
            take(i, name.end() + 1)
            end_text()
            pieces.append(("param", name.group(0), "{"))
            i = name.end() + 1
        else:
            i += 1
    take(n, n)
    end_text()
    if statement_start < n or not out:
        out.append(_Scanned(statement_start, n, pieces, meaningful))
    return out


def _is_create_routine(words: list[str]) -> bool:
    """CREATE [OR REPLACE] FUNCTION|PROCEDURE, as psql recognises it from the first four identifiers."""
    padded = [*words, "", "", "", ""][:4]
    return padded[0] == "c" and (padded[1] in ("f", "p") or (padded[1] == "o" and padded[2] == "r"
                                                             and padded[3] in ("f", "p")))


def _line_end(text: str, i: int) -> int:
    """The end of a -- comment: the next newline (\\n or \\r) is whitespace, not part of it."""
    newline = _NEWLINE.search(text, i)
    return newline.start() if newline else len(text)


def _block_comment_end(text: str, i: int) -> int:
    """Past the */ that closes the /* at i; /* */ nest, and a run of stars before / closes one level."""
    depth, j, n = 0, i + 2, len(text)
    while j < n:
        if text.startswith("/*", j):
            depth += 1
            j += 2
        elif text[j] == "*":
            k = j
            while k < n and text[k] == "*":
                k += 1
            if k < n and text[k] == "/":
                if depth == 0:
                    return k + 1
                depth -= 1
                k += 1
            j = k
        else:
            j += 1
    return n


def _string_end(text: str, j: int, *, escapes: bool, doubling: bool) -> int:
    """Past the quote that closes a literal whose body starts at j (and past any continuation of it)."""
    n = len(text)
    stop = _QUOTE_OR_BACKSLASH if escapes else None
    while True:
        if stop is not None:
            found = stop.search(text, j)
            j = found.start() if found else n
        else:
            j = text.find("'", j)
            j = n if j < 0 else j
        if j >= n:
            return n
        if text[j] == "\\":
            j += 2
            continue
        if doubling and text.startswith("'", j + 1):
            j += 2
            continue
        continued = _QUOTE_CONTINUE.match(text, j + 1)
        if not continued:
            return j + 1
        j = continued.end()


def _quoted_identifier_end(text: str, j: int) -> int:
    n = len(text)
    while True:
        j = text.find('"', j)
        if j < 0:
            return n
        if text.startswith('"', j + 1):
            j += 2
            continue
        return j + 1


def _mysql_quoted_end(text: str, j: int, quote: str, *, escapes: bool) -> int:
    """Past the `quote` that closes a MySQL `identifier` or "string" whose body starts at j (doubled quotes and,
    in strings unless NO_BACKSLASH_ESCAPES, backslash escapes stay inside)."""
    n = len(text)
    while j < n:
        char = text[j]
        if escapes and char == "\\":
            j += 2
        elif char == quote:
            if text.startswith(quote, j + 1):
                j += 2
                continue
            return j + 1
        else:
            j += 1
    return n
