"""Notebook variables named in a magic's arguments: `{name}`, `{name.attribute}` and `$name`.

IPython's own expansion is off for the magics (wgmagic.notebook.arguments says why); these look the names up in
the user's namespace instead, so a secret held in a variable stays a value and never becomes command text.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from IPython.core.error import UsageError

from wgmagic.notebook.arguments import VARIABLE


def lookup(user_ns: Mapping[str, Any], dotted: str) -> Any:
    """The value of `name` or `name.attr.attr` in the notebook; UsageError naming what is missing."""
    head, *rest = dotted.split(".")
    if head not in user_ns:
        raise UsageError(f"no variable named {head!r} in the notebook")
    value = user_ns[head]
    for part in rest:
        try:
            value = getattr(value, part)
        except AttributeError:
            raise UsageError(f"{head}: no attribute {part!r} (in {{{dotted}}})") from None
    return value


def referenced(user_ns: Mapping[str, Any], text: str) -> Any:
    """The value `text` names when it is a `{var}`/`$var` reference; `text` itself otherwise."""
    match = VARIABLE.match(text.strip())
    return lookup(user_ns, match.group(1) or match.group(2)) if match else text


def value(user_ns: Mapping[str, Any], text: str | None) -> str | None:
    """An argument, or the value (as text) of the `{var}` / `$var` it names; None stays None."""
    if text is None:
        return None
    match = VARIABLE.match(text.strip())
    return str(lookup(user_ns, match.group(1) or match.group(2))) if match else text


def config_text(user_ns: Mapping[str, Any], argument: str) -> tuple[str, str]:
    """`%wg connect`'s and `%wg doctor`'s CONFIG: (wg-quick text, its source for messages).

    A `{var}`/`$var` may hold the text itself (str with a newline or a `[`), bytes (decoded as editors save
    them), or a path (str or os.PathLike); anything else is the path of a wg-quick file (`~` expanded).
    Raises UsageError for a variable of another type, ConfigError for a file that cannot be read.
    """
    match = VARIABLE.match(argument.strip())
    if match:
        name = match.group(1) or match.group(2)
        held = lookup(user_ns, name)
        if isinstance(held, os.PathLike):
            held = os.fspath(held)
        if isinstance(held, (bytes, bytearray)):
            from wgmagic.config import decode_config_bytes

            return decode_config_bytes(bytes(held), source=f"${name}"), f"${name}"
        if not isinstance(held, str):
            raise UsageError(f"%wg connect: {name} holds a {type(held).__name__}, not wg-quick text or a path")
        argument = held
        if "\n" in held or "[" in held:
            return held, f"${name}"
    from wgmagic.config import read_config_file

    path = os.path.expanduser(argument)
    return read_config_file(path), path
