"""`%wg queries`: the recent `%%wgsql` statements' timelines (wgmagic.sql.timeline) as a table and a waterfall."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wgmagic.notebook.magics import WgMagic


def queries(magic: WgMagic, args: argparse.Namespace) -> Any:
    """`%wg queries [--last N] [--no-chart] [--clear]`: the waterfall chart is displayed (one bar per statement
    split by stage) and the DataFrame returned (one row per statement: statement, rows, bytes, the stages in
    ms, total_ms, rtt_ms, rate_mbit_s, exchanges, verdict, alias; the statement as written in the cell)."""
    from wgmagic.sql import timeline

    if args.clear:
        count = len(timeline.recent())
        timeline.clear()
        print(f"wgmagic: cleared the query timeline ({count} statement{'' if count == 1 else 's'})")
        return None
    if args.last is not None and args.last < 1:
        from IPython.core.error import UsageError

        raise UsageError("--last takes 1 or more")
    items = timeline.recent(args.last or 20)
    if not args.no_chart:
        from IPython.display import display

        display(waterfall(items))
    return timeline.frame(items)


def waterfall(items: list[Any]) -> Any:
    """The statements' waterfall as a PNG notebooks display (wgmagic.notebook.plots.PngFigure)."""
    from wgmagic.notebook.plots import PngFigure, png, waterfall_figure

    return PngFigure(png(waterfall_figure(items)), "query timeline")
