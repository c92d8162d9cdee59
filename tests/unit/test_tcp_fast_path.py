"""Differential tests of the TCP fast paths (issue 15): what they do must be exactly what the general path does.

- Header prediction (`TcpConnection._receive_predicted`): two connections built alike, one with the fast path
  switched off, take the same inputs (segments from the peer, user sends and reads, timers, pulls) and must
  end every step with the same state, field by field, and the same segments and events.
- Segment building (`wire.build_segment_from`, `wire.build_ts_segment`): the same bytes as the plain
  header + options + payload with the checksum computed over the whole (RFC 9293 3.1), for any input.
"""

from __future__ import annotations

import ipaddress
import random
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.unit.test_netstack_tcp import Link, open_pair
from wgmagic.netstack.tcp.config import TcpConfig
from wgmagic.netstack.tcp.connection import TcpConnection
from wgmagic.netstack.wire import tcp as wire
from wgmagic.netstack.wire.checksum import transport_checksum
from wgmagic.netstack.wire.tcp import ACK, FIN, HEADER, PSH, RST, SYN, URG

A = (ipaddress.ip_address("198.18.0.2"), 50000)
B = (ipaddress.ip_address("198.18.0.1"), 9000)
IRS = 7000
ALL = 10**9  # an ACK offset meaning SND.MAX (plus what exceeds it)
M32 = 0xFFFFFFFF
CONFIGS = {
    "timestamps+sack": TcpConfig(verify_checksums=True, recv_buffer=64 * 1024, send_buffer=64 * 1024),
    "plain": TcpConfig(verify_checksums=True, timestamps=False, sack=False, recv_buffer=64 * 1024,
                       send_buffer=64 * 1024),
}
_PARTS = ("rtt", "reassembly", "scoreboard", "recovery", "persist", "keepalive", "window_update", "cc",
          "user_timeout", "pmtu", "rx_pmtu")


def _fields(obj: Any) -> dict[str, Any]:
    names = list(getattr(obj, "__dict__", {}))
    for cls in type(obj).__mro__:
        names += [n for n in getattr(cls, "__slots__", ()) if n not in names]
    return {name: getattr(obj, name) for name in names if hasattr(obj, name)}


def snapshot(conn: TcpConnection) -> dict[str, Any]:
    """Every field of the connection and of the machines it is made of; events by type, errors by repr."""
    state: dict[str, Any] = {}
    for name, value in _fields(conn).items():
        if name in _PARTS:
            state[name] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in _fields(value).items()}
        elif name == "_events":
            state[name] = [type(event).__name__ for event in value]
        elif name == "error":
            state[name] = repr(value)
        elif name == "_receive_predicted":
            continue
        else:
            state[name] = value
    return state


def establish(config: TcpConfig) -> TcpConnection:
    conn = TcpConnection.connect(A, B, 1.0, options=config, rng=random.Random(7).randbytes, mss=1380)
    (syn,) = conn.segments_to_send(1.0)
    _, _, iss, _, offset, _, _, _, _ = HEADER.unpack_from(syn)
    syn_options = wire.parse_options(syn[20:(offset >> 4) * 4])
    assert syn_options is not None
    ts = (5000, syn_options.ts[0]) if syn_options.ts else None
    options = wire.build_options(mss=1380, wscale=7, sack_ok=config.sack, ts=ts)
    conn.receive_segment(memoryview(wire.build_segment(B[0].packed, A[0].packed, B[1], A[1], IRS, iss + 1,
                                                       SYN | ACK, 0xFFFF, options)), 1.02)
    conn.segments_to_send(1.02)
    conn.events()
    return conn


def peer_segment(conn: TcpConnection, op: tuple, now: float) -> memoryview:
    """A segment from the peer made from `op`, relative to the connection's state (so most are in order)."""
    _, dseq, dack, flags, window, size, option_kind, tsecr_back, sack_at = op
    seq = conn.rcv_nxt + dseq
    outstanding = conn.snd_max - conn.snd_una
    if dack >= ALL:  # everything sent, and a little beyond
        ack = conn.snd_max + dack - ALL
    else:
        ack = conn.snd_una + min(dack, outstanding + 2) if dack >= 0 else conn.snd_una + dack
    tsval = int(now * 1000) + 123
    tsecr = ((int(now * 1000) + conn.ts_offset - tsecr_back) & M32) if tsecr_back >= 0 else 0
    if option_kind == "ts":
        options = wire.build_options(ts=(tsval & M32, tsecr))
    elif option_kind == "ts+sack":
        left = conn.snd_una + sack_at
        options = wire.build_options(ts=(tsval & M32, tsecr), sack=((left & M32, (left + 1368) & M32),))
    elif option_kind == "sack":
        left = conn.snd_una + sack_at
        options = wire.build_options(sack=((left & M32, (left + 1368) & M32),))
    else:
        options = b""
    payload = bytes((seq + i) & 0xFF for i in range(size))
    return memoryview(wire.build_segment(B[0].packed, A[0].packed, B[1], A[1], seq, ack, flags, window, options,
                                         payload))


