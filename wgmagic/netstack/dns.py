"""A DNS stub resolver (RFC 1035), sans-I/O: which names to try, query bytes, what an answer says, and
`Resolver`, the machine that asks the tunnel's servers in turn.

Messages are built and parsed with dnspython. `Resolver` opens no socket and reads no clock: it tells its caller
what to send (`SendUdp`, `OpenTcp`, `SendTcp`, `CloseTcp`, pulled with `actions()`), is fed what came back
(`receive_udp`, `tcp_connected`, `receive_tcp`, `tcp_closed`) and the time (`handle_timer(now)` at
`next_timer()`), and ends with `addresses` or `error`.
"""

from __future__ import annotations

import ipaddress
import os
import struct
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdatatype

from wgmagic import explain
from wgmagic.errors import DNSTimeoutError, NameNotFoundError

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


# ---- the resolver machine -----------------------------------------------------------------------------
MAX_TCP_MESSAGE = 2 + 65535  # a DNS-over-TCP message with its length prefix (RFC 1035 4.2.2): the buffer's cap


@dataclass(frozen=True)
class SendUdp:
    """Send `data` (one query) from a UDP socket of `server`'s family to `server` port 53."""

    server: IPAddress
    data: bytes


@dataclass(frozen=True)
class OpenTcp:
    """Open a TCP connection to `server` port 53 (RFC 7766) and report it with `tcp_connected(stream)`."""

    stream: int
    server: IPAddress


@dataclass(frozen=True)
class SendTcp:
    """Write `data` (one length-prefixed query) on TCP connection `stream`."""

    stream: int
    data: bytes


@dataclass(frozen=True)
class CloseTcp:
    """Close TCP connection `stream`; the resolver wants nothing more from it."""

    stream: int


ResolverAction = SendUdp | OpenTcp | SendTcp | CloseTcp


