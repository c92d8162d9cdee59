"""Which handshake messages the device takes in (whitepaper 5.3, 5.4.4, 5.4.7): the DoS mitigation.

Every handshake message must carry a valid mac1 (only someone who knows our public key can make one); under
load (load.py) a valid mac2 too, else the sender gets a cookie reply instead of a DH computation. Cookie replies
to our own initiations are taken in here as well. Owns: those checks and their drop counters. Never does I/O.
Knows the device only through `AdmissionHost`, what it uses of it (no import of device.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, TypeVar

from wgmagic.wireguard.messages import Initiation, Response, parse_cookie_reply

if TYPE_CHECKING:
    from collections import Counter

    from wgmagic.wireguard.cookie import CookieChecker
    from wgmagic.wireguard.indices import IndexTable
    from wgmagic.wireguard.load import LoadMonitor

_Handshake = TypeVar("_Handshake", Initiation, Response)


class AdmissionHost(Protocol):
    """What admission.py uses of the device that takes handshake messages in (`wgmagic.wireguard.device.Device`
    is one): its drop counters by reason, its mac1/mac2/cookie checker, its load monitor, its receiver-index
    table, the count of cookie replies sent, and its outgoing UDP queue."""

    cookie_replies_sent: int

    @property
    def drops(self) -> Counter[str]: ...

    @property
    def cookies(self) -> CookieChecker: ...

    @property
    def load(self) -> LoadMonitor: ...

    @property
    def indices(self) -> IndexTable: ...

    def send_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        """Queue one UDP payload to `addr` (ip, port)."""
        ...


def checked(device: AdmissionHost, data: bytes, parse: Callable[[bytes], _Handshake | None], mac1_at: int,
            mac2_at: int, addr: tuple[str, int], now: float) -> _Handshake | None:
    """The handshake message `parse` reads from `data` if it is well formed (else counted `malformed_handshake`)
    and its MACs pass (else counted `bad_mac1`, or answered with a cookie reply); None otherwise."""
    msg = parse(data)
    if msg is None:
        device.drops["malformed_handshake"] += 1
        return None
    cookies = device.cookies
    if not cookies.mac1_ok(data, mac1_at):
        device.drops["bad_mac1"] += 1
        return None
    if device.load.under_load(now) and not cookies.mac2_ok(data, mac2_at, addr, now):
        device.send_datagram(cookies.cookie_reply(data, mac1_at, msg.sender, addr, now), addr)
        device.cookie_replies_sent += 1
        return None
    return msg


def receive_cookie_reply(device: AdmissionHost, data: bytes, now: float) -> None:
    """A cookie reply to one of our handshake messages (5.4.7): its cookie goes into that peer's next mac2."""
    msg = parse_cookie_reply(data)
    if msg is None:
        device.drops["malformed_cookie_reply"] += 1
        return
    entry = device.indices.get(msg.receiver)
    if entry is None:
        device.drops["unknown_receiver_index"] += 1
        return
    if not entry[0].cookies.consume_reply(msg.nonce, msg.encrypted_cookie, now):
        device.drops["bad_cookie_reply"] += 1
