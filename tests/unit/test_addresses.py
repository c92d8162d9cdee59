"""wgmagic.addresses: every user-written address parser. Any text gives a value or a ValueError naming it;
valid input round-trips."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wgmagic.addresses import (
    AddressError,
    format_host,
    parse_local,
    split_colons,
    split_forward_spec,
    split_host_optional_port,
    split_host_port,
)

ADDRESS_TEXT = st.text(alphabet=st.sampled_from("0123456789:[].abcdefx-_/@ %٣\n"), max_size=40) | st.text(max_size=30)
hosts = (st.ip_addresses().map(str)
         | st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z][a-z0-9-]{0,10}){0,3}", fullmatch=True))
ports = st.integers(1, 65535)


@settings(max_examples=500, deadline=None)
@given(ADDRESS_TEXT)
def test_split_host_port_raises_only_value_error(text):
    for kwargs in ({}, {"default_host": "127.0.0.1", "low": 0}, {"default_host": "h", "default_port": 0, "low": 0}):
        try:
            host, port = split_host_port(text, **kwargs)
        except ValueError as exc:
            assert isinstance(exc, AddressError) and repr(text) in str(exc)
        else:
            assert isinstance(host, str) and kwargs.get("low", 1) <= port <= 65535


@settings(max_examples=500, deadline=None)
@given(ADDRESS_TEXT)
def test_other_parsers_raise_only_value_error(text):
    for parse in (split_host_optional_port, split_colons, split_forward_spec, parse_local):
        try:
            parse(text)
        except ValueError:
            pass


@given(hosts, ports)
def test_host_port_round_trip(host, port):
    text = f"{format_host(host)}:{port}"
    assert split_host_port(text) == (host, port)
    assert split_host_optional_port(text) == (host, port)
    assert split_host_optional_port(format_host(host)) == (host, None)
    assert parse_local(text).bind_host == host and parse_local(text).bind_port == port


@given(st.one_of(st.none(), hosts), st.integers(0, 65535), hosts, ports)
def test_forward_spec_round_trip(bind, port, host, host_port):
    text = f"{port}:{format_host(host)}:{host_port}"
    if bind is not None:
        text = f"{format_host(bind)}:{text}"
    assert split_forward_spec(text) == (bind, port, host, host_port)


def test_host_port_forms():
    assert split_host_port("[fd00::1]:5432") == ("fd00::1", 5432)
    assert split_host_port(" db.internal:5432 ") == ("db.internal", 5432)
    assert split_host_port("5432", default_host="127.0.0.1") == ("127.0.0.1", 5432)
    assert split_host_port(":0", default_host="127.0.0.1", low=0) == ("127.0.0.1", 0)
    for bad in ("5432", "db:", "db:0", "db:65536", "db:+5", "db:٣", "[fd00::1]5432", "[fd00::1"):
        with pytest.raises(AddressError, match="'"):
            split_host_port(bad)


def test_local_forms():
    assert parse_local(None).kind == "unix" and parse_local("unix:").socket_dir is None
    assert parse_local("unix:/run/x").socket_dir == "/run/x"
    assert parse_local(0) == parse_local("0") == parse_local("127.0.0.1:") == parse_local("127.0.0.1:0")
    assert (parse_local("[::1]:80").bind_host, parse_local("[::1]:80").bind_port) == ("::1", 80)
    for bad in ("x:y", "99999", -1):
        with pytest.raises(ValueError, match="--local"):
            parse_local(bad)
