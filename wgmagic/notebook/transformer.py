"""The input transformer of `%%wgsql` cells: it lets `VAR << %%wgsql ...` (JupySQL's capture form) start a cell,
and `%%wgsql --help` (or -h) stand alone in a cell."""

from __future__ import annotations

import re
import shlex

CAPTURE_BEFORE = re.compile(r"^\s*([A-Za-z_]\w*)\s*<<\s*%%wgsql\b(.*)$")
CELL_MAGIC = re.compile(r"^\s*%%wgsql\b(.*)$")
HELP_BODY = "-- (--help: the options are printed, no SQL runs)\n"


def capture_transformer(lines: list[str]) -> list[str]:
    """`VAR << %%wgsql ...` on a cell's first line becomes `%%wgsql VAR << ...` (IPython needs %% first); and a
    `%%wgsql ... --help` cell without SQL gets a comment for a body, since IPython refuses a cell magic with an
    empty body before the magic runs (the magic prints its help whatever the body)."""
    if lines:
        match = CAPTURE_BEFORE.match(lines[0])
        if match:
            lines = [f"%%wgsql {match.group(1)} <<{match.group(2)}\n", *lines[1:]]
        match = CELL_MAGIC.match(lines[0])
        if match and not "".join(lines[1:]).strip() and _asks_for_help(match.group(1)):
            lines = [lines[0] if lines[0].endswith("\n") else lines[0] + "\n", HELP_BODY]
    return lines


def _asks_for_help(line: str) -> bool:
    """True when the magic's line holds -h or --help as a word of its own."""
    try:
        words = shlex.split(line)
    except ValueError:  # an unclosed quote: the magic reports it
        words = line.split()
    return "-h" in words or "--help" in words
