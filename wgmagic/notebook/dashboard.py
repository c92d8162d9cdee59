"""`%wg diag`: a live ipywidgets dashboard of one tunnel.

An updater thread (not the kernel's main thread) reads the tunnel's measured history, draws the plots with
matplotlib's Agg backend and pushes PNG bytes and numbers into widget traits; trait updates are safe from
any thread and reach the frontend even while a query blocks the main thread. Paused, the thread sleeps on
an Event (no CPU); it ends when the dashboard is closed or the tunnel goes down.
"""

from __future__ import annotations

import contextlib
import html
import threading
import time
from typing import Any

from wgmagic.addresses import parse_window  # noqa: F401 (public here too)
from wgmagic.notebook.plots import latency_figure, png, throughput_figure
from wgmagic.notebook.status import human_bytes

WINDOWS = [("1 min", 60.0), ("5 min", 300.0), ("10 min", 600.0)]
PING_EVERY = 1.0  # seconds between ICMP echoes to the ping target


class Dashboard:
    """`%wg diag`: ipywidgets showing a tunnel's latency and throughput over `window` seconds, its status and
    connections, redrawn every `interval` seconds on a thread of its own until close(); optional ICMP pings to
    `ping_target` and a throughput-test button against a bench service at `bench_target` (HOST:PORT)."""

    def __init__(self, tunnel: Any, *, window: float = 300.0, ping_target: str | None = None,
                 interval: float = 0.5, bench_target: str | None = None) -> None:
        import ipywidgets as w

        self.tunnel = tunnel
        self.interval = interval
        self._stop = threading.Event()
        self._running = threading.Event()
        self._running.set()
        self._lock = threading.Lock()
        self._last_ping = 0.0
        self.redraws = 0
        self.latency_plot = w.Image(format="png", layout=w.Layout(width="100%", max_width="720px"))
        self.throughput_plot = w.Image(format="png", layout=w.Layout(width="100%", max_width="720px"))
        # Numbers as widgets of their own: the frontend (and a test reading the model state) sees values.
        self.rx_bytes = w.IntText(description="rx bytes", disabled=True)
        self.tx_bytes = w.IntText(description="tx bytes", disabled=True)
        self.rx_packets = w.IntText(description="rx packets", disabled=True)
        self.tx_packets = w.IntText(description="tx packets", disabled=True)
        self.handshakes = w.IntText(description="handshakes", disabled=True)
        self.retransmits = w.IntText(description="retransmits", disabled=True)
        self.status = w.HTML()
        self.connections = w.HTML()
        self.pause = w.ToggleButton(description="Pause", icon="pause", tooltip="stop updating (uses no CPU)")
        self.window = w.Dropdown(options=WINDOWS, value=min((v for _, v in WINDOWS), key=lambda v: abs(v - window)),
                                 description="window")
        default_target = ping_target or self._default_ping_target()
        self.ping_target = w.Text(value=default_target, description="ping", placeholder="host on the tunnel")
        self.bench_target = w.Text(value=bench_target or "", description="bench", placeholder="HOST:PORT")
        self.bench_button = w.Button(description="Throughput test", icon="tachometer")
        self.bench_result = w.HTML()
        self.pause.observe(self._on_pause, names="value")
        self.bench_button.on_click(self._on_bench)
        counters = w.GridBox([self.rx_bytes, self.tx_bytes, self.rx_packets, self.tx_packets, self.handshakes,
                              self.retransmits], layout=w.Layout(grid_template_columns="repeat(3, auto)"))
        controls = w.HBox([self.pause, self.window, self.ping_target])
        bench = w.HBox([self.bench_target, self.bench_button])
        self.widget = w.VBox([controls, w.HBox([self.latency_plot]), w.HBox([self.throughput_plot]), self.status,
                              counters, self.connections, bench, self.bench_result])
        self._thread = threading.Thread(target=self._run, name=f"wgmagic-diag-{tunnel.name}", daemon=True)

    # ---- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> Dashboard:
        self.update()
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

        display(self.widget)

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
        while not self._stop.is_set():
            self._running.wait()
            if self._stop.is_set() or self.tunnel.closed or self._widget_closed():
                break
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

    # ---- one refresh -----------------------------------------------------------------------------------
    def update(self) -> None:
        with self._lock:
            window = float(self.window.value)
            records = self.tunnel.history(window)
            self.latency_plot.value = png(latency_figure(records, window))
            self.throughput_plot.value = png(throughput_figure(records, window))
            snap = self.tunnel.stats()
            totals = snap["totals"]
            self.rx_bytes.value = int(totals["udp_rx_bytes"])
            self.tx_bytes.value = int(totals["udp_tx_bytes"])
            self.rx_packets.value = int(totals["wg_rx_packets"])
            self.tx_packets.value = int(totals["wg_tx_packets"])
            self.handshakes.value = int(totals["handshakes"])
            self.retransmits.value = int(totals["tcp_retransmits"])
            self.status.value = self._status_html(snap, records)
            self.connections.value = self._connections_html(snap)
            self.redraws += 1

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

    def _status_html(self, snap: dict[str, Any], records: list[dict[str, Any]]) -> str:
        peers = self.tunnel.peer_report()
        totals = snap["totals"]
        rows = []
        for peer in peers:
            age = peer["handshake_age"]
            rekey = peer["next_rekey_in"]
            where = f"{peer['endpoint_name']} ({peer['endpoint']})" if peer.get("endpoint_name") else peer["endpoint"]
            rows += [("peer", f"{peer['fingerprint']} at {where}"),
                     ("allowed ips", ", ".join(peer.get("allowed_ips") or []) or "-"),
                     ("last handshake", "never" if age is None else f"{age:.0f} s ago"),
                     ("peer traffic", f"in {human_bytes(peer['rx_bytes'])}, out {human_bytes(peer['tx_bytes'])}"),
                     ("next rekey", "-" if rekey is None else f"in {rekey:.0f} s")]
        rtt = snap.get("handshake_rtt")
        retrans_rate = records[-1]["retransmits_per_s"] if records else 0.0
        drops = totals["drops_by_reason"]
        shown_drops = ", ".join(f"{k}: {v}" for k, v in sorted(drops.items()) if v) or "none"
        rows += [("handshake RTT", "-" if rtt is None else f"{rtt * 1000:.2f} ms"),
                 ("traffic", f"in {human_bytes(totals['udp_rx_bytes'])} ({totals['wg_rx_packets']} packets), "
                             f"out {human_bytes(totals['udp_tx_bytes'])} ({totals['wg_tx_packets']} packets)"),
                 ("retransmissions", f"{totals['tcp_retransmits']} ({retrans_rate:.1f}/s now)"),
                 ("drops", shown_drops)]
        body = "".join(f"<tr><th style='text-align:left;padding-right:1em'>{html.escape(k)}</th>"
                       f"<td>{html.escape(str(v))}</td></tr>" for k, v in rows)
        return f"<table>{body}</table>"

    def _connections_html(self, snap: dict[str, Any]) -> str:
        conns = snap.get("tcp_connections") or []
        if not conns:
            return "<p>no TCP connections</p>"
        head = "<tr><th>remote</th><th>state</th><th>in</th><th>out</th><th>RTT</th><th>retransmits</th></tr>"
        rows = []
        for conn in conns[:50]:
            srtt = conn.get("srtt")
            rows.append(f"<tr><td>{html.escape(str(conn['remote']))}</td><td>{html.escape(str(conn['state']))}</td>"
                        f"<td>{human_bytes(conn.get('bytes_received', 0))}</td>"
                        f"<td>{human_bytes(conn.get('bytes_sent', 0))}</td>"
                        f"<td>{'-' if srtt is None else f'{srtt * 1000:.2f} ms'}</td>"
                        f"<td>{conn.get('retransmits', 0)}</td></tr>")
        more = f"<p>and {len(conns) - 50} more</p>" if len(conns) > 50 else ""
        return f"<table><caption>TCP connections</caption>{head}{''.join(rows)}</table>{more}"

    # ---- throughput test -------------------------------------------------------------------------------
    def _on_bench(self, _button: Any) -> None:
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