class Resolver:
    """Resolve one name through a list of DNS servers: the search list, A then AAAA, retries, TCP on truncation.

    name: as the user gave it; `candidates(name, search, ndots)` decides the names tried, in order (glibc's
    rules). For each name, each type of `rdtypes` is asked of `servers` in turn: a query waits `timeout`
    seconds for its answer, then the next server is asked; each further round over the servers waits one
    `timeout` longer (resolv.conf's `attempts`: `attempts` rounds). An answer with the TC bit (RFC 1035
    4.1.1) is asked again over TCP of the same server (RFC 7766 5), waiting up to `timeout`; if TCP fails the
    truncated answer stands. NXDOMAIN for a name skips its other types and moves to the next name; the first
    name with addresses ends the search. `lifetime` (seconds, None: no limit) bounds the whole resolution.

    Answers from another source than the queried server's port 53, or whose id or question differ, are
    dropped and counted in `drops` ("unexpected_source", "mismatched"); they never raise. The resolver's
    first query is in `actions()` right after construction.

    Outcome once `done`: `addresses` (A answers first, then AAAA, as the server ordered them) and `answers`
    (every `Answer` that counted), or `error`: DNSTimeoutError when no server answered anything,
    NameNotFoundError otherwise (NXDOMAIN, no records, or a server error such as SERVFAIL).
    """

    def __init__(self, name: str, servers: Sequence[IPAddress], now: float, *, search: Sequence[str] = (),
                 rdtypes: Sequence[str] = ("A", "AAAA"), timeout: float = 2.0, attempts: int = 2,
                 lifetime: float | None = None, ndots: int = 1,
                 rng: Callable[[int], bytes] = os.urandom) -> None:
        self.name = name
        self.servers = tuple(servers)
        self.rdtypes = tuple(rdtypes)
        self.timeout = timeout
        self.attempts = max(1, attempts)
        self.rng = rng
        self.names = candidates(name, tuple(search), ndots)
        self.end = None if lifetime is None else now + lifetime
        self.drops: Counter[str] = Counter()
        self.addresses: tuple[IPAddress, ...] = ()
        self.answers: list[Answer] = []
        self.error: NameNotFoundError | DNSTimeoutError | None = None
        self.done = False
        self.tcp_fallbacks = 0
        self._actions: list[ResolverAction] = []
        self._failures: list[str] = []
        self._found: list[IPAddress] = []
        self._name_index = 0
        self._type_index = 0
        self._attempt = 0
        self._server_index = 0
        self._query_id = 0
        self._deadline: float | None = None
        self._stream = 0  # the TCP stream being waited on (0: none)
        self._tcp_buffer = bytearray()
        self._truncated: Answer | None = None
        if not self.servers:
            self._finish()
        else:
            self._ask(now)

    def __repr__(self) -> str:
        state = "done" if self.done else f"asking {self._qname()} {self._rdtype()}"
        return f"<Resolver {self.name!r} {state}>"

    # ---- outputs ----------------------------------------------------------------------------------------
    def actions(self) -> list[ResolverAction]:
        """What to do now, in order; drains."""
        actions, self._actions = self._actions, []
        return actions

    def pending(self) -> bool:
        """Whether `actions()` has something."""
        return bool(self._actions)

    def next_timer(self) -> float | None:
        """When `handle_timer` is due (seconds, the caller's clock), or None once done."""
        if self.done:
            return None
        if self.end is not None and (self._deadline is None or self.end < self._deadline):
            return self.end
        return self._deadline

    # ---- inputs -----------------------------------------------------------------------------------------
    def handle_timer(self, now: float) -> None:
        """Give up on whatever waited past its time: the lifetime, a TCP retry or a UDP query."""
        if self.done:
            return
        if self.end is not None and now >= self.end:
            self._close_tcp()
            self._failures.append("timeout")
            self._finish()
            return
        if self._deadline is None or now < self._deadline:
            return
        if self._stream:
            self._tcp_failed(now)
        else:
            self._next_server(now)

    def send_failed(self, now: float) -> None:
        """The query in the last SendUdp could not leave (no source address of the server's family): ask
        the next server at once."""
        if not self.done and not self._stream:
            self._next_server(now)

    def receive_udp(self, data: bytes, source: tuple[IPAddress, int], now: float) -> None:
        """A datagram arrived on the caller's UDP socket from `source` (ip, port)."""
        if self.done or self._stream or self._deadline is None or source != (self._server(), 53):
            self.drops["unexpected_source"] += 1
            return
        answer = self._matching(data)
        if answer is None:
            return
        if answer.truncated:
            self._truncated = answer
            self._stream = self.tcp_fallbacks = self.tcp_fallbacks + 1
            self._tcp_buffer.clear()
            self._deadline = now + self.timeout
            self._actions.append(OpenTcp(self._stream, self._server()))
            return
        self._answered(answer, now)

    def tcp_connected(self, stream: int, now: float) -> None:
        """TCP connection `stream` is established: the query goes out on it."""
        if self.done or stream != self._stream:
            return
        self._query_id = int.from_bytes(self.rng(2), "big")
        self._actions.append(SendTcp(stream, frame_tcp(build_query(self._qname(), self._rdtype(), self._query_id))))

    def receive_tcp(self, stream: int, data: bytes, now: float) -> None:
        """Bytes arrived on TCP connection `stream` (any split: they are buffered up to one message)."""
        if self.done or stream != self._stream:
            return
        room = MAX_TCP_MESSAGE - len(self._tcp_buffer)
        self._tcp_buffer += data[:room]
        message = unframe_tcp(bytes(self._tcp_buffer))
        if message is None:
            if room <= len(data):  # a full buffer still holds no message: cannot happen with a sane length
                self._tcp_failed(now)
            return
        answer = self._matching(message)
        if answer is None:
            self._tcp_failed(now)
            return
        self._close_tcp()
        self._answered(answer, now)

    def tcp_closed(self, stream: int, error: BaseException | None, now: float) -> None:
        """TCP connection `stream` ended (refused, reset, timed out, or closed by the server) before its answer."""
        if not self.done and stream == self._stream:
            self._tcp_failed(now)

    # ---- inside -----------------------------------------------------------------------------------------
    def _qname(self) -> str:
        return self.names[min(self._name_index, len(self.names) - 1)]

    def _rdtype(self) -> str:
        return self.rdtypes[min(self._type_index, len(self.rdtypes) - 1)]

    def _server(self) -> IPAddress:
        return self.servers[self._server_index]

    def _ask(self, now: float) -> None:
        self._query_id = int.from_bytes(self.rng(2), "big")
        self._deadline = now + self.timeout * (self._attempt + 1)
        self._actions.append(SendUdp(self._server(), build_query(self._qname(), self._rdtype(), self._query_id)))

    def _matching(self, data: bytes) -> Answer | None:
        answer = parse_answer(data)
        if answer is None or answer.query_id != self._query_id or answer.question != self._qname().lower():
            self.drops["mismatched"] += 1
            return None
        return answer

    def _next_server(self, now: float) -> None:
        self._server_index += 1
        if self._server_index == len(self.servers):
            self._server_index = 0
            self._attempt += 1
        if self._attempt >= self.attempts:
            self._failures.append("timeout")
            self._next_type(now)
        else:
            self._ask(now)

    def _close_tcp(self) -> None:
        if self._stream:
            self._actions.append(CloseTcp(self._stream))
            self._stream = 0
            self._tcp_buffer.clear()

    def _tcp_failed(self, now: float) -> None:
        self._close_tcp()
        truncated, self._truncated = self._truncated, None
        assert truncated is not None
        self._answered(truncated, now)

    def _answered(self, answer: Answer, now: float) -> None:
        self.answers.append(answer)
        self._deadline = None
        if answer.rcode == "NXDOMAIN":  # the name does not exist: its other types would not either
            if self._found:
                self._finish()
            else:
                self._next_name(now)
            return
        if answer.rcode != "NOERROR":
            self._failures.append(answer.rcode)
        self._found.extend(answer.addresses)
        self._next_type(now)

    def _next_type(self, now: float) -> None:
        self._type_index += 1
        self._attempt = self._server_index = 0
        if self._type_index < len(self.rdtypes):
            self._ask(now)
        elif self._found:
            self._finish()
        else:
            self._next_name(now)

    def _next_name(self, now: float) -> None:
        self._name_index += 1
        self._type_index = self._attempt = self._server_index = 0
        if self._name_index < len(self.names):
            self._ask(now)
        else:
            self._finish()

    def _finish(self) -> None:
        self.done = True
        self._deadline = None
        if self._found:
            self.addresses = tuple(self._found)
            return
        servers = [str(s) for s in self.servers]
        if not self.servers:
            self.error = NameNotFoundError(str(explain.no_dns_server(self.name)))
        elif self._failures and all(f == "timeout" for f in self._failures):
            self.error = DNSTimeoutError(str(explain.dns_timed_out(self.name, servers)))
        else:
            self.error = NameNotFoundError(str(explain.name_not_found(self.name, servers)))
