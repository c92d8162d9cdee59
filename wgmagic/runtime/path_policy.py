"""Which path a tunnel's datagrams take mid-session: the policy, decided here, carried out by path_watch.py.

Two rules, both triggered by the moment WireGuard itself notices a dead path (whitepaper 6.2-6.4): a handshake
initiation went unanswered for REKEY_TIMEOUT and its retransmission is due. With a session, that happens
KEEPALIVE_TIMEOUT + REKEY_TIMEOUT after data went unanswered (the new-handshake timer started the handshake),
then every REKEY_TIMEOUT; so 20 s, then 25 s, ... after the path died, inside the inner TCP's 30 s user timeout.

- `--via auto URL` (the whole session, not only `connect()`): on the primary transport (UDP), an unanswered
  handshake switches to the fallback transport (the last rung of transport.py's ladder: a WebSocket, or any
  other WebSocket-kind transport the registry holds). On the fallback, every `probe_interval` seconds a
  handshake initiation goes out over the primary transport (to each of the Endpoint's addresses in turn); when
  one is answered, the tunnel goes back to the primary.
- An Endpoint name with several addresses, no fallback transport: an unanswered handshake while a session is
  up moves to the name's next address (the WireGuard core, wgmagic/wireguard/endpoint.py, does the same
  without a session; with one it would wait for REJECT_AFTER_TIME, 180 s, before the keys expire).

Owns: those rules and the policy's own state (the transport in use, the next probe, the probe turn). Never does
I/O and reads no clock: `now` (seconds, monotonic) comes in; what the device shows of each peer comes in as a
`PeerPath`. `decide` returns `PathDecision`s; the caller carries them out and reports probe answers with
`probe_answered`.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from wgmagic.runtime.transport import TransportKind

Address = tuple[str, int]
UDP_PROBE_INTERVAL = 10.0  # seconds between handshake initiations over UDP while on the fallback transport


class PathAction(enum.Enum):
    """What a `PathDecision` asks of the caller."""

    NEXT_ADDRESS = "next_address"  # send to the peer at `address` from now on (Device.set_endpoint)
    SWITCH = "switch"  # carry the datagrams over `kind` from now on
    PROBE = "probe"  # send a handshake initiation to `address` over `kind` (the primary), keep the transport


@dataclass(frozen=True)
class PeerPath:
    """What the WireGuard device shows of one peer at `now` (read only).

    endpoint: where its datagrams go; candidates: its Endpoint name's addresses in order, `current` the index
    in use; has_session: a usable keypair; data_unanswered: the new-handshake timer fired (data went unanswered
    for KEEPALIVE_TIMEOUT + REKEY_TIMEOUT, wireguard/liveness.py) and nothing came since; retransmit_due: an
    initiation went unanswered for REKEY_TIMEOUT and its retransmission is due now."""

    public_key: bytes
    endpoint: Address | None
    candidates: tuple[Address, ...]
    current: int
    has_session: bool
    data_unanswered: bool
    retransmit_due: bool

    @property
    def handshake_unanswered(self) -> bool:
        """WireGuard's own notice that the path is dead: a handshake it needs went unanswered for
        REKEY_TIMEOUT (with a session: one started because data went unanswered)."""
        return self.retransmit_due and (self.data_unanswered or not self.has_session)


@dataclass(frozen=True)
class PathDecision:
    """One thing to do: `action`; `public_key`: the peer (None: the tunnel's transport); `address`: where to
    (NEXT_ADDRESS, PROBE); `kind`: which transport (SWITCH, PROBE); `reason`: one sentence for the log (no
    secret, no URL)."""

    action: PathAction
    reason: str
    public_key: bytes | None = None
    address: Address | None = None
    kind: TransportKind | None = None


class PathPolicy:
    """The path rules for one tunnel (see the module). primary: the transport the session starts on; fallback:
    the transport to leave for when the primary stops answering (None: no transport fallback, so only the
    Endpoint's addresses); probe_interval: seconds between probes of the primary while on the fallback."""

    def __init__(self, primary: TransportKind = TransportKind.UDP, fallback: TransportKind | None = None, *,
                 probe_interval: float = UDP_PROBE_INTERVAL) -> None:
        self.primary = primary
        self.fallback = fallback
        self.probe_interval = probe_interval
        self.kind = primary  # the transport in use, as this policy knows it
        self.next_probe_at: float | None = None
        self._probe_turn = 0
        self._answered_at: float | None = None

    def __repr__(self) -> str:
        return f"<PathPolicy on {self.kind} primary={self.primary} fallback={self.fallback}>"

    def follow(self, primary: TransportKind, fallback: TransportKind | None, kind: TransportKind,
               now: float) -> None:
        """From now on, the session may move between `primary` and `fallback`; it is on `kind` (where
        `connect()` ended up). On the fallback, the first probe is due `probe_interval` from `now`."""
        self.primary, self.fallback = primary, fallback
        self._transport_is(kind, now)

    def _transport_is(self, kind: TransportKind, now: float) -> None:
        self.kind = kind
        self._answered_at = None
        self.next_probe_at = now + self.probe_interval if self.on_fallback else None

    @property
    def on_fallback(self) -> bool:
        return self.fallback is not None and self.kind is self.fallback and self.kind is not self.primary

    def next_deadline(self) -> float | None:
        """When `decide` has something to do without a handshake timer (the next probe), or None."""
        return self.next_probe_at

    def probe_answered(self, now: float) -> None:
        """An authenticated message came in over the primary while on the fallback (a probe's answer)."""
        if self.on_fallback:
            self._answered_at = now

    def decide(self, now: float, peers: Sequence[PeerPath]) -> list[PathDecision]:
        """What to do at `now`, given what the device shows of each peer (call before the device's timers
        fire, so a retransmission that is due goes the new way). The policy assumes its SWITCH decisions are
        carried out."""
        if self.on_fallback:
            return self._on_fallback(now, peers)
        for peer in peers:
            if not peer.handshake_unanswered:
                continue
            if self.fallback is not None and self.fallback is not self.kind:
                fallback = self.fallback
                self._transport_is(fallback, now)
                return [PathDecision(PathAction.SWITCH, f"no answer over {self.primary} to a handshake "
                                     f"(WireGuard's REKEY_TIMEOUT): switching to {fallback}", kind=fallback)]
        decisions = []
        for peer in peers:
            if peer.handshake_unanswered and peer.has_session:
                address = _next_candidate(peer)
                if address is not None:
                    decisions.append(PathDecision(
                        PathAction.NEXT_ADDRESS, "no answer to a handshake (WireGuard's REKEY_TIMEOUT): trying "
                        "the Endpoint's next address", public_key=peer.public_key, address=address))
        return decisions

    def _on_fallback(self, now: float, peers: Sequence[PeerPath]) -> list[PathDecision]:
        if self._answered_at is not None:
            primary = self.primary
            self._transport_is(primary, now)
            return [PathDecision(PathAction.SWITCH, f"{primary} answers again: switching back to {primary}",
                                 kind=primary)]
        if self.next_probe_at is None or now < self.next_probe_at:
            return []
        self.next_probe_at = now + self.probe_interval
        decisions = []
        for peer in peers:
            addresses = peer.candidates or ((peer.endpoint,) if peer.endpoint else ())
            if not addresses:
                continue
            address = addresses[self._probe_turn % len(addresses)]
            decisions.append(PathDecision(PathAction.PROBE, f"probing {self.primary}", public_key=peer.public_key,
                                          address=address, kind=self.primary))
        self._probe_turn += 1
        return decisions


def _next_candidate(peer: PeerPath) -> Address | None:
    """The Endpoint name's address after the current one, or None (fewer than two, or the peer roamed off the
    list: an authenticated message moved it, so that address is the one that works)."""
    candidates = peer.candidates
    if len(candidates) < 2 or peer.current >= len(candidates) or peer.endpoint != candidates[peer.current]:
        return None
    return candidates[(peer.current + 1) % len(candidates)]
