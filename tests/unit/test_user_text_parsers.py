"""Parsers of text users type: --expose, --name, --window. Hypothesis: they accept or raise ValueError."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wgmagic.addresses import parse_expose, parse_name
from wgmagic.notebook.dashboard import parse_window


def test_expose_forms():
    e = parse_expose("5432=127.0.0.1:5432")
    assert (e.address, e.port, e.target_host, e.target_port) == (None, 5432, "127.0.0.1", 5432)
    e = parse_expose("198.18.0.1:80=localhost:8080")
    assert e.address == ipaddress.ip_address("198.18.0.1") and e.target_host == "localhost"
    e = parse_expose("[fd00::1]:80=[::1]:8080")
    assert e.address == ipaddress.ip_address("fd00::1") and e.target_host == "::1"
    for bad in ("5432", "0=h:1", "70000=h:1", "5432=h", "x:1=h:1", "5432=h:99999"):
        with pytest.raises(ValueError):
            parse_expose(bad)


def test_name_forms():
    assert parse_name("DB.internal=198.18.0.1,fd00::1") == (
        "db.internal.", (ipaddress.ip_address("198.18.0.1"), ipaddress.ip_address("fd00::1")))
    for bad in ("db.internal", "=1.2.3.4", "db=notanip"):
        with pytest.raises(ValueError):
            parse_name(bad)


def test_window_forms():
    assert parse_window("90") == 90 and parse_window("90s") == 90 and parse_window("5m") == 300
    assert parse_window("1h") == 600  # the history holds 10 minutes
    for bad in ("", "0", "-5m", "2h", "five"):
        with pytest.raises(ValueError):
            parse_window(bad)


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=60))
def test_expose_accepts_or_raises_value_error(text):
    try:
        parse_expose(text)
    except ValueError:
        pass


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=60))
def test_name_accepts_or_raises_value_error(text):
    try:
        parse_name(text)
    except ValueError:
        pass


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=20))
def test_window_accepts_or_raises_value_error(text):
    try:
        assert 0 < parse_window(text) <= 600
    except ValueError:
        pass
