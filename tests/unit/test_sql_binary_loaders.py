"""The COPY path's `load_one` (sql/loaders.py `binary_loaders`): psycopg's binary loader of a cursor's adapters,
and this side's decode failure (never a TypeError from calling None) for a type psycopg has no loader for."""

from __future__ import annotations

import struct
from types import SimpleNamespace

import pytest


def _cursor(adapters):
    return SimpleNamespace(adapters=adapters, connection=None)


def test_load_one_uses_the_cursors_binary_loader() -> None:
    import psycopg
    from psycopg.adapt import AdaptersMap

    from wgmagic.sql.loaders import binary_loaders

    load_one = binary_loaders(_cursor(AdaptersMap(psycopg.adapters)))
    assert load_one(23)(struct.pack(">i", -7)) == -7
    assert load_one(25)("wörd".encode()) == "wörd"


def test_a_type_without_a_loader_is_a_decode_error_of_this_side() -> None:
    from psycopg.adapt import AdaptersMap

    from wgmagic.sql.binary_copy import BulkDecodeError
    from wgmagic.sql.loaders import binary_loaders

    load_one = binary_loaders(_cursor(AdaptersMap()))  # an empty map: get_loader gives None for every oid
    with pytest.raises(BulkDecodeError, match="no binary loader for type oid 23"):
        load_one(23)


def test_the_decoder_reports_a_missing_loader_as_bulk_decode_error() -> None:
    """A loose column (bytea: value by value) with no loader fails as BulkDecodeError, which `_copy_out` turns
    into ClientDecodeError ("the statement ran")."""
    import numpy as np
    from psycopg.adapt import AdaptersMap

    from wgmagic.sql.binary_copy import BulkDecodeError
    from wgmagic.sql.copy_stream import decode_piece
    from wgmagic.sql.loaders import binary_loaders

    load_one = binary_loaders(_cursor(AdaptersMap()))
    data = b"\x01\x02"
    with pytest.raises(BulkDecodeError):
        decode_piece(data, np.array([0], dtype=np.int64), np.array([2], dtype=np.int64), 17, load_one, True)
