"""What `%wg status` and `%wg connections` show: an HTML table in a notebook, text in a terminal.

Built from Tunnel.stats(), Tunnel.peer_report() and Tunnel.history() (their shapes: wgmagic.runtime.report's
TunnelStats, PeerRow and HistorySample) and the SQL connections' descriptions, which hold no secrets by
construction. The tunnel's and each peer's health are wgmagic.runtime.health's words, the same the dashboard
and the doctor show.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from wgmagic.addresses import format_address
from wgmagic.runtime.health import STATUS_WINDOW, Verdict, peer_health, tunnel_health

if TYPE_CHECKING:
    from wgmagic.runtime.report import HistorySample, PeerRow, TcpConnectionStats, TunnelStats
    from wgmagic.runtime.services.forward import Forward
    from wgmagic.runtime.services.gateway import Gateway
    from wgmagic.runtime.services.udp_forward import UdpForward
    from wgmagic.runtime.tunnel import Tunnel
    from wgmagic.sql.dialect import SqlConnection


def human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GiB"


def history(tunnel: Tunnel, window: float | None) -> list[HistorySample]:
    """Tunnel.history(window): its samples, which wgmagic.runtime.metrics builds in report.HistorySample's shape
    (Tunnel.history is annotated as plain dicts)."""
    return cast("list[HistorySample]", tunnel.history(window))


def health_of(tunnel: Tunnel, window: float = STATUS_WINDOW) -> Verdict:
    """The tunnel's health now (wgmagic.runtime.health.tunnel_health over the last `window` seconds)."""
    return tunnel_health(tunnel.stats(), tunnel.peer_report(), history(tunnel, window), window)


def tunnel_status_line(tunnel: Tunnel) -> str:
    """One line for a live terminal status (`wgmagic up`): health, handshake age, bytes each way (the
    tunnel's datagrams, UDP or WebSocket), open connections."""
    snap = tunnel.stats()
    totals = snap["totals"]
    age = snap["handshake_age"]
    shown = "no handshake yet" if age is None else f"handshake {age:.0f}s ago"
    health = tunnel_health(snap, tunnel.peer_report(), history(tunnel, STATUS_WINDOW), STATUS_WINDOW)
    return (f"{tunnel.name}: {health.word} | {shown} | rx {human_bytes(totals['udp_rx_bytes'])} "
            f"tx {human_bytes(totals['udp_tx_bytes'])} | connections {snap['connections']}")


def tunnel_status_report(tunnel: Tunnel, handshake_seconds: float | None = None) -> str:
    """`wgmagic status`: health, peers (public key fingerprint, endpoint, AllowedIPs), handshake time and RTT,
    addresses and DNS servers. No secret: keys are shown by their public fingerprint only."""
    snap = tunnel.stats()
    peers = tunnel.peer_report()
    health = tunnel_health(snap, peers, history(tunnel, STATUS_WINDOW), STATUS_WINDOW)
    lines = [f"tunnel {tunnel.name}: {health}"]
    in_use = {row["fingerprint"]: row["endpoint"] for row in peers}
    for peer in tunnel.config.peers:
        where = format_address(peer.endpoint) if peer.endpoint else "(no endpoint)"
        now = in_use.get(peer.public_key_b64[:8] + "...")
        if now and peer.endpoint and now != where:
            where += f" ({now})"  # a name, and the address in use
        lines.append(f"  peer {peer.public_key_b64[:8]}... endpoint {where}")
        lines.append(f"    allowed ips: {', '.join(str(n) for n in peer.allowed_ips) or '(none)'}")
    if tunnel.via is not None:
        lines.append(f"  transport: {tunnel.transport_description}")
    if handshake_seconds is not None:
        lines.append(f"  handshake completed in {handshake_seconds * 1000:.1f} ms")
    rtt = snap["handshake_rtt"]
    if rtt is not None:
        lines.append(f"  handshake rtt {rtt * 1000:.2f} ms")
    lines.append(f"  addresses: {', '.join(str(a) for a in tunnel.config.interface.addresses)}")
    lines.append(f"  dns: {', '.join(str(a) for a in tunnel.config.interface.dns_servers) or '(none)'}")
    return "\n".join(lines)


