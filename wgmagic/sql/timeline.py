"""The query timeline: where one `%%wgsql` statement's time went, stage by stage, and a verdict in words.

Only a tunnel in the same process as the query sees both the statement and its packets. The relay under a
session carries every byte (wgmagic.runtime.relay.SocketRelay: the forward's a libpq or SQLAlchemy driver talks
to, or, for PyMySQL, the one behind its `Tunnel.open_connection` socket); its `exchanges` record when
the latest request's last byte went up the tunnel and when its answer's first and last bytes came down
(time.monotonic() seconds), and the relay's inner TCP connection (wgmagic.netstack.tcp) has the path's
smoothed round-trip time (RFC 6298 SRTT) at that moment. The stages, in milliseconds, one after the other; they
add up to `total_ms`. The first three and the opening's four only for the statement charged with them (a cell's
first statement; the one after the session opened). The last column is the verdict's share each goes to:

| stage | from .. to | share |
| --- | --- | --- |
| import_ms | the part of the cell's wait for the prefetch (notebook/prefetch.py) that its own  | this machine |
|           | records say it spent importing (the driver, pandas)                               |              |
| wait_ms | the rest of that wait, beyond the prefetch's records (its thread's start, waking) | this machine |
| client_ms | the cell's other work before the statement: arguments, finding the connection, | this machine |
|           | the opening's own steps (dropping the old session, the local forward's listener) |              |
| dns_ms | the name lookup through the tunnel, alone (the opening's Tunnel.resolve_addresses) | network |
| connect_ms | the local forward made .. its TCP connection through the tunnel established: | network |
|            | one round trip (the SYN's, rtt_ms); the rest (the forward's accept, waits) | this machine |
| tls_ms | TCP established .. the client's first record after the TLS 1.3 handshake (TLS only) | split, below |
| auth_ms | .. the session ready (startup, authentication, the server's parameters) | split, below |
| send_ms | the statement's start .. its last byte out: client work and earlier exchanges | this machine |
|         | (the bulk path's describe); the earlier exchanges' round trips (rtt_ms each)  | network |
| latency_ms | the part of the wait for the answer's first byte that is the round trip (rtt_ms) | network |
| server_ms | the rest of that wait: the server's time (last byte out .. first byte in) | database |
| transfer_ms | the answer's first byte in .. its last (`bytes` of it, at `rate_mbit_s`) | transfer |
| decode_ms | the answer's last byte in .. the DataFrame ready (this machine's work) | this machine |
| total_ms | the sum: the cell's time from its start for its first statement, else the statement's | |
|          | own and the opening it paid for                                                     | |

TLS and authentication (`setup` = tls_ms + auth_ms) are split by what spent them, each part measured:

| part | measured as | share |
| --- | --- | --- |
| auth_cpu_ms | the connecting thread's CPU time (time.thread_time, CLOCK_THREAD_CPUTIME_ID) over | this machine |
|             | the driver's connect call, which runs the whole protocol in that thread: libpq's |              |
|             | SCRAM-SHA-256 PBKDF2 iterations and TLS handshake, the driver's own code (with   |              |
|             | TLS the handshake's client CPU is in it too: one call does both); at most setup  |              |
| setup_round_trips | the driver's request/answer turns the forward relay counted in the opening, | network |
|                   | each costing the path's round trip: setup_round_trips x rtt_ms (at most     |         |
|                   | what CPU and server leave)                                                  |         |
| auth_server_ms | the last turn's wait for its answer beyond the round trip (the server checks | database |
|                | the proof and loads the session)                                             |          |
| the rest | what the thread's CPU clock does not count and no turn explains: waits for this | this machine |
|          | machine's scheduler and interpreter lock (a prefetch importing pandas meanwhile) |              |
|          | and the server's work in the earlier turns (its TLS handshake), no mark tells apart |            |

Without an RTT the setup's rest (and all of connect_ms) is the network's, as nothing tells them apart. Thread
CPU time, not the wall time of the opening less round trips, is this machine's CPU: a wait on a busy machine is
no CPU; round trips times the RTT, not the wall time, is the network's; a wait that is neither (the loop thread
or the driver waiting for the interpreter lock while the prefetch imports) is this machine's. The RTT is the
tunnel's TCP's own measure, which holds this machine's delay in handling the answer: on a busy machine it grows.

This module is pure: numbers in, numbers and words out (`QueryTimeline`, `verdict`, `explain`, `opening_stages`,
`prefetch_charge`, `build`); the dialects call `StatementClock` at stage boundaries, the notebook hands a cell's
`LeadIn` to its connection and reads `recent()`.
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

STAGES = ("import", "wait", "client", "dns", "connect", "tls", "auth", "send", "latency", "server", "transfer",
          "decode")
VERDICTS = ("database", "network", "transfer", "this machine")
KEPT = 200  # statements remembered by recent()
STATEMENT_WIDTH = 60  # characters of a statement shown


@dataclass
class OpeningStages:
    """The session's opening (milliseconds; see the module's tables), recorded by SqlConnection.ensure and charged
    to the next statement; `started`/`ready` are its ends (time.monotonic() seconds)."""

    client_ms: float = 0.0
    dns_ms: float = 0.0
    connect_ms: float = 0.0
    tls_ms: float = 0.0
    auth_ms: float = 0.0
    auth_cpu_ms: float = 0.0
    auth_server_ms: float = 0.0
    setup_round_trips: int = 0
    started: float = 0.0
    ready: float = 0.0

    @property
    def total_ms(self) -> float:
        return self.client_ms + self.dns_ms + self.connect_ms + self.tls_ms + self.auth_ms


@dataclass
class LeadIn:
    """A `%%wgsql` cell's time before its first statement, charged to that statement: `started` (the cell's
    start, time.monotonic() seconds) and the milliseconds it waited for the prefetch (see `prefetch_charge`)."""

    started: float
    import_ms: float = 0.0
    wait_ms: float = 0.0


@dataclass
class QueryTimeline:
    """One statement's stages in milliseconds (see the module's tables); None where nothing measured it (a
    session without a forward: no tunnel, or a local dialect)."""

    statement: str
    rows: int | None = None
    bytes: int | None = None
    import_ms: float = 0.0
    wait_ms: float = 0.0
    client_ms: float = 0.0
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
    auth_cpu_ms: float = 0.0  # this machine's CPU in tls_ms + auth_ms
    auth_server_ms: float = 0.0  # the server's part of them (the last turn's wait beyond the round trip)
    setup_round_trips: int = 0  # the driver's request/answer turns in tls_ms + auth_ms
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


def setup_split(timeline: QueryTimeline) -> dict[str, float]:
    """tls_ms + auth_ms split by what spent them (the module's second table): milliseconds of "cpu" (this
    machine's CPU), "network" (round trips x RTT), "server" (the last turn's server time) and "rest"."""
    t = timeline
    setup = t.tls_ms + t.auth_ms
    cpu = min(max(t.auth_cpu_ms, 0.0), setup)
    server = min(max(t.auth_server_ms, 0.0), setup - cpu)
    left = setup - cpu - server
    network = left if t.rtt_ms is None else min(left, t.setup_round_trips * t.rtt_ms)
    return {"cpu": cpu, "network": network, "server": server, "rest": left - network}


def shares(timeline: QueryTimeline) -> dict[str, float]:
    """Milliseconds charged to each verdict (the module's tables' last column); they add up to the stages' sum.
    database = server time (the statement's and the opening's last turn); network = the name lookup, the TCP
    connect's round trip, the opening's round trips, the answer's wait for the round trip and the statement's
    earlier round trips; transfer = first to last byte of the answer; this machine = the prefetch's imports and
    the wait for it, the cell's and the statement's own client work, the opening's CPU and unexplained waits
    (the rest of the TCP connect and of the login), decoding."""
    t = timeline
    rtt = t.rtt_ms or 0.0
    send = t.send_ms or 0.0
    earlier = min(send, max(0, t.exchanges - 1) * rtt)  # the earlier exchanges' round trips
    setup = setup_split(t)
    connect = t.connect_ms if t.rtt_ms is None else min(t.connect_ms, t.rtt_ms)  # the SYN's round trip
    return {
        "database": (t.server_ms or 0.0) + setup["server"],
        "network": t.dns_ms + connect + setup["network"] + (t.latency_ms or 0.0) + earlier,
        "transfer": t.transfer_ms or 0.0,
        "this machine": t.import_ms + t.wait_ms + t.client_ms + (t.connect_ms - connect) + setup["cpu"]
                        + setup["rest"] + (t.decode_ms or 0.0) + (send - earlier),
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
    setup = setup_split(t)
    turns = max(0, t.exchanges - 1) + (1 if t.latency_ms else 0) + (t.setup_round_trips if t.auth_ms else 0) \
        + (1 if t.connect_ms else 0)
    decode = t.decode_ms or 0.0
    connect = t.connect_ms if t.rtt_ms is None else min(t.connect_ms, t.rtt_ms)
    waits = setup["rest"] + t.connect_ms - connect
    client = parts["this machine"] - t.import_ms - setup["cpu"] - waits - decode
    machine = [(t.import_ms, "imports"), (client, "client work"), (setup["cpu"], "the login's CPU"),
               (waits, "the opening's waits"), (decode, "decoding")]
    detail = {
        "database": f"the server worked {ms(parts['database'])}",
        # what the round trips took, each on average (the smoothed RTT can be above a wait it is capped to)
        "network": f"{turns} round trip{'' if turns == 1 else 's'}"
                   + (f" of {ms((parts['network'] - t.dns_ms) / turns)}" if turns else "")
                   + (f", the name lookup {ms(t.dns_ms)}" if t.dns_ms else "") + f": {ms(parts['network'])}",
        "transfer": f"{mib(t.bytes)} came in {ms(t.transfer_ms)}"
                    + (f" ({t.rate_mbit_s:.1f} Mbit/s)" if t.rate_mbit_s else ""),
        "this machine": (", ".join(f"{name} {ms(value)}" for value, name in sorted(machine, reverse=True)
                                   if value >= 0.05) or "its work") + f": {ms(parts['this machine'])}",
    }[kind]
    return (f"timing: {ms(t.total_ms)}, mostly {lead}: {detail} (server {ms(t.server_ms)}, round trip "
            f"{ms(t.rtt_ms)}, transfer {ms(t.transfer_ms)}, decode {ms(t.decode_ms)}"
            + (f", login CPU {ms(setup['cpu'])}" if t.auth_ms else "") + ")")


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
                   tls: bool, looked_up: float | None = None, forwarded: float | None = None, cpu: float = 0.0,
                   rtt: float | None = None) -> OpeningStages:
    """The opening's stages from its marks (time.monotonic() seconds): `started` (ensure() began), `looked_up`
    and `resolved` (the name lookup's start and end; None: no lookup), `forwarded` (the local forward made;
    None: right after the lookup), the forward relay's `exchanges` (None: no forward) and `ready`; `cpu` is the
    connecting thread's CPU seconds over the driver's connect call, `rtt` the path's round trip (seconds)."""
    resolved = started if resolved is None else resolved
    looked_up = resolved if looked_up is None else min(max(looked_up, started), resolved)
    forwarded = resolved if forwarded is None else min(max(forwarded, resolved), ready)
    stages = OpeningStages(dns_ms=(resolved - looked_up) * 1000, started=started, ready=ready,
                           client_ms=((looked_up - started) + (forwarded - resolved)) * 1000)
    if exchanges is None:
        stages.auth_ms = max(0.0, ready - forwarded) * 1000
        stages.auth_cpu_ms = min(cpu * 1000, stages.auth_ms)
        return stages
    established = min(max(exchanges.opened, forwarded), ready)
    stages.connect_ms = (established - forwarded) * 1000
    tls_done = established
    if tls and len(exchanges.starts) >= 3:  # 1: the TLS request, 2: ClientHello, 3: Finished and the startup
        tls_done = min(max(exchanges.starts[2], established), ready)
    stages.tls_ms = (tls_done - established) * 1000
    stages.auth_ms = (ready - tls_done) * 1000
    stages.auth_cpu_ms = min(cpu * 1000, stages.tls_ms + stages.auth_ms)
    stages.setup_round_trips = exchanges.count
    if exchanges.last_up is not None and exchanges.first_down is not None and rtt is not None:
        last_wait = min(exchanges.first_down, ready) - max(exchanges.last_up, tls_done)
        stages.auth_server_ms = max(0.0, last_wait - rtt) * 1000  # the last turn, less its round trip
    return stages


