"""Which address a peer's datagrams go to (whitepaper 2.1 roaming; wg-quick's Endpoint name): the policy.

A peer's configured Endpoint name may have several addresses (the system resolver's order, RFC 6724). The
device uses one at a time, `Peer.endpoint`, and moves on by these rules, all decided here:

- a handshake initiation to the current address went unanswered (its retransmission is due, REKEY_TIMEOUT
  passed): the retransmission goes to the next address (`next_on_timeout`);
- the transport reports ICMP port unreachable: the next address at once, the initiation resent now, at most
  once per address in a row (no storm; then the timed rule again) (`next_on_refused`);
- every address refused REFUSALS_IN_A_ROW handshake initiations with no answer from the peer in between (one
  stray ICMP message ends nothing): the Endpoint is *refused everywhere* (`refused_everywhere`); the device
  keeps retrying as before, the caller waiting for a first handshake may give up at once;
- a peer with a session, or one that roamed (an authenticated message moved its endpoint to an address that is
  not the current candidate), stays put.

Owns: the candidate list, which one is current, the refused mark and the refusals per address. Never does I/O;
`now` comes in. Every move the device makes is reported as a `PeerEndpointChanged` event with its
`EndpointReason`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

Address = tuple[str, int]

REFUSALS_IN_A_ROW = 2  # ICMP port unreachable answers per address before the address counts as refusing


class EndpointReason(enum.Enum):
    """Why the device's endpoint for a peer changed (`PeerEndpointChanged.reason`)."""

    ROAMED = "roamed"  # an authenticated message came from a new address (whitepaper 2.1)
    NEXT_ADDRESS = "next_address"  # the Endpoint name's next address, after no answer or a refusal
    SET = "set"  # the caller set it (as `wg set <if> peer <key> endpoint`): the name resolved elsewhere


@dataclass
class EndpointCandidates:
    """The addresses an Endpoint name resolved to, in order; `index`: the one in use. `quick_moves`: moves on
    "port unreachable" since the last timed one (bounded by len - 1). `refused`: the last answer was ICMP port
    unreachable (cleared by a handshake or a new address). `refusals`: per address, the handshake initiations
    refused with ICMP port unreachable since the peer last answered (`answered` clears them)."""

    addresses: list[Address] = field(default_factory=list)
    index: int = 0
    quick_moves: int = 0
    refused: bool = False
    refusals: dict[Address, int] = field(default_factory=dict)

    @property
    def current(self) -> Address | None:
        return self.addresses[self.index] if self.index < len(self.addresses) else None

    def replace(self, addresses: list[Address], endpoint: Address | None) -> bool:
        """New addresses for the name; True if `endpoint` is among them (the index then points at it)."""
        self.addresses = list(addresses)
        self.refusals = {a: n for a, n in self.refusals.items() if a in self.addresses}
        if endpoint in self.addresses:
            self.index = self.addresses.index(endpoint)
            return True
        self.index = 0
        return False

    def moved_to(self, endpoint: Address) -> None:
        """The caller put the peer on `endpoint`: it becomes current (if a candidate), the marks reset."""
        if endpoint in self.addresses:
            self.index = self.addresses.index(endpoint)
        self.refused = False
        self.quick_moves = 0

    def _advance(self) -> Address:
        self.index = (self.index + 1) % len(self.addresses)
        self.refused = False
        return self.addresses[self.index]

    def next_on_timeout(self, endpoint: Address | None) -> Address | None:
        """The handshake's retransmission is due and went unanswered at `endpoint`: the next address, or None
        to stay (fewer than two addresses, or the peer roamed off the list)."""
        if len(self.addresses) < 2 or endpoint != self.current:
            return None
        self.quick_moves = 0
        return self._advance()

    def next_on_refused(self, endpoint: Address | None) -> Address | None:
        """ICMP port unreachable for the handshake initiation sent to `endpoint`: counted against it; the next
        address to resend to now, or None (see the module's rules)."""
        self.refused = True
        if endpoint is not None:
            self.refusals[endpoint] = min(self.refusals.get(endpoint, 0) + 1, REFUSALS_IN_A_ROW)
        if len(self.addresses) < 2 or self.quick_moves >= len(self.addresses) - 1 or endpoint != self.current:
            return None
        self.quick_moves += 1
        return self._advance()

    def refused_everywhere(self) -> bool:
        """True when every address refused REFUSALS_IN_A_ROW initiations since the peer last answered (ICMP port
        unreachable: nothing listens on that UDP port, wherever the name points)."""
        return bool(self.addresses) and all(self.refusals.get(a, 0) >= REFUSALS_IN_A_ROW for a in self.addresses)

    @property
    def refusing(self) -> bool:
        """What a failed handshake is blamed on: the last answer was ICMP port unreachable (`refused`), or every
        address refused (`refused_everywhere`, which a new address list leaves standing for those it keeps)."""
        return self.refused or self.refused_everywhere()

    def answered(self) -> None:
        """An authenticated message came from the peer: the refusals so far no longer count (`refused`, the
        mark of the last answer, stays until a handshake or a new address)."""
        self.refusals.clear()