def gateway_status_line(gateway: Gateway) -> str:
    """One line for `wgmagic gateway`'s live terminal status."""
    snap = gateway.stats()  # Tunnel.stats() with the gateway's own counters added
    tunnel = cast("TunnelStats", snap)
    totals = tunnel["totals"]
    peers = sum(1 for p in gateway.tunnel.peer_report() if p["handshake_age"] is not None)
    return (f"gateway :{gateway.listen_port} | peers with a session {peers} | connections {snap['open_relays']} "
            f"(accepted {gateway.accepted}) | rx {totals['udp_rx_bytes']:,} B tx {totals['udp_tx_bytes']:,} B | "
            f"cookie replies {tunnel['device']['cookie_replies_sent']}")


class Table:
    """Rows of plain values shown as a text table (repr) and an HTML table (Jupyter), with a title; every row
    has the first row's keys."""

    rows: list[dict[str, object]]
    title: str

    def __repr__(self) -> str:
        if not self.rows:
            return f"{self.title}: (none)"
        keys = list(self.rows[0])
        widths = {k: max(len(k), *(len(str(r[k])) for r in self.rows)) for k in keys}
        lines = [self.title, "  ".join(k.ljust(widths[k]) for k in keys)]
        lines += ["  ".join(str(r[k]).ljust(widths[k]) for k in keys) for r in self.rows]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        if not self.rows:
            return f"<p>{html.escape(self.title)}: (none)</p>"
        head = "".join(f"<th>{html.escape(k)}</th>" for k in self.rows[0])
        body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row.values()) + "</tr>"
                       for row in self.rows)
        return (f"<table><caption>{html.escape(self.title)}</caption><thead><tr>{head}</tr></thead>"
                f"<tbody>{body}</tbody></table>")


def peer_endpoint(peer: PeerRow) -> str:
    """A peer_report row's endpoint: the address in use, after the configured name when it is one
    ("db.example.com:51820 (203.0.113.7:51820)")."""
    name = peer["endpoint_name"]
    return f"{name} ({peer['endpoint']})" if name else peer["endpoint"]


def peer_rows(tunnel: Tunnel, peers: list[PeerRow]) -> list[dict[str, object]]:
    """One row per peer: key fingerprint, endpoint (name and address), AllowedIPs, handshake age, traffic and
    its health (wgmagic.runtime.health.peer_health)."""
    rows: list[dict[str, object]] = []
    for peer in peers:
        age = peer["handshake_age"]
        rows.append({
            "tunnel": tunnel.name,
            "peer": peer["fingerprint"],
            "endpoint": peer_endpoint(peer),
            "allowed ips": ", ".join(peer["allowed_ips"]) or "-",
            "handshake": "never" if age is None else f"{age:.0f} s ago",
            "received": human_bytes(float(peer["rx_bytes"])),
            "sent": human_bytes(float(peer["tx_bytes"])),
            "health": str(peer_health(peer)),
        })
    return rows


def tcp_mss_text(connections: list[TcpConnectionStats], limit: int = 8) -> str:
    """The MSS (bytes) each live connection settled on (Tunnel.stats()["tcp_connections"]), as
    "198.18.0.1:5432 1368", with a path-MTU black hole named (netstack/tcp/pmtu.py): "1276 (black hole;
    searching up to 1368)" when ours fell back, "in 1240 (black hole reported)" when the peer's were lowered."""
    parts = []
    for conn in connections[:limit]:
        text = f"{conn['remote']} {conn['mss']}"
        notes = []
        if conn["black_holes"]:
            if conn["pmtu"] == "searching":
                notes.append(f"black hole; probing up to {conn['mss_max']}")
            else:
                notes.append(f"black hole; settled, probes up to {conn['mss_max']} again in 10 min")
        if conn["too_big_sent"]:
            notes.append(f"in {conn['peer_mss']}: black hole reported")
        parts.append(text + (f" ({', '.join(notes)})" if notes else ""))
    if len(connections) > limit:
        parts.append(f"... {len(connections) - limit} more")
    return ", ".join(parts) or "-"


