"""The query timeline: where one `%%wgsql` statement's time went, stage by stage, and a verdict in words.

Only a tunnel in the same process as the query sees both the statement and its packets. The relay under a
session carries every byte (wgmagic.runtime.relay.SocketRelay: the forward's a libpq or SQLAlchemy driver talks
to, or, for PyMySQL, the one behind its `Tunnel.open_connection` socket); its `exchanges` record when
the latest request's last byte went up the tunnel and when its answer's first and last bytes came down
(time.monotonic() seconds), and the relay's inner TCP connection (wgmagic.netstack.tcp) has the path's
smoothed round-trip time (RFC 6298 SRTT) at that moment. The stages, in milliseconds, one after the other:

| stage | from .. to |
| --- | --- |
| dns_ms | the connection's name lookup through the tunnel (only for the statement that opened the session) |
| connect_ms | lookup done .. the forward's TCP connection through the tunnel established |
| tls_ms | TCP established .. the client's first record after the TLS 1.3 handshake's one round trip (TLS only) |
| auth_ms | .. the session ready (startup, authentication, the server's parameters) |
| send_ms | the statement's start .. its last byte out: client work and earlier exchanges (the bulk path's describe) |
| latency_ms | the part of the wait for the answer's first byte that is the path's round trip (rtt_ms) |
| server_ms | the rest of that wait: the server's time (last byte out .. first byte in, less the round trip) |
| transfer_ms | the answer's first byte in .. its last byte in (`bytes` of it, at `rate_mbit_s`) |
| decode_ms | the answer's last byte in .. the DataFrame ready (this machine's work) |
| total_ms | the sum as the cell saw it (the session's opening included when this statement paid for it) |

This module is pure: numbers in, numbers and words out (`QueryTimeline`, `verdict`, `explain`); the dialects
call `StatementClock` at stage boundaries and the notebook reads `recent()`.
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from wgmagic.runtime.relay import Exchanges, SocketRelay

STAGES = ("dns", "connect", "tls", "auth", "send", "latency", "server", "transfer", "decode")
VERDICTS = ("database", "network", "transfer", "this machine")
KEPT = 200  # statements remembered by recent()
STATEMENT_WIDTH = 60  # characters of a statement shown


@dataclass
class OpeningStages:
    """The session's opening (milliseconds), recorded by SqlConnection.ensure and charged to the next statement."""

    dns_ms: float = 0.0
    connect_ms: float = 0.0
    tls_ms: float = 0.0
    auth_ms: float = 0.0

    @property
    def total_ms(self) -> float:
        return self.dns_ms + self.connect_ms + self.tls_ms + self.auth_ms


@dataclass
class QueryTimeline:
    """One statement's stages in milliseconds (see the module's table); None where nothing measured it (a
    session without a forward: no tunnel, or a local dialect)."""

    statement: str
    rows: int | None = None
    bytes: int | None = None
    dns_ms: float = 0.0
    connect_ms: float = 0.0
    tls_ms: float = 0.0
    auth_ms: float = 0.0
    send_ms: float | None = None
    latency_ms: float | None = None
    server_ms: float | None = None
    transfer_ms: float | None = None
    decode_ms: float | None = None
    total_ms: float = 0.0
    rtt_ms: float | None = None
    exchanges: int = 1  # request/answer turns the statement took
    alias: str = ""
    finished_at: float = field(default_factory=time.time)  # wall clock, for "4 s ago"

    def stages(self) -> dict[str, float]:
        """Stage name -> milliseconds (0.0 where unmeasured), in STAGES order."""
        return {name: float(getattr(self, f"{name}_ms") or 0.0) for name in STAGES}

    @property
    def rate_mbit_s(self) -> float | None:
        """The answer's rate over its transfer, in Mbit/s (None without a transfer long enough to time)."""
        if not self.bytes or not self.transfer_ms or self.transfer_ms <= 0:
            return None
        return self.bytes * 8 / (self.transfer_ms / 1000) / 1e6

    @property
    def verdict(self) -> str:
        return verdict(self)

    def row(self) -> dict[str, Any]:
        """The row `%wg queries` shows."""
        values = asdict(self)
        values.pop("finished_at")
        values["verdict"] = verdict(self)
        values["rate_mbit_s"] = self.rate_mbit_s
        return values