SEGMENT = st.tuples(
    st.just("segment"),
    st.sampled_from([0] * 12 + [-1368, -1, 1, 1368, 2736]),  # seq - RCV.NXT
    st.sampled_from([0] * 4 + [1368] * 4 + [ALL] * 2 + [1, 2736, ALL + 1, -1, -1368]),  # ack - SND.UNA
    st.sampled_from([ACK] * 10 + [ACK | PSH] * 4 + [ACK | FIN, ACK | RST, ACK | URG, ACK | SYN, 0, PSH]),
    st.sampled_from([512] * 6 + [0, 1, 0xFFFF, 300]),  # window field (our peer's shift is 7)
    st.sampled_from([0] * 4 + [1368] * 6 + [1, 700, 5000]),
    st.sampled_from(["ts"] * 6 + ["none", "ts+sack", "sack"]),
    st.sampled_from([5, 0, -1, 40]),  # how old the echoed TSval is (ms); -1: TSecr 0
    st.sampled_from([1368, 2736, 0, -5]),  # where a SACK block starts, from SND.UNA
)
OPERATION = st.one_of(
    SEGMENT, SEGMENT, SEGMENT, SEGMENT,
    st.tuples(st.just("send"), st.sampled_from([1, 1368, 5000, 40_000])),
    st.tuples(st.just("recv"), st.sampled_from([1, 1000, 1 << 20])),
    st.tuples(st.just("pull"), st.sampled_from([0.0, 0.001, 0.05])),
    st.tuples(st.just("timer"), st.sampled_from([0.01, 0.3, 1.5])),
    st.tuples(st.just("close"), st.just(0)),
)


def _apply(conn: TcpConnection, op: tuple, now: float) -> Any:
    kind = op[0]
    if kind == "segment":
        conn.receive_segment(peer_segment(conn, op, now), now)
        return None
    if kind == "send":
        try:
            return conn.send(bytes(op[1]))
        except OSError as exc:
            return repr(exc)
    if kind == "recv":
        return conn.recv(op[1])
    if kind == "pull":
        return conn.segments_to_send(now), [type(e).__name__ for e in conn.events()]
    if kind == "timer":
        deadline = conn.next_timer()
        if deadline is not None and deadline <= now:
            conn.handle_timer(now)
        return deadline
    conn.shutdown_write(now)
    return None


@pytest.mark.parametrize("config_name", sorted(CONFIGS))
@settings(max_examples=300, deadline=None)
@given(ops=st.lists(OPERATION, min_size=1, max_size=60))
@example(ops=[  # a zero window, persist probes backing off, then the window opens with an ACK of new data
    ("send", 40_000), ("pull", 0.0), ("segment", 0, 0, ACK, 0, 0, "ts", 5, 0), ("timer", 1.5), ("pull", 0.0),
    ("timer", 1.5), ("pull", 0.0), ("segment", 0, 1, ACK, 512, 0, "ts", 5, 0), ("pull", 0.0)])
@example(ops=[  # the send buffer full, then an ACK frees room (TcpWritable)
    ("send", 40_000), ("send", 40_000), ("pull", 0.0), ("segment", 0, 1368, ACK, 512, 0, "ts", 5, 0), ("pull", 0.0)])
@example(ops=[  # duplicate ACKs, then one of new data
    ("send", 40_000), ("pull", 0.0), ("segment", 0, 1368, ACK, 512, 0, "ts", 5, 0),
    ("segment", 0, 0, ACK, 512, 0, "ts", 5, 0), ("segment", 0, 0, ACK, 512, 0, "ts", 5, 0),
    ("segment", 0, 1368, ACK, 512, 0, "ts", 5, 0), ("pull", 0.0)])
@example(ops=[("send", 5000), ("pull", 0.0), ("segment", 0, ALL, ACK, 512, 0, "ts", 5, 0), ("pull", 0.0)])
@example(ops=[("send", 5000), ("pull", 0.0), ("segment", 0, ALL, ACK, 512, 0, "none", 5, 0), ("pull", 0.0)])
def test_header_prediction_leaves_the_same_state_as_the_general_path(config_name, ops):
    config = CONFIGS[config_name]
    fast, slow = establish(config), establish(config)
    slow._receive_predicted = lambda *args: False  # type: ignore[method-assign]
    assert snapshot(fast) == snapshot(slow)
    now = 1.02
    for op in ops:
        now += op[1] if op[0] in ("pull", "timer") else 0.0002
        if op[0] == "segment":  # both see the very same bytes (made from the fast one's state, equal to the other)
            segment = peer_segment(fast, op, now)
            fast.receive_segment(segment, now)
            slow.receive_segment(segment, now)
        else:
            assert _apply(fast, op, now) == _apply(slow, op, now), op
        assert snapshot(fast) == snapshot(slow), op
        assert fast.internal_errors == 0


