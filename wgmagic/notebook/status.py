"""What `%wg status` and `%wg connections` show: an HTML table in a notebook, text in a terminal.

Built from Tunnel.stats() and the SQL connections' descriptions, which hold no secrets by construction.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from wgmagic.addresses import format_address


def human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GiB"


def tunnel_status_line(tunnel: Any) -> str:
    """One line for a live terminal status (`wgmagic up`): handshake age, bytes each way, open connections."""
    snap = tunnel.stats()
    counters = snap["counters"]
    age = snap.get("handshake_age")
    shown = "no handshake yet" if age is None else f"handshake {age:.0f}s ago"
    rx = counters.get("udp_rx_bytes", 0) + counters.get("ws_rx_bytes", 0)
    tx = counters.get("udp_tx_bytes", 0) + counters.get("ws_tx_bytes", 0)
    return (f"{tunnel.name}: {shown} | rx {human_bytes(rx)} "
            f"tx {human_bytes(tx)} | connections {snap['connections']}")


def tunnel_status_report(tunnel: Any, handshake_seconds: float | None = None) -> str:
    """`wgmagic status`: peers (public key fingerprint, endpoint, AllowedIPs), handshake time and RTT,
    addresses and DNS servers. No secret: keys are shown by their public fingerprint only."""
    snap = tunnel.stats()
    lines = [f"tunnel {tunnel.name}"]
    in_use = {row["fingerprint"]: row["endpoint"] for row in tunnel.peer_report()}
    for peer in tunnel.config.peers:
        where = format_address(peer.endpoint) if peer.endpoint else "(no endpoint)"
        now = in_use.get(peer.public_key_b64[:8] + "...")
        if now and peer.endpoint and now != where:
            where += f" ({now})"  # a name, and the address in use
        lines.append(f"  peer {peer.public_key_b64[:8]}... endpoint {where}")
        lines.append(f"    allowed ips: {', '.join(str(n) for n in peer.allowed_ips) or '(none)'}")
    if getattr(tunnel, "via", None) is not None:
        lines.append(f"  transport: {tunnel.transport_description}")
    if handshake_seconds is not None:
        lines.append(f"  handshake completed in {handshake_seconds * 1000:.1f} ms")
    rtt = snap.get("handshake_rtt")
    if rtt is not None:
        lines.append(f"  handshake rtt {rtt * 1000:.2f} ms")
    lines.append(f"  addresses: {', '.join(str(a) for a in tunnel.config.interface.addresses)}")
    lines.append(f"  dns: {', '.join(str(a) for a in tunnel.config.interface.dns_servers) or '(none)'}")
    return "\n".join(lines)


def gateway_status_line(gateway: Any) -> str:
    """One line for `wgmagic gateway`'s live terminal status."""
    snap = gateway.stats()
    totals = snap["totals"]
    peers = sum(1 for p in gateway.tunnel.peer_report() if p["handshake_age"] is not None)
    return (f"gateway :{gateway.listen_port} | peers with a session {peers} | connections {snap['open_relays']} "
            f"(accepted {gateway.accepted}) | rx {totals['udp_rx_bytes']:,} B tx {totals['udp_tx_bytes']:,} B | "
            f"cookie replies {snap['device'].get('cookie_replies_sent', 0)}")


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


def peer_endpoint(peer: dict[str, Any]) -> str:
    """A peer_report row's endpoint: the address in use, after the configured name when it is one
    ("db.example.com:51820 (203.0.113.7:51820)")."""
    name = peer.get("endpoint_name")
    return f"{name} ({peer['endpoint']})" if name else str(peer["endpoint"])


def peer_rows(tunnel: Any, peers: list[dict[str, Any]]) -> list[dict[str, object]]:
    """One row per peer: key fingerprint, endpoint (name and address), AllowedIPs, handshake age, traffic."""
    rows: list[dict[str, object]] = []
    for peer in peers:
        age = peer["handshake_age"]
        rows.append({
            "tunnel": tunnel.name,
            "peer": peer["fingerprint"],
            "endpoint": peer_endpoint(peer),
            "allowed ips": ", ".join(peer.get("allowed_ips") or []) or "-",
            "handshake": "never" if age is None else f"{age:.0f} s ago",
            "received": human_bytes(float(peer["rx_bytes"])),
            "sent": human_bytes(float(peer["tx_bytes"])),
            "state": peer_state(peer),
        })
    return rows


