"""The SOCKS5 UDP request header (RFC 1928 section 7), UDP ASSOCIATE negotiation, and the `udp:` specs."""

from __future__ import annotations

import ipaddress
import struct
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wgmagic.addresses import UdpListenSpec, parse_udp_listen_spec, parse_udp_target
from wgmagic.proto.socks5 import Send, Socks5Negotiation, UdpAssociate
from wgmagic.runtime.services.socks import Socks5Server, generate_credentials
from wgmagic.runtime.services.socks_udp import UdpRequest, build_udp_header, parse_udp_request
from wgmagic.runtime.services.udp_forward import make_spec, udp_socket_owners

ipv4 = st.ip_addresses(v=4)
ipv6 = st.ip_addresses(v=6)
ports = st.integers(1, 65535)
label = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=20)
domains = st.lists(label, min_size=1, max_size=5).map(".".join)


# ---- the UDP request header ------------------------------------------------------------------------------
@given(st.binary(max_size=400))
def test_parse_udp_request_never_raises(data):
    result = parse_udp_request(data)
    assert isinstance(result, (UdpRequest, str))
    if isinstance(result, UdpRequest):
        assert 0 < result.port < 65536 and data.endswith(result.data)


@given(st.one_of(ipv4, ipv6), ports, st.binary(max_size=300), st.integers(0, 255))
def test_header_round_trip_for_addresses(address, port, payload, frag):
    parsed = parse_udp_request(build_udp_header(address, port, frag) + payload)
    assert parsed == UdpRequest(frag, str(address), port, payload)


@given(domains, ports, st.binary(max_size=100))
def test_domain_names(name, port, payload):
    raw = name.encode()
    datagram = b"\x00\x00\x00\x03" + bytes((len(raw),)) + raw + struct.pack("!H", port) + payload
    assert parse_udp_request(datagram) == UdpRequest(0, name, port, payload)
    assert parse_udp_request(datagram[:5 + len(raw) + 1]) == "short"  # cut inside DST.PORT


@given(st.one_of(ipv4, ipv6), ports)
def test_every_truncation_of_a_header_is_short(address, port):
    header = build_udp_header(address, port)
    for end in range(len(header)):
        assert parse_udp_request(header[:end]) == "short"
    assert isinstance(parse_udp_request(header), UdpRequest)  # an empty payload is a datagram too


def test_drop_reasons():
    good = build_udp_header(ipaddress.ip_address("198.18.0.1"), 53)
    assert parse_udp_request(b"\x00\x01" + good[2:]) == "reserved"
    assert parse_udp_request(good[:3] + b"\x09" + good[4:]) == "address_type"
    assert parse_udp_request(good[:-2] + b"\x00\x00") == "port_zero"
    assert parse_udp_request(b"\x00\x00\x00\x03\x00\x00\x35") == "bad_domain"  # empty name
    assert parse_udp_request(b"\x00\x00\x00\x03\x03a\x00b\x00\x35") == "bad_domain"  # NUL inside
    fragment = parse_udp_request(b"\x00\x00\x01" + good[3:] + b"x")
    assert isinstance(fragment, UdpRequest) and fragment.frag == 1  # the relay drops and counts it


# ---- UDP ASSOCIATE in the negotiation --------------------------------------------------------------------
@given(st.one_of(ipv4, ipv6), st.integers(0, 65535))
def test_udp_associate_request_byte_by_byte(address, port):
    atyp = 1 if address.version == 4 else 4
    data = b"\x05\x01\x00" + bytes((5, 3, 0, atyp)) + address.packed + struct.pack("!H", port)
    negotiation = Socks5Negotiation()
    actions = []
    for byte in data:
        actions += negotiation.feed(bytes((byte,)))
    assert actions == [Send(b"\x05\x00"), UdpAssociate(str(address), port)]


def test_udp_associate_with_a_name_means_not_known_yet():
    data = b"\x05\x01\x00" + bytes((5, 3, 0, 3, 4)) + b"host" + struct.pack("!H", 0)
    assert Socks5Negotiation().feed(data)[-1] == UdpAssociate("0.0.0.0", 0)


def test_generated_credentials_are_fresh_and_url_safe():
    first, second = generate_credentials(), generate_credentials()
    assert first != second
    for part in first:
        assert part and all(c.isalnum() or c in "-_" for c in part)
    assert len(first[1]) >= 20


def test_a_proxy_repr_and_url_hide_the_password():
    server = Socks5Server.__new__(Socks5Server)  # no loop or socket needed for the text
    server.address, server.credentials = ("127.0.0.1", 1080), ("wg-user", "very-secret-password")
    assert "very-secret-password" not in repr(server) + server.proxy_url()
    assert server.proxy_url(reveal=True) == "socks5h://wg-user:very-secret-password@127.0.0.1:1080"
    server.address = "/tmp/wgmagic-x/socks5.sock"
    assert server.proxy_url() == "socks5h://localhost/tmp/wgmagic-x/socks5.sock"


