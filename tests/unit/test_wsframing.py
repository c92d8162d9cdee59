"""The WebSocket framings (wgmagic/runtime/wsframing.py): binary (a `wgmagic relay`) and Fly.io's, both ends,
fed bytes in every split (issue 23 item 1)."""

from __future__ import annotations

import itertools
import struct
from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from wgmagic.proto.flyframe import KEEPALIVE, MAGIC
from wgmagic.runtime.wsframing import (
    FLY_MESSAGE_TARGET,
    FRAMINGS,
    OP_BINARY,
    OP_CONTINUATION,
    OP_TEXT,
    BinaryFraming,
    FlyFraming,
    framing_class,
)
from wgmagic.via import FRAMINGS as VIA_FRAMINGS

datagrams_st = st.lists(st.binary(min_size=1, max_size=3000), max_size=30)


def test_the_registry_and_via_know_the_same_framings() -> None:
    assert set(FRAMINGS) == set(VIA_FRAMINGS)
    assert framing_class("fly") is FlyFraming and framing_class("binary") is BinaryFraming


def test_unknown_framing_is_named() -> None:
    try:
        framing_class("morse")
    except ValueError as exc:
        assert "morse" in str(exc) and "fly" in str(exc)
    else:
        raise AssertionError("no error")


def test_binary_framing_one_datagram_per_binary_message() -> None:
    counters: Counter[str] = Counter()
    framing = BinaryFraming(counters, "ws_rx_")
    assert framing.start() == [] and framing.keepalive() is None and framing.keepalive_after is None
    assert framing.encode([b"a", b"bc"]) == [b"a", b"bc"] and not framing.text
    assert framing.decode(OP_BINARY, b"x", True) == [b"x"]
    assert framing.decode(OP_TEXT, b"x", True) == []
    assert framing.decode(OP_BINARY, b"x", False) == []
    assert counters["ws_rx_not_binary"] == 2 and framing.failed is None


def _split(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    return [stream[a:b] for a, b in itertools.pairwise(points)]


@given(datagrams_st, st.lists(st.integers(min_value=0), max_size=40), st.data())
def test_fly_client_to_server_in_any_split(datagrams: list[bytes], cuts: list[int], data: st.DataObject) -> None:
    client = FlyFraming(Counter())
    server_counters: Counter[str] = Counter()
    server = FlyFraming(server_counters, server=True)
    stream = b"".join(client.start() + client.encode(datagrams) + [client.keepalive() or b""])
    assert stream.startswith(MAGIC)
    got: list[bytes] = []
    for piece in _split(stream, cuts):
        opcode = data.draw(st.sampled_from([OP_TEXT, OP_BINARY, OP_CONTINUATION]))
        got += server.decode(opcode, piece, data.draw(st.booleans()))
    assert got == datagrams and server.failed is None
    assert server_counters["fly_keepalives"] == 1


@given(datagrams_st, st.lists(st.integers(min_value=0), max_size=40))
def test_fly_server_to_client_in_any_split(datagrams: list[bytes], cuts: list[int]) -> None:
    server = FlyFraming(Counter(), server=True)
    client = FlyFraming(Counter(), "ws_rx_")
    assert server.start() == []  # the magic goes one way only
    stream = b"".join(server.encode(datagrams))
    got: list[bytes] = []
    for piece in _split(stream, cuts):
        got += client.decode(OP_TEXT, piece, True)
    assert got == datagrams


def test_fly_messages_hold_whole_records_up_to_the_target() -> None:
    framing = FlyFraming(Counter())
    datagrams = [bytes([i]) * 1400 for i in range(40)]
    messages = framing.encode(datagrams)
    assert len(messages) > 1 and all(len(m) <= FLY_MESSAGE_TARGET for m in messages)
    assert b"".join(messages) == b"".join(struct.pack(">I", 1400) + d for d in datagrams)
    big = bytes(40000)
    assert framing.encode([big]) == [struct.pack(">I", 40000) + big]  # a record over the target goes alone


def test_fly_never_sends_what_would_read_as_a_keepalive_or_not_fit() -> None:
    counters: Counter[str] = Counter()
    framing = FlyFraming(counters, "ws_tx_")
    assert framing.encode([b"", bytes(70000), b"x"]) == [b"\x00\x00\x00\x01x"]
    assert counters["ws_tx_fly_not_sendable"] == 2
    assert framing.keepalive() == KEEPALIVE and framing.keepalive_after == 1.0 and framing.text


def test_fly_server_refuses_a_wrong_magic_and_counts_it() -> None:
    counters: Counter[str] = Counter()
    server = FlyFraming(counters, server=True)
    assert server.decode(OP_TEXT, b"\x2f\xac", True) == []  # a prefix of the magic: wait for more
    assert server.failed is None
    assert server.decode(OP_TEXT, b"\x00\x00", True) == []
    assert server.failed == "fly_bad_magic" and counters["fly_bad_magic"] == 1
    assert server.decode(OP_TEXT, MAGIC + b"\x00\x00\x00\x01x", True) == []  # stays failed
    assert counters["fly_bad_magic"] == 1


def test_fly_client_refuses_a_record_too_long() -> None:
    counters: Counter[str] = Counter()
    client = FlyFraming(counters, "ws_rx_")
    got = client.decode(OP_TEXT, b"\x00\x00\x00\x01a" + struct.pack(">I", 70000) + b"zz", True)
    assert got == [b"a"] and client.failed == "fly_record_too_long"
    assert counters["ws_rx_fly_record_too_long"] == 1


@given(st.lists(st.binary(max_size=300), max_size=20), st.booleans())
def test_fly_decoder_never_raises_on_garbage(pieces: list[bytes], server: bool) -> None:
    framing = FlyFraming(Counter(), server=server)
    for piece in pieces:
        for datagram in framing.decode(OP_TEXT, piece, True):
            assert 0 < len(datagram) <= 65535
    assert framing.decoder.buffered <= 65535 + 4