def tcp_mss_text(connections: list[dict[str, Any]], limit: int = 8) -> str:
    """The MSS (bytes) each live connection settled on (Tunnel.stats()["tcp_connections"]), as
    "198.18.0.1:5432 1368", with a path-MTU black hole named (netstack/tcp/pmtu.py): "1276 (black hole;
    searching up to 1368)" when ours fell back, "in 1240 (black hole reported)" when the peer's were lowered."""
    parts = []
    for conn in connections[:limit]:
        if "mss" not in conn:
            continue
        text = f"{conn['remote']} {conn['mss']}"
        notes = []
        if conn.get("black_holes"):
            if conn.get("pmtu") == "searching":
                notes.append(f"black hole; probing up to {conn.get('mss_max')}")
            else:
                notes.append(f"black hole; settled, probes up to {conn.get('mss_max')} again in 10 min")
        if conn.get("too_big_sent"):
            notes.append(f"in {conn.get('peer_mss')}: black hole reported")
        parts.append(text + (f" ({', '.join(notes)})" if notes else ""))
    if len(connections) > limit:
        parts.append(f"... {len(connections) - limit} more")
    return ", ".join(parts) or "-"


def peer_state(peer: dict[str, Any]) -> str:
    """A peer_report row in plain words: "not answering (...)" when traffic sent to it went unanswered past
    WireGuard's patience (Engine.peer_not_answering_since), else "answering" with a session, "no session"."""
    if peer.get("not_answering"):
        return "not answering (traffic sent, nothing back: down or unreachable?)"
    return "answering" if peer.get("has_session") else "no session (idle)"


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
    def of(cls, tunnel: Any, connections: Iterable[Any] = ()) -> TunnelStatus:
        snap = tunnel.stats()
        totals = snap["totals"]
        age = snap.get("handshake_age")
        rtt = snap.get("handshake_rtt")
        peers = tunnel.peer_report()
        endpoints = ", ".join(peer_endpoint(p) for p in peers)
        exposes = [e.describe() for e in getattr(tunnel, "exposes", [])]
        sql = [c.alias for c in connections if getattr(c, "tunnel_name", None) == tunnel.name]
        dead = [p for p in peers if p.get("not_answering")]
        handshake = "never" if age is None else f"{age:.0f} s ago"
        if dead:
            handshake += f" (peer {', '.join(str(p['fingerprint']) for p in dead)} not answering)"
        return cls([{
            "tunnel": tunnel.name,
            "endpoint": endpoints,
            "transport": getattr(tunnel, "transport_description", "UDP"),  # --via auto may move it mid-session
            "handshake": handshake,
            "handshake rtt": "-" if rtt is None else f"{rtt * 1000:.2f} ms",
            "received": human_bytes(totals["udp_rx_bytes"]),
            "sent": human_bytes(totals["udp_tx_bytes"]),
            "forwards": ", ".join(f"{format_address(f.local_address)} -> {_forward_target(f)}"
                                  for f in tunnel.forwards) or "-",
            "socks5": ", ".join(format_address(s.address) for s in getattr(tunnel, "socks_servers", [])) or "-",
            "exposed": ", ".join(f"{e['listen']} -> {e['target']} ({e['accepted']} accepted, {e['refused']} "
                                 "refused)" for e in exposes) or "-",
            "tcp connections": totals["tcp_established"],
            "tcp mss": tcp_mss_text(snap.get("tcp_connections") or []),
            "sql connections": ", ".join(sql) or "-",
            "drops": totals["drops"],
        }], peers=peer_rows(tunnel, peers))

    @classmethod
    def many(cls, statuses: list[TunnelStatus]) -> TunnelStatus:
        return cls([row for status in statuses for row in status.rows],
                   peers=[row for status in statuses for row in status.peers or []])


def _forward_target(forward: Any) -> str:
    """A forward's remote end as host:port ("udp:" before a UDP forward's)."""
    if isinstance(getattr(type(forward), "target", None), property):  # a UdpForward: "udp:host:port"
        return str(forward.target)
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
