"""SOCKS5 negotiation (RFC 1928, with RFC 1929 username/password), sans-I/O.

`Socks5Negotiation.feed(bytes)` takes whatever the client sent, in any split, and returns what to do:
`Send(data)` (write it to the client), `Fail(data, reason)` (write `data`, possibly empty, then close) or
`Connect(host, port)` (the client's CONNECT: reach it, then answer with `reply(...)`) or
`UdpAssociate(host, port)` (section 7: open a UDP relay, answer with its address). It never raises on
malformed input and buffers at most MAX_NEGOTIATION_BYTES. No socket, no clock: the runtime's SOCKS server
(`wgmagic.runtime.services.socks`) drives it.
"""

from __future__ import annotations

import hmac
import ipaddress
import struct
from dataclasses import dataclass

VERSION = 5
NO_AUTH, USER_PASS, NO_ACCEPTABLE = 0x00, 0x02, 0xFF
CMD_CONNECT = 1
CMD_UDP_ASSOCIATE = 3
ATYP_IPV4, ATYP_DOMAIN, ATYP_IPV6 = 1, 3, 4
REP_SUCCEEDED = 0
REP_GENERAL_FAILURE = 1
REP_NOT_ALLOWED = 2
REP_NETWORK_UNREACHABLE = 3
REP_HOST_UNREACHABLE = 4
REP_CONNECTION_REFUSED = 5
REP_TTL_EXPIRED = 6
REP_COMMAND_NOT_SUPPORTED = 7
REP_ADDRESS_TYPE_NOT_SUPPORTED = 8

MAX_NEGOTIATION_BYTES = 1024  # greeting + auth + request are each < 520 bytes; more is a misbehaving client



def reply(code: int, bound: tuple[str, int] | None = None) -> bytes:
    """A SOCKS5 reply; BND.ADDR/PORT are the tunnel-side address when known, else zeros."""
    if bound is None:
        return struct.pack("!BBBB4sH", VERSION, code, 0, ATYP_IPV4, b"\x00" * 4, 0)
    address = ipaddress.ip_address(bound[0])
    atyp = ATYP_IPV4 if address.version == 4 else ATYP_IPV6
    return struct.pack("!BBBB", VERSION, code, 0, atyp) + address.packed + struct.pack("!H", bound[1])


@dataclass(frozen=True)
class Send:
    """Write `data` to the client and keep the connection."""

    data: bytes


@dataclass(frozen=True)
class Fail:
    """Send `data` (may be empty) and close the connection."""

    data: bytes
    reason: str


@dataclass(frozen=True)
class Connect:
    """A CONNECT request (RFC 1928 section 4): open a connection through the tunnel to `host`:`port`."""

    host: str  # an IP literal or a domain name to resolve through the tunnel
    port: int


@dataclass(frozen=True)
class UdpAssociate:
    """A UDP ASSOCIATE request (section 7): the address the client will send from (zeros: not known yet)."""

    host: str
    port: int