def prefetch_charge(waits: Iterable[tuple[float, float]], stages: Iterable[tuple[str, float, float]]
                    ) -> dict[str, float]:
    """What a cell's waits for the prefetch spent, in milliseconds: `waits` are the cell's (start, end) waits,
    `stages` the prefetch's own records (stage name, start, end), all time.monotonic() seconds. Each wait is
    charged to the stages it overlapped, by their names; what no stage covers is "wait". The values add up to
    the waits' length (overlapping waits counted once each)."""
    stages = list(stages)
    charged: dict[str, float] = {}
    for w0, w1 in waits:
        w1 = max(w0, w1)
        covered = 0.0
        for name, s0, s1 in stages:
            overlap = max(0.0, min(w1, s1) - max(w0, s0))
            if overlap > 0:
                charged[name] = charged.get(name, 0.0) + overlap * 1000
                covered += overlap
        charged["wait"] = charged.get("wait", 0.0) + max(0.0, (w1 - w0) - covered) * 1000
    return charged


class StatementClock:
    """Times one statement on a session: `start()` before the driver is called, `stop(rows)` after the
    DataFrame is ready (records the timeline; returns it). `relay` is the forward's SocketRelay (None: no
    forward); `opening` the session's opening stages and `lead` the cell's time before it, if this statement
    pays for them."""

    def __init__(self, sql: str, alias: str, relay: SocketRelay | None, opening: OpeningStages | None = None,
                 lead: LeadIn | None = None) -> None:
        self.sql = sql
        self.alias = alias
        self.relay = relay
        self.opening = opening
        self.lead = lead
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
                         self.opening, self.lead)
        record(timeline)
        return timeline


