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
    _iso_to_pg,
    _pg_to_iso,
    datetime_stand_in,
    decode_column,
    field_layout,
    interval_stand_in,
)

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