class Socks5Negotiation:
    """Parses greeting, optional RFC 1929 auth and the request; never raises on malformed input."""

    def __init__(self, credentials: tuple[str, str] | None = None) -> None:
        self.credentials = credentials
        self.buffer = bytearray()
        self.stage = "greeting"

    def __repr__(self) -> str:
        return f"<Socks5Negotiation stage={self.stage} auth={'on' if self.credentials else 'off'}>"

    def feed(self, data: bytes) -> list[Send | Fail | Connect | UdpAssociate]:
        if self.stage in ("done", "failed"):
            return []
        self.buffer += data
        if len(self.buffer) > MAX_NEGOTIATION_BYTES:
            self.stage = "failed"
            return [Fail(b"", "negotiation too long")]
        actions: list[Send | Fail | Connect | UdpAssociate] = []
        while self.stage not in ("done", "failed"):
            step = getattr(self, f"_{self.stage}")()
            if step is None:
                break
            actions.extend(step)
        return actions

    def _greeting(self) -> list[Send | Fail] | None:
        buf = self.buffer
        if len(buf) < 2:
            return None
        if buf[0] != VERSION:
            self.stage = "failed"
            return [Fail(b"", f"not SOCKS5 (version byte {buf[0]})")]
        count = buf[1]
        if len(buf) < 2 + count:
            return None
        methods = set(buf[2:2 + count])
        del buf[:2 + count]
        if self.credentials is not None:
            if USER_PASS in methods:
                self.stage = "auth"
                return [Send(bytes((VERSION, USER_PASS)))]
        elif NO_AUTH in methods:
            self.stage = "request"
            return [Send(bytes((VERSION, NO_AUTH)))]
        self.stage = "failed"
        return [Fail(bytes((VERSION, NO_ACCEPTABLE)), "no acceptable authentication method")]

    def _auth(self) -> list[Send | Fail] | None:
        buf = self.buffer
        if len(buf) < 2:
            return None
        if buf[0] != 1:
            self.stage = "failed"
            return [Fail(b"\x01\x01", "bad username/password sub-negotiation version")]
        ulen = buf[1]
        if len(buf) < 3 + ulen:
            return None
        plen = buf[2 + ulen]
        if len(buf) < 3 + ulen + plen:
            return None
        user = bytes(buf[2:2 + ulen])
        password = bytes(buf[3 + ulen:3 + ulen + plen])
        del buf[:3 + ulen + plen]
        assert self.credentials is not None
        want_user, want_password = (c.encode() for c in self.credentials)
        # Compare both fields in constant time so timing says nothing about which part was wrong.
        ok = hmac.compare_digest(user, want_user) & hmac.compare_digest(password, want_password)
        if not ok:
            self.stage = "failed"
            return [Fail(b"\x01\x01", "bad credentials")]
        self.stage = "request"
        return [Send(b"\x01\x00")]

    def _request(self) -> list[Send | Fail | Connect | UdpAssociate] | None:
        buf = self.buffer
        if len(buf) < 4:
            return None
        if buf[0] != VERSION or buf[2] != 0:
            self.stage = "failed"
            return [Fail(reply(REP_GENERAL_FAILURE), "malformed request")]
        command, atyp = buf[1], buf[3]
        if atyp == ATYP_IPV4:
            need = 4 + 4 + 2
        elif atyp == ATYP_IPV6:
            need = 4 + 16 + 2
        elif atyp == ATYP_DOMAIN:
            if len(buf) < 5:
                return None
            need = 4 + 1 + buf[4] + 2
        else:
            self.stage = "failed"
            return [Fail(reply(REP_ADDRESS_TYPE_NOT_SUPPORTED), f"address type {atyp}")]
        if len(buf) < need:
            return None
        if command == CMD_UDP_ASSOCIATE:
            return self._udp_associate(atyp, need)
        if command != CMD_CONNECT:
            self.stage = "failed"
            return [Fail(reply(REP_COMMAND_NOT_SUPPORTED), f"command {command} not supported")]
        port = int.from_bytes(buf[need - 2:need], "big")
        if atyp == ATYP_IPV4:
            host = str(ipaddress.IPv4Address(bytes(buf[4:8])))
        elif atyp == ATYP_IPV6:
            host = str(ipaddress.IPv6Address(bytes(buf[4:20])))
        else:
            raw = bytes(buf[5:5 + buf[4]])
            try:
                host = raw.decode("idna" if raw.isascii() else "utf-8").rstrip(".")
            except UnicodeError:
                host = ""
            if not host or "\x00" in host:
                self.stage = "failed"
                return [Fail(reply(REP_HOST_UNREACHABLE), "bad domain name")]
        del buf[:need]
        if port == 0:
            self.stage = "failed"
            return [Fail(reply(REP_GENERAL_FAILURE), "port 0")]
        self.stage = "done"
        return [Connect(host, port)]

    def _udp_associate(self, atyp: int, need: int) -> list[Send | Fail | Connect | UdpAssociate]:
        """UDP ASSOCIATE: DST.ADDR/DST.PORT name where the client will send from; zeros (or a name) when it
        does not know yet (section 7), and then the relay locks on to its first datagram."""
        buf = self.buffer
        port = int.from_bytes(buf[need - 2:need], "big")
        raw = bytes(buf[4:need - 2])
        del buf[:need]
        self.stage = "done"
        if atyp == ATYP_IPV4:
            return [UdpAssociate(str(ipaddress.IPv4Address(raw)), port)]
        if atyp == ATYP_IPV6:
            return [UdpAssociate(str(ipaddress.IPv6Address(raw)), port)]
        return [UdpAssociate("0.0.0.0", port)]
