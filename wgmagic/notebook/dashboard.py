"""`%wg diag`: a live ipywidgets dashboard of one tunnel.

An updater thread (not the kernel's main thread) reads the tunnel's measured history, draws the plots with
matplotlib's Agg backend and pushes PNG bytes and numbers into widget traits; trait updates are safe from
any thread and reach the frontend even while a query blocks the main thread. Paused, the thread sleeps on
an Event (no CPU); it ends when the dashboard is closed or the tunnel goes down.

What it reads has a shape (wgmagic.runtime.report: TunnelStats, PeerRow, HistorySample); the headline tiles are
a pure function of those (`tile_figures`), the tunnel's health is wgmagic.runtime.health's word (the one
`%wg status` and the doctor show), and every round trip is named by what measured it.
"""

from __future__ import annotations

import contextlib
import html
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from wgmagic.addresses import parse_window  # noqa: F401 (public here too)
from wgmagic.notebook.plots import latency_figure, percentiles, png, throughput_figure
from wgmagic.notebook.status import history, human_bytes
from wgmagic.runtime.health import doctor_health, percent, retransmissions, seconds_words, tunnel_health

if TYPE_CHECKING:
    from wgmagic.runtime.report import HistorySample, PeerRow, TcpConnectionStats, TunnelStats
    from wgmagic.runtime.tunnel import Tunnel

WINDOWS = [("1 min", 60.0), ("5 min", 300.0), ("10 min", 600.0)]
PING_EVERY = 1.0  # seconds between ICMP echoes to the ping target
QUERIES_SHOWN = 8  # statements in the dashboard's waterfall
SORT_KEYS = [("bytes in", "bytes_received"), ("bytes out", "bytes_sent"), ("TCP round trip", "srtt"),
             ("retransmissions", "retransmits"), ("remote", "remote"), ("state", "state")]

# The internal drop reasons (wgmagic.runtime.metrics.totals' "drops_by_reason": "wireguard.<reason>" and
# "ip.<reason>") in words a user reads; a reason not listed is shown with its underscores as spaces.
DROP_WORDS = {
    "ip.tcp_no_connection": "packets for connections already closed",
    "ip.udp_no_socket": "UDP packets for no open socket",
    "ip.bad_checksum": "packets with a bad checksum",
    "ip.malformed_inner": "malformed packets from the peer",
    "ip.malformed_tcp": "malformed TCP segments",
    "ip.malformed_udp": "malformed UDP datagrams",
    "ip.malformed_icmp": "malformed ICMP messages",
    "ip.not_for_us": "packets addressed to someone else",
    "ip.unknown_protocol": "packets of a protocol not handled",
    "ip.icmp_ignored": "ICMP messages ignored",
    "ip.listen_backlog_full": "connections refused: listener backlog full",
    "ip.listen_refused": "connections to a port nobody listens on",
    "ip.udp_queue_full": "UDP datagrams dropped: the reader is behind",
    "ip.receive_queue_full": "packets dropped: the receive queue was full",
    "ip.fragment_timeout": "fragments whose packet never completed",
    "ip.fragment_evicted": "fragments evicted (too many at once)",
    "ip.fragment_duplicate": "duplicate fragments",
    "ip.fragment_too_long": "fragments beyond the largest packet",
    "ip.fragment_discarded": "fragments discarded",
    "wireguard.replay": "replayed or too-late packets",
    "wireguard.decrypt_failed": "packets that failed decryption",
    "wireguard.allowed_ips": "packets from outside the peer's AllowedIPs",
    "wireguard.unknown_receiver_index": "packets for a session no longer known",
    "wireguard.expired_keypair": "packets under an expired session key",
    "wireguard.no_endpoint": "packets with no peer endpoint to go to",
    "wireguard.no_route": "packets with no peer for their address (AllowedIPs)",
    "wireguard.queue_full": "packets dropped: the send queue was full while handshaking",
    "wireguard.short": "datagrams too short to be WireGuard",
    "wireguard.unknown_peer": "handshakes from an unknown peer",
    "wireguard.malformed_handshake": "malformed handshake messages",
    "wireguard.handshake_failed": "handshakes that failed",
    "wireguard.handshake_gave_up": "handshakes given up (the peer never answered)",
    "wireguard.initiation_flood": "handshake initiations too often (flood limit)",
    "wireguard.replayed_initiation": "replayed handshake initiations",
    "wireguard.bad_cookie_reply": "cookie replies that did not verify",
    "wireguard.malformed_cookie_reply": "malformed cookie replies",
    "wireguard.mismatched": "messages of a mismatched type",
    "wireguard.internal_error": "internal errors (please report)",
    "wireguard.event_queue_full": "events dropped: the queue was full",
    "wireguard.unexpected_source": "packets from an unexpected address",
}


