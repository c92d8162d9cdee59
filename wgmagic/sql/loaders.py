"""psycopg's loaders as %%wgsql registers them on a cursor, and the stand-ins for values Python cannot hold.

`guarded_loaders(adapters)` wraps psycopg's date/time loaders (text and binary) so that a value Python's
datetime or timedelta cannot hold (PostgreSQL's ``infinity`` and ``-infinity``, years before 1 or after 9999,
intervals past timedelta's range, time 24:00:00) comes back as a ``str`` stand-in instead of an error, the same
on the row path and the bulk (binary COPY) path: `datetime_stand_in`, `interval_stand_in`. JSON and jsonb are
decoded in the session's client encoding. `binary_loaders(cursor)` is the bulk path's `load_one(oid)`.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from wgmagic.sql.binary_copy import (
    DATE_OID,
    GUARDED_OIDS,
    INT32_MAX,
    INT32_MIN,
    INT64_MAX,
    INT64_MIN,
    INTERVAL_OID,
    PG_EPOCH_DAYS,
    TIME_OID,
    TIMESTAMP_OID,
    TIMESTAMPTZ_OID,
    BulkDecodeError,
    LoadOne,
)

if TYPE_CHECKING:
    from psycopg import Cursor


def binary_loaders(cur: Cursor[Any]) -> LoadOne:
    """`load_one(oid)` for the COPY path: the load method of the cursor's binary loader for `oid` (guarded when
    `guarded_loaders` ran on its adapters). BulkDecodeError for a type the cursor has no binary loader for
    (psycopg's get_loader gives None), which the caller reports as this side's failure."""
    from psycopg import pq

    def load_one(oid: int) -> Callable[[Any], Any]:
        loader = cur.adapters.get_loader(oid, pq.Format.BINARY)
        if loader is None:
            raise BulkDecodeError(f"psycopg has no binary loader for type oid {oid}")
        return loader(oid, cur).load

    return load_one



_ISO = re.compile(r"^(\d{4,})-(\d\d)-(\d\d)(?: (\d\d):(\d\d):(\d\d)(\.\d+)?)?([+-]\d\d(?::\d\d){0,2})?( BC)?$")


def datetime_stand_in(oid: int, microseconds: int | None = None, text: str | None = None) -> str:
    """The stand-in for a date/timestamp/timestamptz value Python's datetime cannot hold, from either side.

    ``'infinity'`` and ``'-infinity'`` stay those words. Any other value (years before 1 or after 9999) is
    PostgreSQL's ISO text of it: ``YYYY-MM-DD`` (date), ``YYYY-MM-DD HH:MM:SS[.ffffff]`` (timestamp), the
    same in UTC with ``+00`` (timestamptz), then `` BC`` for years before 1. `microseconds` is the binary
    value (microseconds from 2000-01-01, days for a date); `text` is the server's text (ISO DateStyle)."""
    if text is not None:
        if text in ("infinity", "-infinity"):
            return text
        microseconds = _iso_to_pg(text, oid)
        if microseconds is None:
            return text  # not ISO DateStyle: the server's text as it came
    assert microseconds is not None
    if oid == DATE_OID:
        if microseconds in (INT32_MAX, INT32_MIN):
            return "infinity" if microseconds > 0 else "-infinity"
        microseconds *= 86_400_000_000
    elif microseconds in (INT64_MAX, INT64_MIN):
        return "infinity" if microseconds > 0 else "-infinity"
    return _pg_to_iso(microseconds, oid)


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days from 1970-01-01 to a proleptic Gregorian date (astronomical year: 0 is 1 BC); H. Hinnant's
    algorithm, in Python integers (PostgreSQL's range, 4713 BC to 5874897 AD, is beyond numpy's us)."""
    year -= month <= 2
    era = year // 400
    yoe = year - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _civil_from_days(days: int) -> tuple[int, int, int]:
    days += 719468
    era = days // 146097
    doe = days - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + (3 if mp < 10 else -9)
    return yoe + era * 400 + (month <= 2), month, day


def _iso_to_pg(text: str, oid: int) -> int | None:
    match = _ISO.match(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, offset, bc = match.groups()
    astronomical = 1 - int(year) if bc else int(year)
    days = _days_from_civil(astronomical, int(month), int(day)) - PG_EPOCH_DAYS
    if oid == DATE_OID:
        return days
    micros = days * 86_400_000_000
    micros += ((int(hour or 0) * 60 + int(minute or 0)) * 60 + int(second or 0)) * 1_000_000
    micros += int((fraction[1:] + "000000")[:6]) if fraction else 0
    if offset:
        parts = [int(p) for p in offset[1:].split(":")] + [0, 0]
        seconds = parts[0] * 3600 + parts[1] * 60 + parts[2]
        micros -= (1 if offset[0] == "+" else -1) * seconds * 1_000_000
    return micros


def _pg_to_iso(micros: int, oid: int) -> str:
    days, micros = divmod(micros, 86_400_000_000)
    astronomical, month, day = _civil_from_days(days + PG_EPOCH_DAYS)
    bc = astronomical <= 0
    text = f"{(1 - astronomical) if bc else astronomical:04d}-{month:02d}-{day:02d}"
    if oid != DATE_OID:
        seconds, fraction = divmod(micros, 1_000_000)
        minutes, seconds = divmod(seconds, 60)
        hours, minutes = divmod(minutes, 60)
        text += f" {hours:02d}:{minutes:02d}:{seconds:02d}"
        if fraction:
            text += f".{fraction:06d}".rstrip("0")
        if oid == TIMESTAMPTZ_OID:
            text += "+00"
    return text + (" BC" if bc else "")


def interval_stand_in(months: int, days: int, micros: int) -> str:
    """An interval Python's timedelta cannot hold, as PostgreSQL's default IntervalStyle (postgres) prints it
    (EncodeInterval in src/backend/utils/adt/datetime.c: a '+' before a positive part after a negative one)."""
    text, is_zero, is_before = "", True, False
    years, mons = int(months / 12), months - 12 * int(months / 12)  # C division: truncates toward zero
    for amount, unit in ((years, "year"), (mons, "mon"), (days, "day")):
        if amount:
            text += f"{'' if is_zero else ' '}{'+' if is_before and amount > 0 else ''}{amount} {unit}" \
                    f"{'' if amount == 1 else 's'}"
            is_before, is_zero = amount < 0, False
    if is_zero or micros:
        seconds, fraction = divmod(abs(micros), 1_000_000)
        minutes, seconds = divmod(seconds, 60)
        hours, minutes = divmod(minutes, 60)
        sign = "-" if micros < 0 else ("+" if is_before else "")
        text += f"{'' if is_zero else ' '}{sign}{hours:02d}:{minutes:02d}:{seconds:02d}"
        if fraction:
            text += f".{fraction:06d}".rstrip("0")
    return text


_INTERVAL = struct.Struct(">qii")
_TIME = struct.Struct(">q")


def guarded_loaders(adapters: Any) -> None:
    """Register, on a psycopg adapters map (a cursor's), date/time loaders that give the stand-in instead of
    raising for a value Python cannot hold (text and binary alike, so both paths agree)."""
    import psycopg
    from psycopg import pq
    from psycopg.adapt import Loader

    for oid in GUARDED_OIDS:
        for fmt in (pq.Format.TEXT, pq.Format.BINARY):
            base = adapters.get_loader(oid, fmt)
            if base is None or getattr(base, "_wgmagic_guarded", False):
                continue

            class Guarded(Loader):  # delegates: psycopg's C loaders cannot be overridden by a subclass
                _wgmagic_guarded = True
                format = fmt
                _base = base
                _oid = oid

                def __init__(self, oid: int, context: Any = None) -> None:
                    super().__init__(oid, context)
                    self._inner = self._base(oid, context)

                def load(self, data: Any) -> Any:
                    try:
                        return self._inner.load(data)
                    except (psycopg.DataError, ValueError, OverflowError):
                        info = getattr(self.connection, "info", None)
                        return _stand_in(self._oid, bytes(data), self.format == pq.Format.BINARY,
                                         info.encoding if info is not None else "utf-8")

            adapters.register_loader(oid, Guarded)
    for oid in (114, 3802):  # json, jsonb
        for fmt in (pq.Format.TEXT, pq.Format.BINARY):
            adapters.register_loader(oid, type("EncodedJsonLoader", (_encoded_json_loader(),),
                                               {"format": fmt, "jsonb": oid == 3802 and fmt == pq.Format.BINARY}))


_ENCODED_JSON: list[Any] = []


def _encoded_json_loader() -> Any:
    """A JSON loader class that decodes with the session's client encoding (psycopg's own assumes UTF-8: a
    LATIN1 session's non-ASCII JSON would fail on both paths). Made on first use: psycopg is not imported
    with wgmagic."""
    if _ENCODED_JSON:
        return _ENCODED_JSON[0]
    from psycopg.adapt import Loader

    from wgmagic.sql.jsonvalue import loads_json

    class EncodedJsonLoader(Loader):
        jsonb = False

        def load(self, data: Any) -> Any:
            raw = bytes(data)
            if self.jsonb:
                if raw[:1] != b"\x01":
                    raise BulkDecodeError(f"unknown jsonb binary version {raw[:1]!r}")
                raw = raw[1:]
            info = getattr(self.connection, "info", None)
            return loads_json(raw.decode(info.encoding if info is not None else "utf-8"))  # `null`: JSON_NULL

    _ENCODED_JSON.append(EncodedJsonLoader)
    return EncodedJsonLoader


def _stand_in(oid: int, data: bytes, binary: bool, encoding: str) -> str:
    if not binary:
        text = data.decode(encoding, "replace")
        if oid in (DATE_OID, TIMESTAMP_OID, TIMESTAMPTZ_OID):
            return datetime_stand_in(oid, text=text)
        return text
    if oid == DATE_OID:
        return datetime_stand_in(oid, int.from_bytes(data, "big", signed=True))
    if oid in (TIMESTAMP_OID, TIMESTAMPTZ_OID):
        return datetime_stand_in(oid, int.from_bytes(data, "big", signed=True))
    if oid == INTERVAL_OID:
        micros, days, months = _INTERVAL.unpack(data)
        return interval_stand_in(months, days, micros)
    if oid == TIME_OID:
        return interval_stand_in(0, 0, _TIME.unpack(data[:8])[0])  # 24:00:00
    return data.hex()
