"""wgmagic.sql.binary_copy: the binary COPY walker and the stand-ins, with bytes only (no database)."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wgmagic.sql.binary_copy import (
    DATE_OID,
    SIGNATURE,
    TIMESTAMP_OID,
    TIMESTAMPTZ_OID,
    BulkDecodeError,
    decode_column,
    field_layout,
)
from wgmagic.sql.loaders import _iso_to_pg, _pg_to_iso, datetime_stand_in, interval_stand_in

HEADER = SIGNATURE + struct.pack(">ii", 0, 0)
TRAILER = b"\xff\xff"


def encode(rows: list[list[bytes | None]]) -> list[bytes]:
    """CopyData messages as PostgreSQL sends them: header with the first row, one row each, the trailer."""
    messages = []
    for row in rows:
        body = struct.pack(">h", len(row)) + b"".join(
            struct.pack(">i", -1) if v is None else struct.pack(">i", len(v)) + v for v in row)
        messages.append(body)
    if messages:
        messages[0] = HEADER + messages[0]
    else:
        messages.append(HEADER)
    messages.append(TRAILER)
    return messages


FIELD = st.none() | st.binary(max_size=12)


@settings(max_examples=200)
@given(ncols=st.integers(1, 4), data=st.data(), glued=st.booleans())
def test_walk_finds_every_field(ncols, data, glued):
    rows = data.draw(st.lists(st.lists(FIELD, min_size=ncols, max_size=ncols), max_size=8))
    messages = encode(rows)
    if glued and len(messages) > 1:  # messages that do not follow rows: the row-by-row walk takes over
        messages = [b"".join(messages)]
    stream = b"".join(messages)
    offsets, sizes = field_layout(stream, [len(m) for m in messages], ncols)
    for col in range(ncols):
        got = [None if s < 0 else stream[o:o + s] for o, s in zip(offsets[col], sizes[col], strict=True)]
        assert got == [row[col] for row in rows]


@settings(max_examples=300)
@given(stream=st.binary(max_size=80), cut=st.integers(0, 80), ncols=st.integers(0, 3))
def test_malformed_streams_raise_only_bulk_decode_error(stream, cut, ncols):
    for candidate in (stream, HEADER + stream, b"".join(encode([[b"ab", None, b"c"][:ncols]] * 2))[:cut]):
        try:
            field_layout(candidate, [len(candidate)] if candidate else [], ncols)
        except BulkDecodeError:
            pass


def test_truncated_stream_is_never_complete():
    messages = encode([[b"\x00\x00\x00\x01"]] * 3)[:-1]  # no trailer
    with pytest.raises(BulkDecodeError, match="truncated"):
        field_layout(b"".join(messages), [len(m) for m in messages], 1)


def test_fixed_width_with_a_wrong_length_is_a_decode_error():
    messages = encode([[b"\x00\x01"]])  # two bytes for an int4
    stream = b"".join(messages)
    offsets, sizes = field_layout(stream, [len(m) for m in messages], 1)
    with pytest.raises(BulkDecodeError):
        decode_column(stream, offsets[0], sizes[0], 23, None, True)


def test_columns_decode_by_type():
    rows = [[struct.pack(">q", 2**62), struct.pack(">d", float("nan")), "é\\N".encode(), b"\x01"],
            [None, None, None, None], [struct.pack(">q", -1), struct.pack(">d", -0.0), b"", b"\x00"]]
    messages = encode(rows)
    stream = b"".join(messages)
    offsets, sizes = field_layout(stream, [len(m) for m in messages], 4)
    ints, _ = decode_column(stream, offsets[0], sizes[0], 20, None, True)
    floats, _ = decode_column(stream, offsets[1], sizes[1], 701, None, True)
    texts, _ = decode_column(stream, offsets[2], sizes[2], 25, None, True)
    bools, _ = decode_column(stream, offsets[3], sizes[3], 16, None, True)
    assert str(ints.dtype) == "Int64" and ints[0] == 2**62 and ints.isna()[1] and ints[2] == -1
    assert np.isnan(floats[0]) and np.isnan(floats[1]) and np.signbit(floats[2])
    assert list(texts) == ["é\\N", None, ""]
    assert str(bools.dtype) == "boolean" and list(bools[[0, 2]]) == [True, False] and bools.isna()[1]


def test_invalid_utf8_is_a_decode_error():
    messages = encode([[b"\xc3"]])
    stream = b"".join(messages)
    offsets, sizes = field_layout(stream, [len(m) for m in messages], 1)
    with pytest.raises(BulkDecodeError, match="UTF-8"):
        decode_column(stream, offsets[0], sizes[0], 25, None, True)


@pytest.mark.parametrize(("oid", "text"), [
    (DATE_OID, "0044-03-15 BC"), (DATE_OID, "5874897-12-31"), (DATE_OID, "4713-01-01 BC"),
    (TIMESTAMP_OID, "294276-12-31 23:59:59.999999"), (TIMESTAMP_OID, "0001-12-31 23:00:00.5 BC"),
    (TIMESTAMPTZ_OID, "10000-01-01 00:00:00+00"), (TIMESTAMPTZ_OID, "4713-01-01 00:00:00+00 BC"),
])
def test_datetime_stand_ins_round_trip(oid, text):
    value = _iso_to_pg(text, oid)
    assert datetime_stand_in(oid, text=text) == text
    assert datetime_stand_in(oid, value) == text
    assert _pg_to_iso(value * (86_400_000_000 if oid == DATE_OID else 1), oid) == text


def test_stand_ins_for_infinity_and_offsets():
    assert datetime_stand_in(DATE_OID, 2**31 - 1) == "infinity"
    assert datetime_stand_in(TIMESTAMPTZ_OID, -(2**63)) == "-infinity"
    assert datetime_stand_in(TIMESTAMPTZ_OID, text="10000-01-01 05:30:00+05:30") == "10000-01-01 00:00:00+00"


@pytest.mark.parametrize(("parts", "text"), [
    ((0, 0, 0), "00:00:00"), ((1, 0, 0), "1 mon"), ((-1, 0, 0), "-1 mons"), ((12, 1, 0), "1 year 1 day"),
    ((-14, 3, -1), "-1 years -2 mons +3 days -00:00:00.000001"), ((0, -1, 3_600_000_000), "-1 days +01:00:00"),
    ((2**31 - 1, 2**31 - 1, 2**63 - 1), "178956970 years 7 mons 2147483647 days 2562047788:00:54.775807"),
])
def test_interval_stand_in_prints_as_postgres_does(parts, text):
    assert interval_stand_in(*parts) == text


# ---- the streaming decoder (wgmagic.sql.copy_stream): chunks cut anywhere give the whole stream's columns ----

def _loader_for_tests():
    """psycopg's binary loaders with wgmagic's guards (no connection): what the bulk path's load_one gives."""
    import psycopg
    from psycopg import pq
    from psycopg.adapt import AdaptersMap

    from wgmagic.sql.loaders import guarded_loaders

    adapters = AdaptersMap(psycopg.adapters)
    guarded_loaders(adapters)
    return lambda oid: adapters.get_loader(oid, pq.Format.BINARY)(oid, None).load


