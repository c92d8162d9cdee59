"""How failures and the library's warnings reach the notebook: one short message, no traceback of ours, no
secret (passwords, URL credentials and key-shaped text are masked by wgmagic.connstr.mask_all_secrets)."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable
from typing import Any

from IPython.core.error import UsageError

from wgmagic.connstr import mask_all_secrets as scrub
from wgmagic.errors import WgMagicError


def guarded(what: str, handler: Callable[..., Any], *args: Any) -> Any:
    """Run a magic's handler so that every failure reaches the notebook as one short message with no secret
    in it: our own errors as they are (masked), usage mistakes as UsageError, and anything unexpected (an
    OSError from a bind, a ValueError from a library) as a WgMagicError naming the command (`what`)."""
    try:
        return handler(*args)
    except UsageError as exc:
        raise UsageError(scrub(str(exc))) from None
    except WgMagicError as exc:
        raise short(exc) from None
    except Exception as exc:
        detail = str(exc).strip().splitlines()
        error = WgMagicError(f"{what}: {type(exc).__name__}" + (f": {detail[0]}" if detail else ""))
        raise short(error) from None


def short(exc: BaseException) -> BaseException:
    """Our errors as one short message in the notebook (IPython honours _render_traceback_), secrets masked."""
    message = str(exc)
    masked = scrub(message)
    if masked != message:
        with contextlib.suppress(Exception):
            exc.args = (masked,)
    if not hasattr(exc, "_render_traceback_"):
        text = f"{type(exc).__name__}: {masked}"
        with contextlib.suppress(Exception):
            exc._render_traceback_ = lambda: text.splitlines()  # type: ignore[attr-defined]
    return exc


class NotebookLogHandler(logging.Handler):
    """The `wgmagic` logger's warnings in a notebook: one plain line, "wgmagic: warning: ...", on the cell's
    stderr (looked up per record: the kernel replaces sys.stderr), never a Python warning with a source line."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            kind = "error" if record.levelno >= logging.ERROR else "warning"
            print(f"wgmagic: {kind}: {scrub(record.getMessage())}", file=sys.stderr)
        except Exception:
            self.handleError(record)


def install_log_handler() -> logging.Handler | None:
    """Show the library's warnings as plain lines, unless the user configured the `wgmagic` logger already."""
    logger = logging.getLogger("wgmagic")
    if logger.handlers:
        return None
    handler = NotebookLogHandler()
    logger.addHandler(handler)
    return handler
