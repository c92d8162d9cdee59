"""DNS stub-resolver pieces (RFC 1035), sans-I/O: which names to try, query bytes, what an answer says.

Messages are built and parsed with dnspython; the runtime sends them over the tunnel's UDP (and TCP when an
answer comes back truncated) and drives retries and timeouts.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdatatype

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_LENGTH = struct.Struct("!H")


def candidates(name: str, search: tuple[str, ...], ndots: int = 1) -> list[str]:
    """Names to try, in order, as glibc does: as given first when it has at least ndots dots."""
    name = name.strip()
    if name.endswith("."):
        return [name]
    with_search = [f"{name}.{domain}." for domain in search]
    if name.count(".") >= ndots:
        return [f"{name}.", *with_search]
    return [*with_search, f"{name}."]


def build_query(name: str, rdtype: str, query_id: int) -> bytes:
    """A DNS query for `name` (an absolute or relative name) of `rdtype` ("A", "AAAA", ...) with the given
    16-bit id, as wire bytes (RFC 1035 4.1); recursion desired."""
    message = dns.message.make_query(name, rdtype)
    message.id = query_id
    return message.to_wire()


@dataclass(frozen=True)
class Answer:
    """What a response says: its id, rcode ("NOERROR", "NXDOMAIN", ...), the TC bit (RFC 1035 4.1.1),
    the A/AAAA addresses in the answer section, and the question's name."""

    query_id: int
    rcode: str  # "NOERROR", "NXDOMAIN", "SERVFAIL", ...
    truncated: bool
    addresses: tuple[IPAddress, ...]
    question: str


def parse_answer(data: bytes) -> Answer | None:
    """None for anything that is not a well-formed DNS response."""
    try:
        message = dns.message.from_wire(data, ignore_trailing=True)
    except (dns.exception.DNSException, ValueError, IndexError):
        return None
    if not message.flags & dns.flags.QR or not message.question:
        return None
    addresses: list[IPAddress] = []
    for rrset in message.answer:
        if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            addresses.extend(ipaddress.ip_address(r.address) for r in rrset)
    return Answer(message.id, dns.rcode.to_text(message.rcode()), bool(message.flags & dns.flags.TC),
                  tuple(addresses), message.question[0].name.to_text().lower())


def frame_tcp(query: bytes) -> bytes:
    """DNS over TCP prefixes each message with its 2-byte length (RFC 1035 4.2.2)."""
    return _LENGTH.pack(len(query)) + query


def unframe_tcp(buffer: bytes) -> bytes | None:
    """The first DNS message of a TCP stream buffer (two-byte length prefix, RFC 1035 4.2.2), or None until
    it is complete."""
    if len(buffer) < 2:
        return None
    (length,) = _LENGTH.unpack_from(buffer)
    return buffer[2:2 + length] if len(buffer) >= 2 + length else None


def answer_query(data: bytes, names: dict[str, tuple[IPAddress, ...]], ttl: int = 30) -> bytes | None:
    """A responder's reply to one query (the gateway's `--name` map): A/AAAA for names it knows, an empty
    answer for a known name without that family, NXDOMAIN otherwise. None for anything not a plain query."""
    try:
        query = dns.message.from_wire(data, ignore_trailing=True)
    except (dns.exception.DNSException, ValueError, IndexError):
        return None
    if query.flags & dns.flags.QR or len(query.question) != 1 or query.opcode() != 0:
        return None
    question = query.question[0]
    response = dns.message.make_response(query)
    response.flags |= dns.flags.AA
    name = question.name.to_text().lower()
    known = names.get(name) if name.endswith(".") else None
    if known is None:
        response.set_rcode(dns.rcode.NXDOMAIN)
    else:
        wanted = {dns.rdatatype.A: 4, dns.rdatatype.AAAA: 6}.get(question.rdtype)
        matching = [a for a in known if a.version == wanted]
        if matching:
            rrset = response.find_rrset(response.answer, question.name, question.rdclass, question.rdtype,
                                        create=True)
            for address in matching:
                rrset.add(dns.rdata.from_text(question.rdclass, question.rdtype, str(address)), ttl)
    try:
        return response.to_wire(max_size=512)
    except dns.exception.TooBig:
        response.flags |= dns.flags.TC
        response.answer.clear()
        return response.to_wire()
