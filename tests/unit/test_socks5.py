import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from wgmagic.proto.socks5 import (
    REP_ADDRESS_TYPE_NOT_SUPPORTED,
    REP_COMMAND_NOT_SUPPORTED,
    Connect,
    Fail,
    Send,
    Socks5Negotiation,
)


def connect_request(atyp: int, addr: bytes, port: int, cmd: int = 1) -> bytes:
    return bytes((5, cmd, 0, atyp)) + addr + struct.pack("!H", port)


def test_no_auth_connect_ipv4_in_one_chunk_and_byte_by_byte():
    data = b"\x05\x01\x00" + connect_request(1, bytes((198, 18, 0, 1)), 5432)
    assert Socks5Negotiation().feed(data) == [Send(b"\x05\x00"), Connect("198.18.0.1", 5432)]
    neg = Socks5Negotiation()
    actions = []
    for byte in data:
        actions += neg.feed(bytes((byte,)))
    assert actions == [Send(b"\x05\x00"), Connect("198.18.0.1", 5432)]


def test_domain_and_ipv6():
    name = b"db.internal"
    neg = Socks5Negotiation()
    out = neg.feed(b"\x05\x01\x00" + connect_request(3, bytes((len(name),)) + name, 5432))
    assert out[-1] == Connect("db.internal", 5432)
    neg = Socks5Negotiation()
    out = neg.feed(b"\x05\x01\x00" + connect_request(4, bytes(15) + b"\x01", 80))
    assert out[-1] == Connect("::1", 80)


def test_username_password():
    neg = Socks5Negotiation(("alice", "s3cret"))
    assert neg.feed(b"\x05\x02\x00\x02") == [Send(b"\x05\x02")]
    assert neg.feed(b"\x01\x05alice\x06s3cret") == [Send(b"\x01\x00")]
    bad = Socks5Negotiation(("alice", "s3cret"))
    bad.feed(b"\x05\x01\x02")
    (fail,) = bad.feed(b"\x01\x05alice\x05wrong")
    assert isinstance(fail, Fail) and fail.data == b"\x01\x01"
    assert "s3cret" not in repr(bad)


def test_rejections_use_the_rfc_replies():
    (fail,) = Socks5Negotiation(("u", "p")).feed(b"\x05\x01\x00")  # only no-auth offered but auth required
    assert fail.data == b"\x05\xff"
    out = Socks5Negotiation().feed(b"\x05\x01\x00" + connect_request(1, bytes(4), 80, cmd=2))
    assert isinstance(out[-1], Fail) and out[-1].data[1] == REP_COMMAND_NOT_SUPPORTED
    out = Socks5Negotiation().feed(b"\x05\x01\x00" + bytes((5, 1, 0, 9)))
    assert isinstance(out[-1], Fail) and out[-1].data[1] == REP_ADDRESS_TYPE_NOT_SUPPORTED
    (fail,) = Socks5Negotiation().feed(b"\x04\x01\x00\x50")
    assert isinstance(fail, Fail)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=8), st.booleans())
def test_fuzz_never_raises_and_stays_bounded(chunks, with_auth):
    neg = Socks5Negotiation(("user", "pw") if with_auth else None)
    for chunk in chunks:
        for action in neg.feed(chunk):
            assert isinstance(action, (Send, Fail, Connect))
        assert len(neg.buffer) <= 1024 + 300


def test_postgres_error_response_bytes():
    from wgmagic.proto.postgres import error_response

    data = error_response("wgmagic: nope")
    assert data == b"E" + struct.pack("!I", 4 + 37) + b"SFATAL\x00VFATAL\x00C08001\x00Mwgmagic: nope\x00\x00"