def shares(timeline: QueryTimeline) -> dict[str, float]:
    """Milliseconds charged to each verdict: database = server time; network = the session's opening, the
    answer's wait for the round trip and earlier round trips of the statement; transfer = first to last byte
    of the answer; this machine = decoding and the statement's own client work."""
    t = timeline
    rtt = t.rtt_ms or 0.0
    send = t.send_ms or 0.0
    earlier = min(send, max(0, t.exchanges - 1) * rtt)  # the earlier exchanges' round trips
    return {
        "database": t.server_ms or 0.0,
        "network": t.dns_ms + t.connect_ms + t.tls_ms + t.auth_ms + (t.latency_ms or 0.0) + earlier,
        "transfer": t.transfer_ms or 0.0,
        "this machine": (t.decode_ms or 0.0) + (send - earlier),
    }


def verdict(timeline: QueryTimeline) -> str:
    """Where the statement's time went, in one word of VERDICTS: the largest share (see `shares`); "unknown"
    when nothing was measured (no forward under the session)."""
    if timeline.server_ms is None and timeline.decode_ms is None:
        return "unknown"
    parts = shares(timeline)
    return max(VERDICTS, key=lambda name: parts[name])


def explain(timeline: QueryTimeline) -> str:
    """The one line `%%wgsql --timing` prints: the verdict and the figures behind it."""
    t = timeline
    kind = verdict(t)
    if kind == "unknown":
        return f"timing: {ms(t.total_ms)} in all (no tunnel under this session: the stages are not measured)"
    parts = shares(t)
    lead = {"database": "the database", "network": "the network", "transfer": "the transfer",
            "this machine": "this machine"}[kind]
    detail = {
        "database": f"the server worked {ms(t.server_ms)}",
        "network": f"round trips of {ms(t.rtt_ms)} and the session's opening took {ms(parts['network'])}",
        "transfer": f"{mib(t.bytes)} came in {ms(t.transfer_ms)}"
                    + (f" ({t.rate_mbit_s:.1f} Mbit/s)" if t.rate_mbit_s else ""),
        "this machine": f"decoding and client work took {ms(parts['this machine'])}",
    }[kind]
    return (f"timing: {ms(t.total_ms)}, mostly {lead}: {detail} (server {ms(t.server_ms)}, round trip "
            f"{ms(t.rtt_ms)}, transfer {ms(t.transfer_ms)}, decode {ms(t.decode_ms)})")


def ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f} ms" if value >= 10 else f"{value:.1f} ms"


def mib(value: int | None) -> str:
    if not value:
        return "0 B"
    if value < 1024:
        return f"{value} B"
    if value < 1024 * 1024:
        return f"{value / 1024:.1f} KiB"
    return f"{value / 1024 / 1024:.1f} MiB"


_PASSWORD_LITERAL = re.compile(r"(\bpassword\s*(?:=\s*)?)('(?:[^']|'')*'|\"(?:[^\"]|\"\")*\")", re.IGNORECASE)


def shown_statement(sql: str, width: int = STATEMENT_WIDTH) -> str:
    """A statement as tables show it: secrets masked (wgmagic.connstr.mask_all_secrets and PASSWORD '...'
    literals), whitespace folded, cut to `width` characters with an ellipsis."""
    from wgmagic.connstr import mask_all_secrets

    text = mask_all_secrets(_PASSWORD_LITERAL.sub(lambda m: m.group(1) + "'***'", sql))
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 1] + "…"


# ---- the recorder ------------------------------------------------------------------------------------------

_RECENT: deque[QueryTimeline] = deque(maxlen=KEPT)
_LOCK = threading.Lock()


_COUNT = [0]


def record(timeline: QueryTimeline) -> None:
    with _LOCK:
        _RECENT.append(timeline)
        _COUNT[0] += 1


def recorded() -> int:
    """How many timelines were ever recorded (a cell compares it before and after to find its own)."""
    return _COUNT[0]


def recent(last: int | None = None) -> list[QueryTimeline]:
    """The latest statements' timelines, oldest first (at most KEPT; `last`: only that many)."""
    with _LOCK:
        items = list(_RECENT)
    return items[-last:] if last else items


def clear() -> None:
    with _LOCK:
        _RECENT.clear()