def build(sql: str, alias: str, started: float, ended: float, rows: int | None, relay: SocketRelay | None,
          count0: int, bytes0: int, opening: OpeningStages | None, lead: LeadIn | None = None) -> QueryTimeline:
    """A statement's timeline from its marks (see StatementClock); total_ms is its stages' sum."""
    opened = opening or OpeningStages()
    t = QueryTimeline(shown_statement(sql), rows=rows, alias=alias, client_ms=opened.client_ms,
                      dns_ms=opened.dns_ms, connect_ms=opened.connect_ms, tls_ms=opened.tls_ms,
                      auth_ms=opened.auth_ms, auth_cpu_ms=opened.auth_cpu_ms, auth_server_ms=opened.auth_server_ms,
                      setup_round_trips=opened.setup_round_trips)
    if lead is not None:
        before = max(0.0, started - lead.started) * 1000  # the cell's time before this statement
        inside = opened.total_ms if opening is not None and opened.ready > lead.started else 0.0
        t.import_ms, t.wait_ms = lead.import_ms, lead.wait_ms
        t.client_ms += max(0.0, before - lead.import_ms - lead.wait_ms - inside)
    statement_ms = (ended - started) * 1000
    t.total_ms = sum(t.stages().values()) + statement_ms
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


COLUMNS = ("statement", "rows", "bytes", "import_ms", "wait_ms", "client_ms", "dns_ms", "connect_ms", "tls_ms",
           "auth_ms", "send_ms", "latency_ms", "server_ms", "transfer_ms", "decode_ms", "total_ms", "rtt_ms",
           "auth_cpu_ms", "auth_server_ms", "setup_round_trips", "rate_mbit_s", "exchanges", "verdict", "alias")