# ---- udp:HOST:PORT and udp:[bind:]port:host:hostport ---------------------------------------------------
hosts = st.one_of(domains, ipv4.map(str), ipv6.map(str))


@given(hosts, ports)
def test_udp_target_round_trip(host, port):
    shown = f"[{host}]" if ":" in host else host
    assert parse_udp_target(f"udp:{shown}:{port}") == (host, port)
    assert parse_udp_target(f"UDP:{shown}:{port}") == (host, port)


@given(st.text(max_size=60))
def test_udp_target_rejects_with_value_error_only(text):
    try:
        host, port = parse_udp_target(text)
    except ValueError:
        return
    assert host and 0 < port < 65536


@pytest.mark.parametrize("text", ["db.internal:53", "udp:", "udp:db.internal", "udp::53", "udp:db:0",
                                  "udp:db:65536", "udp:db:x", "udp:fd00::1:53"])
def test_bad_udp_targets(text):
    with pytest.raises(ValueError):
        parse_udp_target(text)


@given(st.one_of(st.none(), st.sampled_from(["127.0.0.1", "::1", "127.0.0.2"])), st.integers(0, 65535), hosts,
       ports)
def test_udp_listen_spec_round_trip(bind, port, host, host_port):
    shown = f"[{host}]" if ":" in host else host
    text = f"udp:{port}:{shown}:{host_port}" if bind is None else \
        f"udp:{f'[{bind}]' if ':' in bind else bind}:{port}:{shown}:{host_port}"
    spec = parse_udp_listen_spec(text)
    assert spec == UdpListenSpec(bind or "127.0.0.1", port, host, host_port)
    assert parse_udp_target(spec.target) == (host, host_port)
    assert make_spec(spec.target, spec.local, [ipaddress.ip_address("198.18.0.1")]).bind_port == port


@given(st.text(max_size=60))
def test_udp_listen_spec_rejects_with_value_error_only(text):
    try:
        parse_udp_listen_spec(text)
    except ValueError:
        pass


@pytest.mark.parametrize("text", ["5353:db:53", "udp:db:53", "udp:x:db:53", "udp:1:db:0", "udp:[::1:1:db:53",
                                  "udp:1:2:3:4:5", "udp:70000:db:53"])
def test_bad_udp_listen_specs(text):
    with pytest.raises(ValueError):
        parse_udp_listen_spec(text)


def test_make_spec_local_forms_and_limits():
    addresses = [ipaddress.ip_address("198.18.0.1")]
    assert make_spec("udp:db:53", None, addresses).local_kind == "unix"
    spec = make_spec("udp:db:53", 0, addresses, idle_timeout=5, max_flows=10)
    assert (spec.local_kind, spec.bind_port, spec.idle_timeout, spec.max_flows) == ("udp", 0, 5.0, 10)
    assert make_spec("udp:db:53", "unix:/tmp/x", addresses).socket_dir == "/tmp/x"
    assert make_spec("udp:db:53", "[::1]:9", addresses).bind_host == "::1"
    for bad in ({"idle_timeout": 0}, {"max_flows": 0}):
        with pytest.raises(ValueError):
            make_spec("udp:db:53", 0, addresses, **bad)


# ---- who owns a UDP socket -----------------------------------------------------------------------------
TABLE_HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"


def _row(local_hex: str, port: int, uid: int) -> str:
    return (f"  1: {local_hex}:{port:04X} 00000000:0000 07 00000000:00000000 00:00000000 00000000 "
            f"{uid:5d}        0 12345 2 0000000000000000 0\n")


@pytest.mark.skipif(sys.byteorder != "little", reason="the sample rows are a little-endian machine's")
def test_udp_socket_owners_reads_proc_tables(tmp_path):
    v4 = tmp_path / "udp"
    v4.write_text(TABLE_HEADER + _row("0100007F", 40000, 1000) + _row("00000000", 40001, 0)
                  + _row("0100007F", 40002, 1000) + _row("0200007F", 40002, 65534))
    v6 = tmp_path / "udp6"
    v6.write_text(TABLE_HEADER + _row("00000000000000000000000001000000", 40003, 1000))  # ::1
    tables = (str(v4), str(v6))
    assert udp_socket_owners("127.0.0.1", 40000, tables) == {1000}
    assert udp_socket_owners("127.0.0.1", 40001, tables) == {0}  # a wildcard bind takes it too
    assert udp_socket_owners("127.0.0.1", 40002, tables) == {1000}
    assert udp_socket_owners("127.0.0.2", 40002, tables) == {65534}
    assert udp_socket_owners("::1", 40003, tables) == {1000}
    assert udp_socket_owners("127.0.0.1", 40009, tables) == set()
    assert udp_socket_owners("127.0.0.1", 40000, (str(tmp_path / "missing"),)) is None
