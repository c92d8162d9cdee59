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
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from wgmagic.notebook.cmd import capture, dashboard, diagnose, forwards, queries, tunnels, wgsql

if TYPE_CHECKING:
    from wgmagic.notebook.magics import WgMagic

Command = Callable[["WgMagic", argparse.Namespace], Any]

COMMANDS: dict[str, Command] = {
    "connect": tunnels.connect,
    "status": tunnels.status,
    "disconnect": tunnels.disconnect,
    "forward": forwards.forward,
    "socks": forwards.socks,
    "expose": forwards.expose,
    "capture": capture.capture,
    "ping": diagnose.ping,
    "resolve": diagnose.resolve,
    "doctor": diagnose.doctor,
    "bench": diagnose.bench,
    "diag": dashboard.diag,
    "plot": dashboard.plot,
    "connections": wgsql.connections,
    "queries": queries.queries,
}
