"""`%wg diag` (the live dashboard) and `%wg plot` (the same history as a static figure)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError

from wgmagic.notebook.cmd.tunnels import find_tunnel
from wgmagic.notebook.variables import value

if TYPE_CHECKING:
    from wgmagic.notebook.magics import WgMagic


def _window(text: str) -> float:
    from wgmagic.addresses import parse_window

    try:
        return parse_window(text)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def diag(magic: WgMagic, args: argparse.Namespace) -> Any:
    """`%wg diag [--window 5m] [--ping HOST] [--bench HOST:PORT]`: the started Dashboard (closed on unload)."""
    from wgmagic.notebook.dashboard import Dashboard

    window = _window(args.window)
    tunnel = find_tunnel(magic, args.tunnel)
    board = Dashboard(tunnel, window=window, ping_target=value(magic.shell.user_ns, args.ping),
                      bench_target=value(magic.shell.user_ns, args.bench))
    magic.dashboards.append(board)
    return board.start()


def plot(magic: WgMagic, args: argparse.Namespace) -> Any:
    """`%wg plot [--window 5m] [--save PATH]`: the tunnel's history as a PNG figure (for nbconvert/PDF);
    without --window, all the history kept (up to 10 minutes) on an axis that fits it (plots.data_window)."""
    from wgmagic.notebook.plots import PngFigure, data_window, history_figure, png
    from wgmagic.notebook.status import history

    window = None if args.window is None else _window(args.window)
    tunnel = find_tunnel(magic, args.tunnel)
    records = history(tunnel, window)
    if window is None:
        window = data_window(records)
    figure = PngFigure(png(history_figure(records, window)), f"tunnel {tunnel.name}")
    if args.save:
        figure.save(args.save)
    return figure