@dataclass(repr=False)
class _PeersTable(Table):
    rows: list[dict[str, object]]
    title: str = "peers"


@dataclass(repr=False)
class TunnelStatus(Table):
    """`%wg status`: one row per tunnel (endpoint, handshake age and RTT, bytes, forwards, connections) and,
    below, one per peer (`peers`); `of(tunnel, connections)` builds one, `many(statuses)` joins them."""

    rows: list[dict[str, object]]
    title: str = "wgmagic tunnels"
    peers: list[dict[str, object]] | None = None  # one row per peer (shown below the tunnels)

    def __repr__(self) -> str:
        text = super().__repr__()
        return text + ("\n\n" + repr(_PeersTable(self.peers)) if self.peers else "")

    def _repr_html_(self) -> str:
        text = super()._repr_html_()
        return text + (_PeersTable(self.peers)._repr_html_() if self.peers else "")

    @classmethod
    def of(cls, tunnel: Tunnel, connections: Iterable[SqlConnection] = ()) -> TunnelStatus:
        """The status of `tunnel` now; `connections`: the kernel's %%wgsql connections (those through this
        tunnel are named). Its health is judged over the last STATUS_WINDOW seconds."""
        snap = tunnel.stats()
        totals = snap["totals"]
        age = snap["handshake_age"]
        rtt = snap["handshake_rtt"]
        peers = tunnel.peer_report()
        health = tunnel_health(snap, peers, history(tunnel, STATUS_WINDOW), STATUS_WINDOW)
        endpoints = ", ".join(peer_endpoint(p) for p in peers)
        exposes = [e.describe() for e in tunnel.exposes]
        sql = [c.alias for c in connections if c.tunnel_name == tunnel.name]
        return cls([{
            "tunnel": tunnel.name,
            "health": str(health),
            "endpoint": endpoints,
            "transport": tunnel.transport_description,  # --via auto may move it mid-session
            "handshake": "never" if age is None else f"{age:.0f} s ago",
            "handshake rtt": "-" if rtt is None else f"{rtt * 1000:.2f} ms",
            "received": human_bytes(totals["udp_rx_bytes"]),
            "sent": human_bytes(totals["udp_tx_bytes"]),
            "forwards": ", ".join(f"{format_address(f.local_address)} -> {_forward_target(f)}"
                                  for f in tunnel.forwards) or "-",
            "socks5": ", ".join(format_address(s.address) for s in tunnel.socks_servers) or "-",
            "exposed": ", ".join(f"{e['listen']} -> {e['target']} ({e['accepted']} accepted, {e['refused']} "
                                 "refused)" for e in exposes) or "-",
            "tcp connections": totals["tcp_established"],
            "tcp mss": tcp_mss_text(snap["tcp_connections"]),
            "sql connections": ", ".join(sql) or "-",
            "drops": totals["drops"],
        }], peers=peer_rows(tunnel, peers))

    @classmethod
    def many(cls, statuses: list[TunnelStatus]) -> TunnelStatus:
        return cls([row for status in statuses for row in status.rows],
                   peers=[row for status in statuses for row in status.peers or []])


def _forward_target(forward: Forward | UdpForward) -> str:
    """A forward's remote end as host:port ("udp:" before a UDP forward's)."""
    from wgmagic.runtime.services.udp_forward import UdpForward

    if isinstance(forward, UdpForward):
        return forward.target  # "udp:host:port"
    return format_address((forward.spec.remote_host, forward.spec.remote_port))


@dataclass(repr=False)
class ConnectionsTable(Table):
    """`%wg connections`: one row per %%wgsql connection (its describe(): alias, masked DSN, tunnel, via, open,
    reconnects), the current one marked with `*`."""

    rows: list[dict[str, object]]
    current: str | None = None
    title: str = "wgmagic SQL connections"

    def __post_init__(self) -> None:
        for row in self.rows:
            row["current"] = "*" if row.get("alias") == self.current else ""
