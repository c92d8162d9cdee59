"""Warnings are faults in waiting (issue 21, item 6).

pyproject's pytest configuration turns every warning attributed to a wgmagic module into an error; these tests
check that it does (and only for wgmagic), and that wgmagic makes no NumPy datetime or timedelta without a unit:
NumPy 2.5 deprecates the "generic" unit (`np.timedelta64("NaT")`, `np.datetime64("NaT")`, `astype("m8")`), and
the binary COPY decoder made one for every NULL timestamp, date or interval of a bulk `%%wgsql`.
"""

from __future__ import annotations

import ast
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest

import wgmagic
from wgmagic.sql.binary_copy import DATE_OID, SIGNATURE, TIMESTAMP_OID, TIMESTAMPTZ_OID, decode_column, field_layout

PACKAGE = Path(wgmagic.__file__).parent
INTERVAL_OID = 1186
GENERIC_DTYPES = {"datetime64", "timedelta64", "M8", "m8", "M", "m"}


# ---- the configuration ------------------------------------------------------------------------------------
@pytest.mark.parametrize("module", ["wgmagic", "wgmagic.sql.binary_copy", "wgmagic.runtime.services.wsrelay"])
def test_a_warning_from_wgmagic_fails_the_test(module):
    with pytest.raises(DeprecationWarning, match="a deprecation"):
        warnings.warn_explicit("a deprecation", DeprecationWarning, "x.py", 1, module=module, registry={})


@pytest.mark.parametrize("module", ["pandas.core.frame", "wgmagicx", "tests.unit.test_warnings_are_errors",
                                    "numpy"])
def test_a_warning_from_elsewhere_keeps_the_default(module):
    with warnings.catch_warnings(record=True) as caught:
        warnings.warn_explicit("elsewhere", DeprecationWarning, "x.py", 1, module=module, registry={})
    assert [str(w.message) for w in caught] == ["elsewhere"]


# ---- no generic unit, anywhere in wgmagic --------------------------------------------------------------------
def _dtype_text(node: ast.AST) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value.lstrip("<>=|")
    return None


def _numpy_type(node: ast.AST) -> str | None:
    """'datetime64' / 'timedelta64' for np.datetime64, numpy.timedelta64 and the like."""
    if isinstance(node, ast.Attribute) and node.attr in ("datetime64", "timedelta64"):
        return node.attr
    return None


def unitless(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, what) for every NumPy datetime/timedelta the code makes with the generic unit: np.datetime64(x) or
    np.timedelta64(x) without a unit, a dtype "datetime64"/"M8"/"m8"... without [unit], np.datetime64 itself as
    a dtype (astype(np.timedelta64), dtype=np.datetime64)."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        kind = _numpy_type(node.func)
        if kind and len(node.args) < 2 and not any(k.arg is not None for k in node.keywords):
            found.append((node.lineno, f"np.{kind}(...) without a unit"))
        dtype_args = [k.value for k in node.keywords if k.arg == "dtype"]
        if (isinstance(node.func, ast.Attribute) and node.func.attr in ("astype", "dtype", "view")) or (
                isinstance(node.func, ast.Name) and node.func.id == "dtype"):
            dtype_args += node.args[:1]
        for arg in dtype_args:
            text = _dtype_text(arg)
            if text in GENERIC_DTYPES:
                found.append((node.lineno, f"dtype {text!r} without [unit]"))
            if _numpy_type(arg):
                found.append((node.lineno, f"np.{_numpy_type(arg)} as a dtype (generic unit)"))
    return found


def test_the_finder_finds_each_form():
    source = """
values[null] = np.timedelta64("NaT")
stamp = numpy.datetime64("NaT")
a = b.astype("m8")
c = np.zeros(3, dtype="<M8")
d = e.astype(np.timedelta64)
f = np.empty(2, dtype=np.datetime64)
ok1 = np.timedelta64("NaT", "us")
ok2 = b.astype("datetime64[us]")
ok3 = np.datetime64(text, unit)
ok4 = isinstance(v, np.timedelta64)
"""
    assert [line for line, _ in unitless(ast.parse(source))] == [2, 3, 4, 5, 6, 7]


def test_wgmagic_makes_no_datetime_or_timedelta_without_a_unit():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        found += [f"{path.relative_to(PACKAGE.parent)}:{line}: {what}" for line, what in unitless(tree)]
    assert not found, "\n".join(found)


# ---- the decoder with a NumPy that refuses the generic unit ----------------------------------------------------
def _copy_stream(rows: list[list[bytes | None]]) -> bytes:
    body = b"".join(struct.pack(">h", len(row)) + b"".join(
        struct.pack(">i", -1) if v is None else struct.pack(">i", len(v)) + v for v in row) for row in rows)
    return SIGNATURE + struct.pack(">ii", 0, 0) + body + b"\xff\xff"


class _Strict:
    """np.datetime64 / np.timedelta64 as NumPy 2.5 treats them: the generic unit warns (DeprecationWarning),
    attributed to the caller, so pyproject's filter makes it an error when the caller is wgmagic."""

    @staticmethod
    def wrap(real: type) -> type:
        class Strict(real):  # type: ignore[misc, valid-type]
            def __new__(cls, *args, **kwargs):
                if len(args) < 2 and "unit" not in kwargs:
                    warnings.warn(f"The 'generic' unit for NumPy {real.__name__} is deprecated",
                                  DeprecationWarning, stacklevel=2)
                return real(*args, **kwargs)

        return Strict


@pytest.mark.parametrize("oid", [TIMESTAMP_OID, TIMESTAMPTZ_OID, DATE_OID, INTERVAL_OID])
def test_nulls_of_every_time_type_decode_without_a_generic_unit(monkeypatch, oid):
    value = {DATE_OID: struct.pack(">i", 9_000), INTERVAL_OID: struct.pack(">qii", 1_500_000, 3, 14)}.get(
        oid, struct.pack(">q", 800_000_000_000_000))
    stream = _copy_stream([[value], [None], [value]])
    offsets, sizes = field_layout(stream, [len(stream)], 1)
    monkeypatch.setattr(np, "datetime64", _Strict.wrap(np.datetime64))
    monkeypatch.setattr(np, "timedelta64", _Strict.wrap(np.timedelta64))
    column, final = decode_column(stream, offsets[0], sizes[0], oid, None, True)
    monkeypatch.undo()
    assert final
    assert column.isna().tolist() == [False, True, False]
    unit = np.datetime_data(column.dtype.base if hasattr(column.dtype, "base") else column.dtype)[0]
    assert unit == "us"