LOAD_ONE = _loader_for_tests()
VALUES = {
    20: st.integers(-(2**63), 2**63 - 1).map(lambda v: struct.pack(">q", v)),
    23: st.integers(-(2**31), 2**31 - 1).map(lambda v: struct.pack(">i", v)),
    701: st.floats().map(lambda v: struct.pack(">d", v)),
    25: st.text(st.characters(codec="utf-8"), max_size=6).map(str.encode),
    16: st.booleans().map(lambda v: b"\x01" if v else b"\x00"),
    DATE_OID: st.one_of(st.integers(-700_000, 2_900_000), st.sampled_from([2**31 - 1, -(2**31)]))
    .map(lambda v: struct.pack(">i", v)),
    TIMESTAMPTZ_OID: st.one_of(st.integers(-(10**16), 10**16), st.sampled_from([2**63 - 1]))
    .map(lambda v: struct.pack(">q", v)),
    1186: st.tuples(st.integers(-(10**12), 10**12), st.integers(-1000, 1000), st.integers(-100, 100))
    .map(lambda t: struct.pack(">qii", *t)),
    17: st.binary(max_size=5),  # bytea: psycopg's loader, value by value
}


def _expected_columns(stream: bytes, lengths: list[int], oids: list[int]):
    offsets, sizes = field_layout(stream, lengths, len(oids))
    return [decode_column(stream, offsets[i], sizes[i], oid, LOAD_ONE, True) for i, oid in enumerate(oids)]


def _assert_column_equal(got, want):
    import pandas as pd

    (got_values, got_final), (want_values, want_final) = got, want
    assert got_final == want_final
    if not want_final:
        assert [(type(v), repr(v)) for v in got_values] == [(type(v), repr(v)) for v in want_values]
        return
    if str(want_values.dtype) == "object":  # text: the whole-stream decoder's Python str objects
        assert list(got_values.astype(object).where(got_values.notna(), None)) == list(want_values)
        return
    pd.testing.assert_series_equal(got_values.reset_index(drop=True), want_values.reset_index(drop=True),
                                   check_exact=True)