def drop_words(reason: str) -> str:
    """An internal drop reason in words (DROP_WORDS; else its last part with spaces)."""
    return DROP_WORDS.get(reason) or reason.rpartition(".")[2].replace("_", " ")


def ago(seconds: float | None) -> str:
    """"4 s ago", "3 min ago", "never"."""
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def rate(bytes_per_s: float | None) -> str:
    if bytes_per_s is None:
        return "-"
    if bytes_per_s < 1024:
        return f"{bytes_per_s:.0f} B/s"
    if bytes_per_s < 1048576:
        return f"{bytes_per_s / 1024:.1f} KiB/s"
    return f"{bytes_per_s / 1048576:.1f} MiB/s"


def millis(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    value = seconds * 1000
    return f"{value:.0f} ms" if value >= 10 else f"{value:.1f} ms"


def _round_trip(samples: list[float], window: str, measure: str, missing: str) -> tuple[str, str]:
    """A round-trip tile: the newest sample (seconds) and its p50 / p99 over the window, with what measured it."""
    if not samples:
        return "-", missing
    pct = percentiles(samples, (50, 99))
    return millis(samples[-1]), f"{measure}; p50 {millis(pct[50])} / p99 {millis(pct[99])} over {window}"


def tile_figures(snap: TunnelStats, records: Sequence[HistorySample], peers: Sequence[PeerRow], window: float,
                 ping_target: str = "") -> dict[str, tuple[str, str]]:
    """The headline tiles, label -> (value, note), from Tunnel.stats(), Tunnel.history(window) and
    Tunnel.peer_report(): the tunnel's health (wgmagic.runtime.health, judged over the window), the TCP round
    trip (RFC 6298 smoothed RTT of the tunnel's TCP connections: data out to its ACK back, through the server's
    TCP stack) apart from the ping round trip (ICMP echo to `ping_target`), throughput, the handshake (and
    WireGuard's own round trip), TCP retransmissions over the window and drops in words."""
    totals = snap["totals"]
    words = seconds_words(window)
    health = tunnel_health(snap, peers, records, window)
    tcp = [r["tcp_srtt"] for r in records if r["tcp_srtt"] is not None]
    icmp = [r["icmp_rtt"] for r in records if r["icmp_rtt"] is not None]
    established = totals["tcp_established"]
    recent = list(records[-20:])  # the last 2 s
    rx_now = sum(r["rx_bytes_per_s"] for r in recent) / len(recent) if recent else None
    tx_now = sum(r["tx_bytes_per_s"] for r in recent) / len(recent) if recent else None
    peak_rx = max((r["rx_bytes_per_s"] for r in records), default=0.0)
    ages = [p["handshake_age"] for p in peers if p["handshake_age"] is not None]
    rekeys = [p["next_rekey_in"] for p in peers if p["next_rekey_in"] is not None]
    sizes = [conn["mss"] for conn in snap["tcp_connections"]]
    resent = retransmissions(records, window, totals["tcp_retransmits"], max(sizes, default=None))
    share = f", about {percent(resent.share)} of segments" if resent.share is not None and resent.count else ""
    drops = {k: v for k, v in totals["drops_by_reason"].items() if v}
    top = sorted(drops.items(), key=lambda item: -item[1])[:2]
    handshake_rtt = snap["handshake_rtt"]
    handshake_note = f"next rekey in {min(rekeys):.0f} s" if rekeys else f"{len(peers)} peer(s)"
    if handshake_rtt is not None:
        handshake_note = f"WireGuard's own round trip {millis(handshake_rtt)}; {handshake_note}"
    pinged = ping_target or "the ping target"
    return {
        "health": (health.word, "; ".join(health.reasons) or f"judged over the last {words}"),
        "TCP round trip": _round_trip(tcp, words, f"smoothed RTT (RFC 6298) of {established} TCP connection(s)",
                                      "no TCP connection: nothing to measure"),
        "ping round trip": _round_trip(icmp, words, f"ICMP echo to {pinged}, one a second",
                                       f"no echo answered by {ping_target} in the last {words}" if ping_target
                                       else "no ping target set"),
        "in now": (rate(rx_now), f"peak {rate(peak_rx)}, total {human_bytes(totals['udp_rx_bytes'])}"),
        "out now": (rate(tx_now), f"total {human_bytes(totals['udp_tx_bytes'])}"),
        "handshake": (ago(min(ages)) if ages else "never", handshake_note),
        "TCP retransmissions": (f"{resent.per_s:.1f}/s",
                                f"{resent.count} over the last {words}{share}; {resent.total} since the tunnel "
                                "came up"),
        "drops": (f"{sum(drops.values())}", "; ".join(f"{drop_words(k)}: {v}" for k, v in top) or "none"),
    }


def sorted_connections(conns: Sequence[TcpConnectionStats], key: str) -> list[TcpConnectionStats]:
    """The TCP table's rows in the order SORT_KEYS' `key` asks: text keys ascending, numbers largest first."""
    if key == "remote":
        return sorted(conns, key=lambda c: c["remote"])
    if key == "state":
        return sorted(conns, key=lambda c: str(c["state"]))

    def number(conn: TcpConnectionStats) -> float:
        if key == "srtt":
            return conn["srtt"] or 0.0
        return {"bytes_received": conn["bytes_received"], "bytes_sent": conn["bytes_sent"],
                "retransmits": conn["retransmits"]}[key]

    return sorted(conns, key=lambda c: -number(c))


class Reading:
    """A number the dashboard computed, for code and tests (`dash.rx_bytes.value`); never shown as a box."""

    def __init__(self) -> None:
        self.value = 0


# A tile's note says what measured its figure: it wraps within the tile rather than widening it.
_TILE_CSS = ("display:inline-block;min-width:9.5em;max-width:15.5em;margin:0 .6em .6em 0;padding:.45em .7em;"
             "border-radius:6px;background:#f4f6f8;border:1px solid #dde3e8;color:#222;vertical-align:top")


def tile(label: str, value: str, note: str = "") -> str:
    return (f"<div class='wgmagic-tile' style='{_TILE_CSS}'><div style='font-size:.75em;color:#555'>"
            f"{html.escape(label)}</div><div style='font-size:1.35em;font-weight:600'>{html.escape(value)}</div>"
            f"<div style='font-size:.72em;line-height:1.35;color:#666'>{html.escape(note)}</div></div>")


class Dashboard:
    """`%wg diag`: ipywidgets showing a tunnel at a glance: headline tiles (`tile_figures`: health, the TCP and
    the ping round trips, throughput in and out, handshake, TCP retransmissions over the window, drops in
    words), round trips as lines and a distribution, smoothed throughput with its peaks, the latest `%%wgsql`
    statements' waterfall with each stage's milliseconds, per-peer rows with their health, a table of TCP
    connections with its sort control above it, and the doctor's report and word from one button; redrawn every
    `interval` seconds on a thread of its own until close(); optional ICMP pings to `ping_target` and a
    throughput-test button against a bench service at `bench_target` (HOST:PORT)."""

    def __init__(self, tunnel: Tunnel, *, window: float = 300.0, ping_target: str | None = None,
                 interval: float = 0.5, bench_target: str | None = None) -> None:
        import ipywidgets as w

        self.tunnel = tunnel
        self.interval = interval
        self._stop = threading.Event()
        self._running = threading.Event()
        self._running.set()
        self._lock = threading.Lock()
        self._last_ping = 0.0
        self._queries_seen = -1
        self.parked = threading.Event()  # set while the paused updater sleeps (no update under way)
        self.redraws = 0
        self.figures: dict[str, str] = {}  # the tiles' texts, by label
        self._tile_values: dict[str, tuple[str, str]] = {}  # the tiles' last (value, note), by label
        self.rx_bytes, self.tx_bytes, self.retransmits = Reading(), Reading(), Reading()
        self.tiles = w.HTML()
        self.latency_plot = w.Image(format="png", layout=w.Layout(width="100%", max_width="720px"))
        self.throughput_plot = w.Image(format="png", layout=w.Layout(width="100%", max_width="720px"))
        self.queries_plot = w.Image(format="png", layout=w.Layout(width="100%", max_width="560px"))
        self.status = w.HTML()
        self.peers = w.HTML()
        self.connections_title = w.HTML()
        self.connections = w.HTML()
        self.sort = w.Dropdown(options=SORT_KEYS, value="bytes_received", description="sort by",
                               layout=w.Layout(width="auto"))
        self.pause = w.ToggleButton(description="Pause", icon="pause", tooltip="stop updating (uses no CPU)")
        self.window = w.Dropdown(options=WINDOWS, value=min((v for _, v in WINDOWS), key=lambda v: abs(v - window)),
                                 description="window")
        default_target = ping_target or self._default_ping_target()
        self.ping_target = w.Text(value=default_target, description="ping", placeholder="host on the tunnel")
        self.bench_target = w.Text(value=bench_target or "", description="bench", placeholder="HOST:PORT")
        self.bench_button = w.Button(description="Throughput test", icon="tachometer")
        self.bench_result = w.HTML()
        self.doctor_button = w.Button(description="Doctor", icon="stethoscope",
                                      tooltip="%wg doctor on this tunnel: each check's verdict, cause and fix")
        self.doctor_result = w.HTML()
        self.pause.observe(self._on_pause, names="value")
        self.sort.observe(lambda _change: self._redraw_connections(), names="value")
        self.bench_button.on_click(self._on_bench)
        self.doctor_button.on_click(self._on_doctor)
        controls = w.HBox([self.pause, self.window, self.ping_target])
        plots = w.VBox([self.latency_plot, self.throughput_plot], layout=w.Layout(flex="3 1 480px"))
        side = w.VBox([self.queries_plot], layout=w.Layout(flex="2 1 360px"))
        bench = w.HBox([self.bench_target, self.bench_button, self.doctor_button])
        # The sort control sits on the TCP table's own title line: it orders that table, not the peers above.
        self.connections_box = w.VBox([w.HBox([self.connections_title, self.sort],
                                              layout=w.Layout(align_items="center")), self.connections])
        self.widget = w.VBox([controls, self.tiles, w.HBox([plots, side], layout=w.Layout(flex_flow="row wrap")),
                              self.status, self.peers, self.connections_box, bench, self.bench_result,
                              self.doctor_result])
        self._snap: TunnelStats | None = None
        self._thread = threading.Thread(target=self._run, name=f"wgmagic-diag-{tunnel.name}", daemon=True)

    # ---- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> Dashboard:
        """Start the updater thread and return at once: matplotlib (imported and drawn there, Figure + Agg) never
        runs on the caller's thread, so `%wg diag` does not hold up the cell."""
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._running.set()  # wake a paused updater so it can see the stop
        with contextlib.suppress(Exception):
            self.widget.close()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)  # type: ignore[no-untyped-call]

    def _on_pause(self, change: dict[str, Any]) -> None:
        if change["new"]:
            self._running.clear()
            self.pause.description, self.pause.icon = "Resume", "play"
        else:
            self.pause.description, self.pause.icon = "Pause", "pause"
            self._running.set()

    def _widget_closed(self) -> bool:
        return getattr(self.widget, "comm", None) is None

    def _run(self) -> None:
        drawn = False  # the first frame is drawn even before a front end has opened the widget
        while not self._stop.is_set():
            if not self._running.is_set():
                self.parked.set()  # paused: no update is under way until Resume
            self._running.wait()
            self.parked.clear()
            if self._stop.is_set() or self.tunnel.closed or (drawn and self._widget_closed()):
                break
            drawn = True
            started = time.monotonic()
            try:
                self._maybe_ping()
                self.update()
            except Exception as exc:  # a closed tunnel mid-update, mostly: say so and stop
                self.status.value = f"<b>updates stopped:</b> {html.escape(str(exc))}"
                if self.tunnel.closed:
                    break
            self._stop.wait(max(0.05, self.interval - (time.monotonic() - started)))
        if self.tunnel.closed:
            self.status.value = "<b>the tunnel is closed</b>: updates stopped"
            self._show_closed()

    def _show_closed(self) -> None:
        """The health tile says the tunnel is closed (the other tiles keep their last figures, as of then)."""
        figures = dict(self._tile_values)
        figures["health"] = ("closed", "the tunnel was closed: the figures are its last ones")
        self.figures = {label: f"{value} ({note})" for label, (value, note) in figures.items()}
        self.tiles.value = "<div>" + "".join(tile(label, value, note) for label, (value, note) in figures.items()) \
            + "</div>"

    # ---- one refresh -----------------------------------------------------------------------------------
    def update(self) -> None:
        with self._lock:
            window = float(self.window.value)
            target = self.ping_target.value.strip()
            records = history(self.tunnel, window)
            self.latency_plot.value = png(latency_figure(records, window, ping_target=target or None))
            self.throughput_plot.value = png(throughput_figure(records, window))
            self._maybe_draw_queries()
            snap = self.tunnel.stats()
            self._snap = snap
            totals = snap["totals"]
            self.rx_bytes.value = totals["udp_rx_bytes"]
            self.tx_bytes.value = totals["udp_tx_bytes"]
            self.retransmits.value = totals["tcp_retransmits"]
            peers = self.tunnel.peer_report()
            figures = tile_figures(snap, records, peers, window, target)
            self._tile_values = figures
            self.figures = {label: f"{value} ({note})" for label, (value, note) in figures.items()}
            self.tiles.value = "<div>" + "".join(tile(label, value, note)
                                                 for label, (value, note) in figures.items()) + "</div>"
            self.peers.value = self._peers_html(peers)
            self.status.value = ""
            self._redraw_connections()
            self.redraws += 1

    def _maybe_draw_queries(self) -> None:
        from wgmagic.notebook.plots import waterfall_figure
        from wgmagic.sql import timeline

        count = timeline.recorded()
        if count != self._queries_seen:  # redrawn only when a statement was recorded
            self._queries_seen = count
            self.queries_plot.value = png(waterfall_figure(timeline.recent(QUERIES_SHOWN), width=5.6))

    def _peers_html(self, peers: Sequence[PeerRow]) -> str:
        from wgmagic.runtime.health import peer_health

        head = ("<tr><th style='text-align:left'>peer</th><th style='text-align:left'>endpoint</th>"
                "<th style='text-align:left'>allowed IPs</th><th>handshake</th><th>in</th><th>out</th>"
                "<th style='text-align:left'>health</th></tr>")
        rows = []
        for peer in peers:
            where = f"{peer['endpoint_name']} ({peer['endpoint']})" if peer["endpoint_name"] else peer["endpoint"]
            cells = [peer["fingerprint"], where, ", ".join(peer["allowed_ips"]) or "-"]
            numbers = [ago(peer["handshake_age"]), human_bytes(peer["rx_bytes"]), human_bytes(peer["tx_bytes"])]
            rows.append("<tr>" + "".join(f"<td style='padding-right:1.2em'>{html.escape(str(c))}</td>" for c in cells)
                        + "".join(f"<td style='text-align:right;padding-right:1.2em'>{html.escape(n)}</td>"
                                  for n in numbers)
                        + f"<td>{html.escape(str(peer_health(peer)))}</td></tr>")
        return f"<table style='border-collapse:collapse'><caption style='text-align:left'>peers</caption>{head}" \
               f"{''.join(rows)}</table>"

    def _redraw_connections(self) -> None:
        conns = self._snap["tcp_connections"] if self._snap is not None else []
        self.connections_title.value = f"<b>TCP connections ({len(conns)})</b>"
        self.connections.value = self._connections_html(conns)

    def _connections_html(self, conns: Sequence[TcpConnectionStats]) -> str:
        if not conns:
            return "<p>no TCP connections</p>"
        ordered = sorted_connections(conns, str(self.sort.value))
        cell = "padding:1px 1.2em 1px 0"
        head = "".join(f"<th style='{cell};text-align:{align}'>{name}</th>" for name, align in (
            ("remote", "left"), ("state", "left"), ("in", "right"), ("out", "right"),
            ("TCP round trip (smoothed)", "right"), ("retransmissions", "right")))
        rows = []
        for conn in ordered[:50]:
            values = [(conn["remote"], "left"), (str(conn["state"]), "left"),
                      (human_bytes(conn["bytes_received"]), "right"), (human_bytes(conn["bytes_sent"]), "right"),
                      (millis(conn["srtt"]), "right"), (str(conn["retransmits"]), "right")]
            rows.append("<tr>" + "".join(f"<td style='{cell};text-align:{align};font-variant-numeric:tabular-nums'>"
                                         f"{html.escape(v)}</td>" for v, align in values) + "</tr>")
        more = f"<p>and {len(conns) - 50} more</p>" if len(conns) > 50 else ""
        return (f"<table style='border-collapse:collapse'><thead><tr>{head}</tr></thead>"
                f"<tbody>{''.join(rows)}</tbody></table>{more}")

    # ---- doctor ------------------------------------------------------------------------------------------
    def _on_doctor(self, _button: object) -> None:
        self.doctor_button.disabled = True
        self.doctor_result.value = "<p>checking the tunnel and its path...</p>"
        threading.Thread(target=self._doctor, name="wgmagic-doctor", daemon=True).start()

    def _doctor(self) -> None:
        from wgmagic.tools.doctor import run_doctor

        try:
            report = run_doctor(None, tunnel=self.tunnel, timeout=5.0)
            verdict = doctor_health(report.checks)  # in the words %wg status and the health tile use
            failing = ", ".join(c.name for c in report.checks if c.verdict in ("failed", "warning"))
            shown = f"doctor: {verdict.word}" + (f" ({failing})" if failing else "")
            self.doctor_result.value = f"<p><b>{html.escape(shown)}</b></p>{report._repr_html_()}"
        except Exception as exc:
            self.doctor_result.value = f"<p>the doctor could not run: {html.escape(str(exc))}</p>"
        finally:
            self.doctor_button.disabled = False

    def _maybe_ping(self) -> None:
        target = self.ping_target.value.strip()
        if not target or time.monotonic() - self._last_ping < PING_EVERY:
            return
        self._last_ping = time.monotonic()
        with contextlib.suppress(Exception):  # an unroutable or unknown target shows as no ICMP line
            address = str(self.tunnel.resolve_address(target))
            self.tunnel.ping(address, 1, timeout=1.0)

    def _default_ping_target(self) -> str:
        servers = list(self.tunnel.config.interface.dns_servers)
        return str(servers[0]) if servers else ""

    # ---- throughput test -------------------------------------------------------------------------------
    def _on_bench(self, _button: object) -> None:
        target = self.bench_target.value.strip()
        if not target:
            self.bench_result.value = "<p>give the bench service's HOST:PORT first</p>"
            return
        self.bench_button.disabled = True
        self.bench_result.value = f"<p>measuring through the tunnel to {html.escape(target)}...</p>"
        threading.Thread(target=self._bench, args=(target,), name="wgmagic-bench", daemon=True).start()

    def _bench(self, target: str) -> None:
        from wgmagic.addresses import split_host_port
        from wgmagic.tools.bench import run_bench

        try:
            host, port = split_host_port(target)
            result = run_bench(self.tunnel, str(self.tunnel.resolve_address(host)), port, seconds=3.0)
            self.bench_result.value = "<table>" + "".join(
                f"<tr><th style='text-align:left'>{row['measure']}</th><td>{row['result']}</td>"
                f"<td>{row['detail']}</td></tr>" for row in result.rows()) + "</table>"
        except Exception as exc:
            self.bench_result.value = f"<p>throughput test failed: {html.escape(str(exc))}</p>"
        finally:
            self.bench_button.disabled = False