def opening_stages(started: float, resolved: float | None, exchanges: Exchanges | None, ready: float, *,
                   tls: bool) -> OpeningStages:
    """The opening's stages from its marks (time.monotonic() seconds): `started` (ensure() began), `resolved`
    (the name lookup done; None: no lookup), the forward relay's `exchanges` (None: no forward) and `ready`."""
    resolved = started if resolved is None else resolved
    stages = OpeningStages(dns_ms=(resolved - started) * 1000)
    if exchanges is None:
        stages.auth_ms = max(0.0, ready - resolved) * 1000
        return stages
    established = min(max(exchanges.opened, resolved), ready)
    stages.connect_ms = (established - resolved) * 1000
    tls_done = established
    if tls and len(exchanges.starts) >= 3:  # 1: the TLS request, 2: ClientHello, 3: Finished and the startup
        tls_done = min(max(exchanges.starts[2], established), ready)
    stages.tls_ms = (tls_done - established) * 1000
    stages.auth_ms = (ready - tls_done) * 1000
    return stages


class StatementClock:
    """Times one statement on a session: `start()` before the driver is called, `stop(rows)` after the
    DataFrame is ready (records the timeline; returns it). `relay` is the forward's SocketRelay (None: no
    forward); `opening` the session's opening stages if this statement pays for them."""

    def __init__(self, sql: str, alias: str, relay: SocketRelay | None, opening: OpeningStages | None = None
                 ) -> None:
        self.sql = sql
        self.alias = alias
        self.relay = relay
        self.opening = opening
        self.started = 0.0
        self.count0 = 0
        self.bytes0 = 0

    def start(self) -> StatementClock:
        relay = self.relay
        if relay is not None:
            self.count0 = relay.exchanges.count
            self.bytes0 = relay.bytes_down
        self.started = time.monotonic()
        return self

    def stop(self, rows: int | None) -> QueryTimeline:
        ended = time.monotonic()
        timeline = build(self.sql, self.alias, self.started, ended, rows, self.relay, self.count0, self.bytes0,
                         self.opening)
        record(timeline)
        return timeline


def build(sql: str, alias: str, started: float, ended: float, rows: int | None, relay: SocketRelay | None,
          count0: int, bytes0: int, opening: OpeningStages | None) -> QueryTimeline:
    """A statement's timeline from its marks (see StatementClock)."""
    opened = opening or OpeningStages()
    t = QueryTimeline(shown_statement(sql), rows=rows, alias=alias, dns_ms=opened.dns_ms,
                      connect_ms=opened.connect_ms, tls_ms=opened.tls_ms, auth_ms=opened.auth_ms)
    statement_ms = (ended - started) * 1000
    t.total_ms = opened.total_ms + statement_ms
    if relay is None:
        return t  # no relay under the session: nothing measured the stages
    ex = relay.exchanges
    if ex.count == count0 or ex.last_up is None or ex.first_down is None or ex.last_up < started:
        t.decode_ms = statement_ms  # nothing crossed the tunnel: all of it was here
        return t
    rtt = relay_rtt(relay)
    t.rtt_ms = None if rtt is None else rtt * 1000
    t.exchanges = ex.count - count0
    t.bytes = relay.bytes_down - bytes0
    last_up = min(max(ex.last_up, started), ended)
    first_down = min(max(ex.first_down, last_up), ended)
    last_down = min(max(ex.last_down or first_down, first_down), ended)
    wait = (first_down - last_up) * 1000
    t.send_ms = (last_up - started) * 1000
    t.latency_ms = min(wait, t.rtt_ms or 0.0)
    t.server_ms = wait - t.latency_ms
    t.transfer_ms = (last_down - first_down) * 1000
    t.decode_ms = (ended - last_down) * 1000
    return t


def relay_rtt(relay: SocketRelay) -> float | None:
    """The relay's inner TCP connection's SRTT now (seconds; its minimum RTT before a smoothed one exists)."""
    conn = getattr(relay, "conn", None)
    estimator = getattr(conn, "rtt", None)
    if estimator is None:
        return None
    srtt: float | None = estimator.srtt
    return srtt if srtt is not None else estimator.min_rtt


def frame(timelines: Iterable[QueryTimeline]) -> pd.DataFrame:
    """`%wg queries`' table: one row per statement, newest last, with COLUMNS."""
    import pandas as pd

    rows = [t.row() for t in timelines]
    return pd.DataFrame(rows, columns=list(COLUMNS))


COLUMNS = ("statement", "rows", "bytes", "dns_ms", "connect_ms", "tls_ms", "auth_ms", "send_ms", "latency_ms",
           "server_ms", "transfer_ms", "decode_ms", "total_ms", "rtt_ms", "rate_mbit_s", "exchanges", "verdict",
           "alias")
