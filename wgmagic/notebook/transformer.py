"""The input transformer that lets `VAR << %%wgsql ...` (JupySQL's capture form) start a cell."""

from __future__ import annotations

import re

CAPTURE_BEFORE = re.compile(r"^\s*([A-Za-z_]\w*)\s*<<\s*%%wgsql\b(.*)$")


def capture_transformer(lines: list[str]) -> list[str]:
    """`VAR << %%wgsql ...` on a cell's first line becomes `%%wgsql VAR << ...` (IPython needs %% first)."""
    if lines:
        match = CAPTURE_BEFORE.match(lines[0])
        if match:
            return [f"%%wgsql {match.group(1)} <<{match.group(2)}\n", *lines[1:]]
    return lines
