"""What a forward knows of its clients' protocol (wgmagic/proto/forwarding.py, wgmagic/proto/postgres.py): exact
bytes in, exact decisions out; any bytes never raise."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from wgmagic.proto.forwarding import NEUTRAL, ForwardProtocol, Goodbye
from wgmagic.proto.postgres import POSTGRES, error_response

SSL_REQUEST = bytes.fromhex("0000000804d2162f")
GSSENC_REQUEST = bytes.fromhex("0000000804d21630")
# A StartupMessage: length, protocol 3.0, "user" "app" NUL NUL.
STARTUP = struct.pack("!II", 4 + 4 + 9 + 1, 196608) + b"user\x00app\x00\x00"


def test_socket_names() -> None:
    assert POSTGRES.socket_name(5432) == ".s.PGSQL.5432"  # libpq: host=DIR port=5432
    assert POSTGRES.socket_name(15432) == ".s.PGSQL.15432"
    assert NEUTRAL.socket_name(3306) == "3306.sock"


def test_postgres_answers_an_encryption_request_no_then_awaits_the_startup() -> None:
    for request in (SSL_REQUEST, GSSENC_REQUEST):
        assert POSTGRES.goodbye(request, "wgmagic: refused") == Goodbye(b"N", error_response("wgmagic: refused"),
                                                                        await_next=True)


def test_postgres_says_why_at_once_to_any_other_opening() -> None:
    for opening in (STARTUP, b"", SSL_REQUEST[:7], SSL_REQUEST + STARTUP, b"\x00\x00\x00\x09\x04\xd2\x16\x2f\x00"):
        goodbye = POSTGRES.goodbye(opening, "why")
        assert goodbye == Goodbye(b"", error_response("why"))
    assert error_response("why") == (b"E" + struct.pack("!I", 4 + 27) + b"SFATAL\x00VFATAL\x00C08001\x00Mwhy\x00\x00")


def test_neutral_closes_without_a_word() -> None:
    assert NEUTRAL.goodbye(SSL_REQUEST, "why") is None
    assert NEUTRAL.goodbye(b"", "why") is None


def test_both_are_forward_protocols() -> None:
    protocols: list[ForwardProtocol] = [POSTGRES, NEUTRAL]  # mypy checks the structure
    assert [p.name for p in protocols] == ["postgresql", "neutral"]


@given(st.binary(max_size=200), st.text(max_size=100))
def test_any_opening_and_reason_never_raise(opening: bytes, reason: str) -> None:
    goodbye = POSTGRES.goodbye(opening, reason)
    assert goodbye.final[:1] == b"E" and struct.unpack("!I", goodbye.final[1:5])[0] == len(goodbye.final) - 1
    assert goodbye.await_next == (opening in (SSL_REQUEST, GSSENC_REQUEST))
    assert NEUTRAL.goodbye(opening, reason) is None
