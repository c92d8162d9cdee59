"""Timestamps, dates and intervals become the same microsecond columns on every pandas the package allows
(issue 21, item 5): pandas 2, the newest on Python 3.10, parses Python datetimes into nanoseconds only (years
1677-2262, durations up to 292 years), so the row path kept such columns as Python objects there while the bulk
path (and pandas 3) gave datetime64[us]. Differential, with bytes only: the row path's normalisation of the
Python values psycopg gives against the binary COPY decoder's column for the same values.
"""

from __future__ import annotations

import datetime
import struct

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from wgmagic.sql.binary_copy import DATE_OID, SIGNATURE, TIMESTAMP_OID, TIMESTAMPTZ_OID, decode_column, field_layout
from wgmagic.sql.results import _normalise

INTERVAL_OID = 1186
PG_EPOCH = datetime.datetime(2000, 1, 1)
UTC = datetime.timezone.utc
US = datetime.timedelta(microseconds=1)

# inside the bulk decoder's window (0001-01-02 .. 9999-12-30), where it builds the column itself
STAMPS = st.datetimes(datetime.datetime(1, 1, 3), datetime.datetime(9999, 12, 29))
ZONES = st.sampled_from([UTC, datetime.timezone(datetime.timedelta(hours=-3, minutes=-30)),
                         datetime.timezone(datetime.timedelta(hours=14))])
DURATIONS = st.timedeltas(datetime.timedelta(days=-99_999_999), datetime.timedelta(days=99_999_999))


def _encode(oid: int, value: object) -> bytes:
    if oid == DATE_OID:
        return struct.pack(">i", (value - PG_EPOCH.date()).days)
    if oid == INTERVAL_OID:
        return struct.pack(">qii", (value - datetime.timedelta(days=value.days)) // US, value.days, 0)
    if oid == TIMESTAMPTZ_OID:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return struct.pack(">q", (value - PG_EPOCH) // US)


def _bulk(oid: int, values: list) -> pd.Series:
    body = b"".join(struct.pack(">h", 1) + (struct.pack(">i", -1) if v is None else
                                            struct.pack(">i", len(e := _encode(oid, v))) + e) for v in values)
    stream = SIGNATURE + struct.pack(">ii", 0, 0) + body + b"\xff\xff"
    offsets, sizes = field_layout(stream, [len(stream)], 1)
    column, final = decode_column(stream, offsets[0], sizes[0], oid, None, True)
    assert final
    return column


def _rows(oid: int, values: list) -> pd.Series:
    return _normalise(pd.DataFrame({0: pd.Series(values, dtype=object)}), [oid])[0]


def _same(oid: int, values: list) -> pd.Series:
    rows, bulk = _rows(oid, values), _bulk(oid, values)
    pd.testing.assert_series_equal(rows, bulk, check_exact=True, check_names=False)
    return rows


def test_beyond_the_nanosecond_range():
    late, early = datetime.datetime(2263, 1, 1, 0, 0, 0, 1), datetime.datetime(1066, 10, 14, 9)
    assert str(_same(TIMESTAMP_OID, [late, None, early]).dtype) == "datetime64[us]"
    zone = datetime.timezone(datetime.timedelta(hours=-3, minutes=-30))
    column = _same(TIMESTAMPTZ_OID, [late.replace(tzinfo=zone), None, early.replace(tzinfo=UTC)])
    assert str(column.dtype) == "datetime64[us, UTC]"
    assert column[0].to_pydatetime() == datetime.datetime(2263, 1, 1, 3, 30, 0, 1, tzinfo=UTC)
    assert str(_same(DATE_OID, [datetime.date(9999, 12, 30), None, datetime.date(1, 1, 2)]).dtype) == \
        "datetime64[us]"
    column = _same(INTERVAL_OID, [datetime.timedelta(days=300 * 366, microseconds=7), None])
    assert str(column.dtype) == "timedelta64[us]"
    assert column[0].to_pytimedelta() == datetime.timedelta(days=300 * 366, microseconds=7)


@settings(max_examples=60, deadline=None)
@given(stamps=st.lists(st.none() | STAMPS, min_size=1, max_size=6), zone=ZONES,
       durations=st.lists(st.none() | DURATIONS, min_size=1, max_size=6))
def test_row_and_bulk_columns_are_equal(stamps, zone, durations):
    _same(TIMESTAMP_OID, stamps)
    _same(TIMESTAMPTZ_OID, [None if s is None else s.replace(tzinfo=zone) for s in stamps])
    _same(DATE_OID, [None if s is None else s.date() for s in stamps])
    _same(INTERVAL_OID, durations)
