"""The Fly.io WebSocket framing (issue 23 item 1), with bytes only: records split and merged at every place."""

from __future__ import annotations

import itertools
import struct

from hypothesis import given
from hypothesis import strategies as st

from wgmagic.proto.flyframe import KEEPALIVE, MAGIC, MAX_RECORD, FlyStreamDecoder, encode_record, encode_records


def test_magic_and_record_bytes() -> None:
    assert bytes.fromhex("2faced77") == MAGIC
    assert encode_record(b"\x01\x02\x03") == b"\x00\x00\x00\x03\x01\x02\x03"
    assert encode_record(b"") == KEEPALIVE


def test_server_side_reads_magic_then_records_and_skips_keepalives() -> None:
    decoder = FlyStreamDecoder(expect_magic=True)
    stream = MAGIC + encode_record(b"a" * 148) + KEEPALIVE + encode_record(b"b" * 92)
    assert decoder.feed(stream) == [b"a" * 148, b"b" * 92]
    assert decoder.keepalives == 1
    assert decoder.buffered == 0 and decoder.failed is None


def test_length_split_across_messages() -> None:
    decoder = FlyStreamDecoder()
    record = encode_record(b"xyz")
    assert decoder.feed(record[:1]) == []
    assert decoder.feed(record[1:3]) == []
    assert decoder.feed(record[3:5]) == []
    assert decoder.feed(record[5:]) == [b"xyz"]


def test_wrong_magic_fails_without_raising() -> None:
    decoder = FlyStreamDecoder(expect_magic=True)
    assert decoder.feed(b"\x2f\xac") == []
    assert decoder.failed is None
    assert decoder.feed(b"\x00\x00" + encode_record(b"x")) == []
    assert decoder.failed == "fly_bad_magic"
    assert decoder.feed(encode_record(b"y")) == []


def test_record_too_long_fails_and_holds_nothing() -> None:
    decoder = FlyStreamDecoder()
    out = decoder.feed(encode_record(b"ok") + struct.pack(">I", MAX_RECORD + 1) + b"\x00" * 100)
    assert out == [b"ok"]
    assert decoder.failed == "fly_record_too_long"
    assert decoder.buffered == 0
    assert decoder.drops["fly_record_too_long"] == 1


@given(st.lists(st.binary(max_size=2000), max_size=12), st.lists(st.integers(min_value=0, max_value=30000)),
       st.booleans())
def test_any_split_gives_the_datagrams_back(datagrams: list[bytes], cuts: list[int], magic: bool) -> None:
    stream = (MAGIC if magic else b"") + encode_records(datagrams)
    points = sorted({min(c, len(stream)) for c in cuts} | {0, len(stream)})
    decoder = FlyStreamDecoder(expect_magic=magic)
    got: list[bytes] = []
    for start, end in itertools.pairwise(points):
        got += decoder.feed(stream[start:end])
    assert got == [d for d in datagrams if d]
    assert decoder.keepalives == sum(1 for d in datagrams if not d)
    assert decoder.buffered == 0 and decoder.failed is None


@given(st.lists(st.binary(max_size=300), max_size=20), st.booleans())
def test_garbage_never_raises_and_stays_bounded(chunks: list[bytes], magic: bool) -> None:
    decoder = FlyStreamDecoder(expect_magic=magic)
    for chunk in chunks:
        for datagram in decoder.feed(chunk):
            assert 0 < len(datagram) <= MAX_RECORD
        assert decoder.buffered <= MAX_RECORD + 4
