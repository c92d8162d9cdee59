"""Plots of a tunnel's measured history, drawn with matplotlib's object API (Figure + Agg).

Never pyplot: these run on the dashboard's updater thread, where pyplot's global state and GUI backends must
not be touched. The figures carry their own light background and dark ink, so a PNG reads the same in light
and dark notebook themes.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from wgmagic.runtime.report import HistorySample
    from wgmagic.sql.timeline import QueryTimeline
    from wgmagic.tools.bench import BenchResult

INK = "#222222"
GRID = "#d9d9d9"
COLOURS = {"handshake_rtt": "#1f77b4", "icmp_rtt": "#d62728", "tcp_srtt": "#2ca02c",
           "rx_bytes_per_s": "#1f77b4", "tx_bytes_per_s": "#ff7f0e"}
# What each latency line measures, in its own name: the three are different round trips and read differently.
LABELS = {"handshake_rtt": "WireGuard handshake (to the peer's endpoint)",
          "icmp_rtt": "ping: ICMP echo through the tunnel",
          "tcp_srtt": "TCP: smoothed RTT of the tunnel's connections",
          "rx_bytes_per_s": "in (received)", "tx_bytes_per_s": "out (sent)"}
SHORT_LABELS = {"icmp_rtt": "ping\n(ICMP echo)", "tcp_srtt": "TCP\n(smoothed)"}  # the distribution's columns


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, facecolor="white", layout="constrained")


def _style(ax: Axes, title: str, ylabel: str) -> None:
    ax.set_facecolor("white")
    ax.set_title(title, color=INK, fontsize=11)
    ax.set_xlabel("seconds ago", color=INK)
    ax.set_ylabel(ylabel, color=INK)
    ax.tick_params(colors=INK)
    ax.grid(True, color=GRID, linewidth=0.6)
    for spine in ax.spines.values():
        spine.set_color(GRID)


def _series(records: Sequence[HistorySample], key: str, scale: float) -> tuple[list[float], list[float]]:
    if not records:
        return [], []
    end = records[-1]["time"]
    xs, ys = [], []
    for record in records:
        value = record.get(key)
        if isinstance(value, (int, float)):
            xs.append(record["time"] - end)
            ys.append(value * scale)
    return xs, ys


def percentiles(values: list[float], points: tuple[float, ...] = (50, 90, 99)) -> dict[float, float]:
    """Nearest-rank percentiles of `values` (empty dict for no values)."""
    if not values:
        return {}
    ordered = sorted(values)
    return {p: ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))] for p in points}


def smoothed(xs: list[float], ys: list[float], seconds: float = 2.0) -> list[float]:
    """A trailing mean of `ys` over `seconds` of `xs` (seconds): the throughput line without sampling jitter."""
    out: list[float] = []
    total, start = 0.0, 0
    for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
        total += y
        while xs[start] < x - seconds:
            total -= ys[start]
            start += 1
        out.append(total / (i - start + 1))
    return out


def latency_label(key: str, ping_target: str | None = None) -> str:
    """A latency line's legend entry: what it measures (LABELS), the ping's target named when known."""
    return LABELS[key] + (f" to {ping_target}" if key == "icmp_rtt" and ping_target else "")


def latency_figure(records: Sequence[HistorySample], window: float, width: float = 7.0, height: float = 3.0,
                   ping_target: str | None = None) -> Figure:
    """Round trips over the window, each line named by what it measures (LABELS): ICMP echo as dots, TCP's
    smoothed RTT and the WireGuard handshake's as lines; beside it each source's distribution over the window,
    p1 to p99 as a band with the p50 marked. The legend sits under the plot, clear of the data."""
    fig = _figure(width, height)
    ax, dist = fig.subplots(1, 2, gridspec_kw={"width_ratios": [4, 1]})
    spreads = []
    for key in ("handshake_rtt", "icmp_rtt", "tcp_srtt"):
        xs, ys = _series(records, key, 1000.0)
        if xs:
            style = "o" if key == "icmp_rtt" else "-"
            ax.plot(xs, ys, style, color=COLOURS[key], label=latency_label(key, ping_target), markersize=3,
                    linewidth=1.4)
            if key != "handshake_rtt":
                spreads.append((key, percentiles(ys, (1, 50, 99))))
    _style(ax, "Round trips through the tunnel", "milliseconds")
    ax.set_xlim(-window, 0)
    ax.set_ylim(bottom=0)
    if ax.get_legend_handles_labels()[0]:
        fig.legend(loc="outside lower center", ncol=2, fontsize=8, frameon=False, labelcolor=INK)
    dist.set_facecolor("white")
    dist.set_title("p1 / p50 / p99", color=INK, fontsize=9)
    dist.tick_params(colors=INK, labelsize=8)
    for spine in dist.spines.values():
        spine.set_color(GRID)
    for i, (key, pct) in enumerate(spreads):
        dist.bar(i, pct[99] - pct[1], bottom=pct[1], width=0.6, color=COLOURS[key], alpha=0.35)
        dist.plot([i - 0.3, i + 0.3], [pct[50], pct[50]], color=COLOURS[key], linewidth=2)
    dist.set_xticks(range(len(spreads)))
    dist.set_xticklabels([SHORT_LABELS[key] for key, _ in spreads], color=INK, fontsize=7)
    dist.set_ylim(ax.get_ylim())
    dist.grid(True, axis="y", color=GRID, linewidth=0.6)
    return fig


def throughput_figure(records: Sequence[HistorySample], window: float, width: float = 7.0,
                      height: float = 2.6) -> Figure:
    """Throughput in and out: a 2 s trailing mean as the line, each 0.1 s sample faintly behind it (peaks)."""
    fig = _figure(width, height)
    ax = fig.subplots()
    for key in ("rx_bytes_per_s", "tx_bytes_per_s"):
        xs, ys = _series(records, key, 1 / 1048576)
        ax.plot(xs, ys, "-", color=COLOURS[key], linewidth=0.6, alpha=0.3)
        ax.plot(xs, smoothed(xs, ys), "-", color=COLOURS[key], label=LABELS[key] + " (2 s mean)", linewidth=1.6)
    _style(ax, "Tunnel throughput (WireGuard UDP)", "MiB/s")
    ax.set_xlim(-window, 0)
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper left", fontsize=8, frameon=False, labelcolor=INK)
    return fig


SHORTEST_WINDOW = 1.0  # seconds: the axis of a history this short or shorter (a tunnel just up)


def data_window(records: Sequence[HistorySample]) -> float:
    """Seconds of the axis that fits `records` (samples with a "time" in seconds, oldest first): from the
    first sample to the last, at least SHORTEST_WINDOW. `%wg plot` without --window draws this, so the
    data fills the axis whatever ran (a fixed 90 s axis showed one second of data at its right end)."""
    if len(records) < 2:
        return SHORTEST_WINDOW
    return max(SHORTEST_WINDOW, float(records[-1]["time"]) - float(records[0]["time"]))


def history_figure(records: Sequence[HistorySample], window: float) -> Figure:
    """Latency above throughput in one figure: `%wg plot`, for nbconvert/PDF and frontends without widgets."""
    fig = _figure(7.5, 5.2)
    top, bottom = fig.subplots(2, 1, sharex=True)
    for key in ("handshake_rtt", "icmp_rtt", "tcp_srtt"):
        xs, ys = _series(records, key, 1000.0)
        if xs:
            top.plot(xs, ys, "o" if key == "icmp_rtt" else "-", color=COLOURS[key], label=LABELS[key],
                     markersize=3, linewidth=1.4)
    _style(top, "Round trips through the tunnel", "milliseconds")
    for key in ("rx_bytes_per_s", "tx_bytes_per_s"):
        xs, ys = _series(records, key, 1e-6)
        bottom.plot(xs, ys, "-", color=COLOURS[key], label=LABELS[key], linewidth=1.4)
    _style(bottom, "Tunnel throughput (WireGuard UDP)", "MB/s")
    for ax in (top, bottom):
        ax.set_xlim(-window, 0)
        ax.set_ylim(bottom=0)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper left", fontsize=8, frameon=False, labelcolor=INK)
    return fig


def png(fig: Figure) -> bytes:
    """The figure as PNG bytes, rendered by Agg (safe on any thread)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    canvas.print_figure(buffer, format="png")
    return buffer.getvalue()


