"""The `%wg` commands, one module per family, as JupySQL keeps `%sqlcmd`'s in `sql/cmd/`: each command is a
function `(magic, args) -> result` of the `WgMagic` instance (its settings, tunnels and connections) and the
parsed arguments (wgmagic.notebook.arguments.wg_parser). `%%wgsql` lives in `wgsql.py`.

| module | commands |
| --- | --- |
| `tunnels.py` | connect, disconnect, status; the tunnel registry's lookups |
| `forwards.py` | forward (TCP and UDP), socks, expose |
| `capture.py` | capture |
| `diagnose.py` | ping, resolve, doctor, bench |
| `dashboard.py` | diag (the live dashboard), plot |
| `queries.py` | queries (the %%wgsql statements' timelines: table and waterfall) |
| `wgsql.py` | `%%wgsql`, its connection registry and dialect choice; `%wg connections` |
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wgmagic.notebook.magics import WgMagic

Command = Callable[["WgMagic", argparse.Namespace], Any]

# Each subcommand's module and function, imported when the command first runs: `%wg connect` (the first cell of
# most notebooks) loads tunnels.py alone, not the capture, dashboard, diagnose, forward and query commands with
# what they import.
COMMANDS: dict[str, tuple[str, str]] = {
    "connect": ("tunnels", "connect"),
    "status": ("tunnels", "status"),
    "disconnect": ("tunnels", "disconnect"),
    "forward": ("forwards", "forward"),
    "socks": ("forwards", "socks"),
    "expose": ("forwards", "expose"),
    "capture": ("capture", "capture"),
    "ping": ("diagnose", "ping"),
    "resolve": ("diagnose", "resolve"),
    "doctor": ("diagnose", "doctor"),
    "bench": ("diagnose", "bench"),
    "diag": ("dashboard", "diag"),
    "plot": ("dashboard", "plot"),
    "connections": ("wgsql", "connections"),
    "queries": ("queries", "queries"),
}


def command(name: str) -> Command:
    """The function of `%wg NAME` (a key of COMMANDS), its module imported on first use; KeyError for others."""
    module, function = COMMANDS[name]
    found: Command = getattr(importlib.import_module(f"{__name__}.{module}"), function)
    return found