def _feed_and_collect(oids, feeds):
    from wgmagic.sql.copy_stream import StreamDecoder, concat_pieces

    columns = [[] for _ in oids]
    counts = []

    def emit(pieces, rows):
        counts.append(rows)
        assert all(len(p) == rows for p in pieces)
        for column, piece in zip(columns, pieces, strict=True):
            column.append(piece)

    decoder = StreamDecoder(oids, LOAD_ONE, True, emit)
    for data, lengths in feeds:
        decoder.feed(data, lengths)
    decoder.finish()
    return [concat_pieces(c) if c else None for c in columns], sum(counts)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_streaming_decoder_equals_whole_stream_wherever_the_chunks_end(data):
    """Hypothesis places the chunk boundaries: inside the header, inside a row's field count, inside a
    field's length word, inside a value, between rows, and feeds either bare bytes or whole messages with
    their lengths (the vectorised walk), mixed. The pieces equal the whole-stream decoder's columns."""
    from wgmagic.sql.columns import piece_to_pandas

    oids = data.draw(st.lists(st.sampled_from(sorted(VALUES)), min_size=1, max_size=4))
    rows = data.draw(st.lists(st.tuples(*[st.none() | VALUES[oid] for oid in oids]).map(list), max_size=12))
    messages = encode(rows)
    stream = b"".join(messages)
    lengths = [len(m) for m in messages]
    feeds = []
    index = 0
    while index < len(messages):
        take = data.draw(st.integers(1, len(messages) - index))
        group = messages[index:index + take]
        index += take
        if data.draw(st.booleans()):
            feeds.append((b"".join(group), [len(m) for m in group]))  # whole messages: the fast walk
        else:
            blob = b"".join(group)
            cuts = sorted(data.draw(st.lists(st.integers(0, len(blob)), max_size=4)))
            for start, stop in zip([0, *cuts], [*cuts, len(blob)], strict=True):
                feeds.append((blob[start:stop], None))  # bytes cut anywhere, a row or a value included
    pieces, count = _feed_and_collect(oids, feeds)
    assert count == len(rows)
    want = _expected_columns(stream, lengths, oids)
    for piece, expected in zip(pieces, want, strict=True):
        if piece is None:
            assert len(rows) == 0
            continue
        _assert_column_equal(piece_to_pandas(piece, LOAD_ONE, "str"), expected)


def test_streaming_decoder_every_single_cut_and_byte_by_byte():
    """A small stream cut at every byte position once, and fed one byte at a time: the same columns."""
    from wgmagic.sql.columns import piece_to_pandas

    oids = [20, 25, 1186]
    rows = [[struct.pack(">q", 7), "ab€".encode(), struct.pack(">qii", 5, 1, 2)], [None, b"", None],
            [struct.pack(">q", -1), None, struct.pack(">qii", -5, 0, -13)]]
    messages = encode(rows)
    stream = b"".join(messages)
    want = _expected_columns(stream, [len(m) for m in messages], oids)
    plans = [[(stream[:cut], None), (stream[cut:], None)] for cut in range(len(stream) + 1)]
    plans.append([(stream[i:i + 1], None) for i in range(len(stream))])
    for plan in plans:
        pieces, count = _feed_and_collect(oids, plan)
        assert count == 3
        for piece, expected in zip(pieces, want, strict=True):
            _assert_column_equal(piece_to_pandas(piece, LOAD_ONE, "str"), expected)


@settings(max_examples=200, deadline=None)
@given(stream=st.binary(max_size=60), cut=st.integers(0, 60), ncols=st.integers(0, 3))
def test_streaming_decoder_raises_only_bulk_decode_error(stream, cut, ncols):
    from wgmagic.sql.copy_stream import StreamDecoder

    for candidate in (stream, HEADER + stream, b"".join(encode([[b"ab", None, b"c"][:ncols]] * 2))[:cut]):
        decoder = StreamDecoder([25] * ncols, LOAD_ONE, True, lambda pieces, rows: None)
        try:
            decoder.feed(candidate[:cut])
            decoder.feed(candidate[cut:], [len(candidate) - cut] if len(candidate) > cut else None)
            decoder.finish()
        except BulkDecodeError:
            pass


def test_streaming_decoder_refuses_a_truncated_stream_and_data_after_the_trailer():
    from wgmagic.sql.copy_stream import StreamDecoder

    messages = encode([[b"\x00\x00\x00\x01"]] * 3)
    decoder = StreamDecoder([23], LOAD_ONE, True, lambda pieces, rows: None)
    decoder.feed(b"".join(messages[:-1]), [len(m) for m in messages[:-1]])
    with pytest.raises(BulkDecodeError, match="truncated"):
        decoder.finish()
    decoder.feed(messages[-1])
    with pytest.raises(BulkDecodeError, match="after its trailer"):
        decoder.feed(b"\x00")