class PngFigure:
    """A PNG that notebooks display as an image (and nbconvert keeps): what `%wg plot` and `%wg bench` return."""

    def __init__(self, data: bytes, title: str = "") -> None:
        self.data = data
        self.title = title

    def _repr_png_(self) -> bytes:
        return self.data

    def __repr__(self) -> str:
        return f"<{self.title or 'figure'}: PNG, {len(self.data):,} bytes>"

    def save(self, path: str) -> None:
        from wgmagic import files  # written whole, in place of whatever was there (wgmagic/files.py)

        files.write_bytes(path, self.data, private=False)


def bench_figure(result: BenchResult) -> Figure:
    """Throughput over time and the round-trip histogram of a `tools.bench.BenchResult`."""
    fig = _figure(7.5, 2.8)
    left, right = fig.subplots(1, 2, width_ratios=[2, 1])
    for phase, colour in (("download", "#1f77b4"), ("upload", "#ff7f0e")):
        points = [(t, v) for p, t, v in result.timeline if p == phase]
        if points:
            left.plot([t for t, _ in points], [v for _, v in points], "-", color=colour, label=phase)
    _style(left, f"Throughput through the tunnel to {result.target}", "MB/s")
    left.set_xlabel("seconds into the phase", color="#222222")
    left.set_ylim(bottom=0)
    left.legend(loc="lower right", fontsize=8, frameon=False)
    if result.rtts_ms:
        right.hist(result.rtts_ms, bins=40, color="#2ca02c")
    _style(right, "Round trips", "count")
    right.set_xlabel("milliseconds", color="#222222")
    return fig


