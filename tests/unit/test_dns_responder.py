"""The gateway's DNS responder: answers from its name map, never raises on arbitrary bytes."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from wgmagic.netstack.dns import answer_query, build_query, parse_answer

NAMES = {"db.internal.": (ipaddress.ip_address("198.18.0.1"), ipaddress.ip_address("fd00::1"))}


def test_known_name_both_families_and_unknown_name():
    a = parse_answer(answer_query(build_query("db.internal", "A", 7), NAMES))
    assert a.query_id == 7 and a.rcode == "NOERROR" and [str(x) for x in a.addresses] == ["198.18.0.1"]
    aaaa = parse_answer(answer_query(build_query("DB.Internal.", "AAAA", 8), NAMES))
    assert [str(x) for x in aaaa.addresses] == ["fd00::1"]
    missing = parse_answer(answer_query(build_query("nothere.internal", "A", 9), NAMES))
    assert missing.rcode == "NXDOMAIN" and not missing.addresses
    mx = parse_answer(answer_query(build_query("db.internal", "MX", 10), NAMES))
    assert mx.rcode == "NOERROR" and not mx.addresses


def test_responses_are_not_answered():
    response = answer_query(build_query("db.internal", "A", 1), NAMES)
    assert answer_query(response, NAMES) is None


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_never_raise(data):
    reply = answer_query(data, NAMES)
    assert reply is None or len(reply) <= 512
