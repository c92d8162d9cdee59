"""What `%wg status` and `%wg connections` show: an HTML table in a notebook, text in a terminal.

Built from Tunnel.stats() and the SQL connections' descriptions, which hold no secrets by construction.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


def human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GiB"


class _Table:
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


@dataclass(repr=False)
class TunnelStatus(_Table):
    rows: list[dict[str, object]]
    title: str = "wgmagic tunnels"

    @classmethod
    def of(cls, tunnel: Any, connections: Iterable[Any] = ()) -> TunnelStatus:
        snap = tunnel.stats()
        totals = snap["totals"]
        age = snap.get("handshake_age")
        rtt = snap.get("handshake_rtt")
        endpoints = ", ".join(f"{p.endpoint[0]}:{p.endpoint[1]}" if p.endpoint else "(none)"
                              for p in tunnel.config.peers)
        sql = [c.alias for c in connections if getattr(c, "tunnel_name", None) == tunnel.name]
        return cls([{
            "tunnel": tunnel.name,
            "endpoint": endpoints,
            "handshake": "never" if age is None else f"{age:.0f} s ago",
            "handshake rtt": "-" if rtt is None else f"{rtt * 1000:.2f} ms",
            "received": human_bytes(totals["udp_rx_bytes"]),
            "sent": human_bytes(totals["udp_tx_bytes"]),
            "forwards": ", ".join(str(f.local_address) for f in tunnel.forwards) or "-",
            "tcp connections": totals["tcp_established"],
            "sql connections": ", ".join(sql) or "-",
            "drops": totals["drops"],
        }])

    @classmethod
    def many(cls, statuses: list[TunnelStatus]) -> TunnelStatus:
        return cls([row for status in statuses for row in status.rows])


@dataclass(repr=False)
class ConnectionsTable(_Table):
    rows: list[dict[str, object]]
    current: str | None = None
    title: str = "wgmagic SQL connections"

    def __post_init__(self) -> None:
        for row in self.rows:
            row["current"] = "*" if row.get("alias") == self.current else ""