STAGE_COLOURS = {"import": "#aec7e8", "wait": "#9edae5", "client": "#dbdb8d", "dns": "#8c564b", "connect": "#e377c2",
                 "tls": "#bcbd22", "auth": "#7f7f7f",
                 "send": "#c5b0d5", "latency": "#ff7f0e", "server": "#d62728", "transfer": "#1f77b4",
                 "decode": "#2ca02c"}
STAGE_LABELS = {"import": "imports (prefetch)", "wait": "waiting for the prefetch", "client": "client (cell)",
                "dns": "DNS", "connect": "TCP connect", "tls": "TLS", "auth": "authentication",
                "send": "client + earlier round trips", "latency": "round trip", "server": "server",
                "transfer": "transfer", "decode": "decoding"}
# The stages' names in a statement's line of milliseconds (short: the line has room for all of them).
STAGE_SHORT = {"import": "import", "wait": "wait", "client": "cell", "dns": "DNS", "connect": "connect", "tls": "TLS",
               "auth": "auth", "send": "client",
               "latency": "round trip", "server": "server", "transfer": "transfer", "decode": "decode"}
UNMEASURED = "#dddddd"
WATERFALL_TITLE = "Query timeline: where each statement's time went"


def stage_line(timeline: QueryTimeline) -> str:
    """A statement's stages in milliseconds, those that took any time, in order: "connect 20 · TLS 25 · round
    trip 20 · server 50 · transfer 80 ms"; "stages not measured (no tunnel under the session)" when none was."""
    from wgmagic.sql.timeline import ms

    parts = [f"{STAGE_SHORT[stage]} {ms(value).removesuffix(' ms')}" for stage, value in timeline.stages().items()
             if value > 0]
    if timeline.server_ms is None and timeline.decode_ms is None:
        return "stages not measured (no tunnel under the session)"
    return " · ".join(parts) + " ms" if parts else "no stage took a measurable time"


def waterfall_figure(timelines: list[QueryTimeline], width: float = 7.0, height: float | None = None) -> Figure:
    """The query timeline as a waterfall: one horizontal bar per statement (newest at the bottom), split by
    stage (wgmagic.sql.timeline.STAGES) in milliseconds, with its total and verdict at the bar's end and, under
    it, each stage's milliseconds (`stage_line`). The legend names every stage (TLS included when no statement
    shown had one), so the colours read the same from one redraw to the next."""
    from matplotlib.patches import Patch
    from matplotlib.transforms import blended_transform_factory

    from wgmagic.sql.timeline import STAGES, verdict

    count = len(timelines)
    fig = _figure(width, height if height is not None else max(2.6, 1.9 + 0.62 * count))
    fig.suptitle(WATERFALL_TITLE, color=INK, fontsize=10)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_facecolor("white")
    ax.set_xlabel("milliseconds", color=INK)
    ax.tick_params(colors=INK)
    ax.grid(True, axis="x", color=GRID, linewidth=0.6)
    for spine in ax.spines.values():
        spine.set_color(GRID)
    if not timelines:
        ax.text(0.5, 0.5, "no %%wgsql statement yet", ha="center", va="center", color=INK, transform=ax.transAxes)
        ax.set_yticks([])
        return fig
    longest = max(t.total_ms for t in timelines) or 1.0
    unmeasured = False
    under = blended_transform_factory(fig.transFigure, ax.transData)  # the stage line spans the figure's width
    for row, t in enumerate(timelines):
        y = count - 1 - row
        left = 0.0
        for stage, value in t.stages().items():
            if value > 0:
                ax.barh(y, value, left=left, height=0.42, color=STAGE_COLOURS[stage])
                left += value
        rest = t.total_ms - left  # what no stage measured (a session without a forward)
        if rest > 0.001 * longest:
            ax.barh(y, rest, left=left, height=0.42, color=UNMEASURED)
            unmeasured = True
        ax.text(max(left, t.total_ms) + 0.01 * longest, y, f"{t.total_ms:.0f} ms · {verdict(t)}", va="center",
                fontsize=8, color=INK)
        ax.text(0.02, y - 0.44, stage_line(t), va="center", ha="left", fontsize=7, color=INK, transform=under,
                wrap=True)  # on two lines when nine long stages do not fit the figure's width
    ax.set_ylim(-0.8, count - 0.5)
    ax.set_yticks(range(count))
    ax.set_yticklabels([_cut(t.statement, 28) for t in reversed(timelines)], fontsize=8, color=INK)
    ax.set_xlim(0, longest * 1.45)
    handles = [Patch(color=STAGE_COLOURS[stage], label=STAGE_LABELS[stage]) for stage in STAGES]
    if unmeasured:
        handles.append(Patch(color=UNMEASURED, label="unmeasured"))
    fig.legend(handles=handles, loc="outside lower center", ncol=4, fontsize=7, frameon=False, labelcolor=INK)
    return fig


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"