class RecordingLink(Link):
    """test_netstack_tcp's lossy link, keeping every segment either side sent, in order."""

    def __init__(self, jitter: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.jitter = jitter  # seconds of random extra delay per segment (it reorders segments close together)
        self.sent: list[bytes] = []

    def carry(self, src: TcpConnection, dst: TcpConnection) -> None:
        for segment in src.segments_to_send(self.now):
            self.sent.append(segment)
            if self.rng.random() < self.loss:
                continue
            copies = 2 if self.rng.random() < self.duplicate else 1
            for _ in range(copies):
                extra = 0.02 if self.rng.random() < self.reorder else 0.0
                self.order += 1
                self.queue.append((self.now + self.delay + extra + self.rng.random() * self.jitter, self.order, dst,
                                   segment))


@pytest.mark.parametrize(("loss", "reorder", "duplicate", "jitter"),
                         [(0.0, 0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 0.001), (0.02, 0.05, 0.01, 0.001)])
def test_a_bulk_transfer_takes_the_fast_path_and_sends_exactly_what_the_general_path_sends(monkeypatch, loss, reorder,
                                                                                          duplicate, jitter):
    """A transfer one way then the other over a clean link, one that reorders a little, and a lossy one: every
    segment either side sends is the same with header prediction as without it; on the clean link most
    segments took it."""

    def run() -> list[bytes]:
        link = RecordingLink(jitter, loss=loss, reorder=reorder, duplicate=duplicate, seed=23)
        client, server = open_pair(link)
        data = random.Random(5).randbytes(600_000)
        back = random.Random(6).randbytes(300_000)
        sent_c = sent_s = 0
        got_c, got_s = bytearray(), bytearray()
        for _ in range(200_000):  # one way, then the other: data segments and pure ACKs, as a bulk transfer
            if sent_c < len(data):
                sent_c += client.send(memoryview(data)[sent_c:sent_c + 65536])
            elif len(got_s) == len(data) and sent_s < len(back):
                sent_s += server.send(memoryview(back)[sent_s:sent_s + 65536])
            got_s += server.recv(1 << 20)
            got_c += client.recv(1 << 20)
            if len(got_s) == len(data) and len(got_c) == len(back):
                break
            if not link.step((client, server)):
                break
        assert bytes(got_s) == data and bytes(got_c) == back
        return link.sent

    taken = 0
    original = TcpConnection._receive_predicted

    def counting(self: TcpConnection, *args: Any) -> bool:
        nonlocal taken
        result = original(self, *args)
        taken += result
        return result

    monkeypatch.setattr(TcpConnection, "_receive_predicted", counting)
    with_fast = run()
    assert taken > (len(with_fast) // 2 if not jitter else 0)
    monkeypatch.setattr(TcpConnection, "_receive_predicted", lambda self, *args: False)
    assert run() == with_fast


def _reference_segment(src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int, flags: int,
                       window: int, options: bytes, payload: bytes) -> bytes:
    header = HEADER.pack(sport, dport, seq & M32, ack & M32, ((20 + len(options)) // 4) << 4, flags,
                         min(window, 0xFFFF), 0, 0)
    segment = header + options + payload
    checksum = transport_checksum(src, dst, wire.PROTO_TCP, segment)
    return segment[:16] + checksum.to_bytes(2, "big") + segment[18:]


@settings(max_examples=500, deadline=None)
@given(v6=st.booleans(), addresses=st.binary(min_size=32, max_size=32), ports=st.tuples(st.integers(0, 65535),
       st.integers(0, 65535)), seq=st.integers(0, 2**33), ack=st.integers(0, 2**33), flags=st.integers(0, 255),
       window=st.integers(0, 1 << 20), options=st.binary(max_size=40), payload=st.binary(max_size=1500),
       ts=st.tuples(st.integers(0, M32), st.integers(0, M32)))
def test_segment_building_gives_the_bytes_of_the_plain_construction(v6, addresses, ports, seq, ack, flags, window,
                                                                   options, payload, ts):
    size = 16 if v6 else 4
    src, dst = addresses[:size], addresses[16:16 + size]
    expected = _reference_segment(src, dst, *ports, seq, ack, flags, window, options, payload)
    assert wire.build_segment(src, dst, *ports, seq, ack, flags, window, options, payload) == expected
    assert wire.build_segment(src, dst, *ports, seq, ack, flags, window, options, memoryview(payload)) == expected
    assert wire.checksum_ok(src, dst, expected)
    pseudo = wire.pseudo_sum(src, dst)
    with_ts = _reference_segment(src, dst, *ports, seq, ack, flags, window, wire.build_options(ts=ts), payload)
    assert wire.build_ts_segment(pseudo, *ports, seq, ack, flags, window, *ts, memoryview(payload)) == with_ts
