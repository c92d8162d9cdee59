"""A WireGuard device, sans-I/O: many peers, dispatch by receiver index, cryptokey routing, timers.

Inputs: receive_datagram(data, addr, now), send_packet(ip_packet, now), handle_timers(now), and what the
caller learns about the way to the peer: endpoint_refused(now), set_endpoint / set_endpoint_addresses.
Outputs (drained by the caller): datagrams_to_send(), packets_received(), events() (`WireGuardEvent`s); and
decisions it is asked for: not_answering_since(key, now) (liveness.py), next_timer().
The whitepaper's sections: messages 5.4, cryptokey routing 2.1 (`allowedips.py`), timers 6, cookies 5.4.7.
Split by concern: receiver indices (`indices.py`), load (`load.py`), which address (`endpoint.py`), whether
the peer answers (`liveness.py`). Never does I/O, never reads a clock or randomness of its own.
"""

from __future__ import annotations

import ipaddress
import os
import struct
from collections import Counter
from collections.abc import Callable, Iterable

from cryptography.exceptions import InvalidTag

from wgmagic.wireguard import admission, crypto, expiry, liveness
from wgmagic.wireguard.allowedips import AllowedIPs
from wgmagic.wireguard.cookie import CookieChecker
from wgmagic.wireguard.endpoint import EndpointReason
from wgmagic.wireguard.events import HandshakeCompleted, PeerEndpointChanged, WireGuardEvent
from wgmagic.wireguard.handshake import (
    consume_initiation,
    consume_response,
    create_initiation,
    create_response,
    timestamp_newer,
)
from wgmagic.wireguard.indices import IndexTable
from wgmagic.wireguard.keypair import Keypair
from wgmagic.wireguard.load import LoadMonitor
from wgmagic.wireguard.messages import (
    COOKIE_REPLY,
    INITIATION,
    INITIATION_MAC1_AT,
    INITIATION_MAC2_AT,
    RESPONSE,
    RESPONSE_MAC1_AT,
    RESPONSE_MAC2_AT,
    TRANSPORT,
    TRANSPORT_HEADER,
    TRANSPORT_MIN_LEN,
    message_type,
    parse_initiation,
    parse_response,
)
from wgmagic.wireguard.peer import Peer
from wgmagic.wireguard.timers import Timers

_NONCE_PREFIX = bytes(4)
_NONCE = struct.Struct("<4xQ")  # the AEAD nonce: 32 zero bits, then the 64-bit counter (whitepaper 5.4.6)
_PADDING = [bytes(n) for n in range(16)]
_TRANSPORT_PREFIX = bytes((TRANSPORT, 0, 0, 0))
MAX_QUEUED_EVENTS = 4096
MAX_QUEUED_PACKETS = 65536
# A peer may not start handshakes faster than this (wireguard-go's HandshakeInitationRate): a flood from one
# key cannot make us burn CPU on DH.
MIN_INITIATION_INTERVAL = 1 / 50


class Device:
    """One WireGuard interface: our static key, its peers, and the protocol state between them.

    `private_key`: 32 raw bytes (ValueError otherwise). `timers`: the whitepaper's constants (shrink them in
    tests). `rng(n) -> n bytes` supplies indices, jitter, ephemeral keys and cookie secrets. `wall_clock()`
    gives the TAI64N timestamp's wall time (seconds since the epoch; default: `now`). Under more than
    `under_load_threshold` initiations a second, handshakes must carry a valid mac2 (whitepaper 5.3).
    Never raises from `receive_datagram` or `handle_timers`: bad input is counted in `drops`.
    """

    def __init__(self, private_key: bytes, *, timers: Timers | None = None,
                 rng: Callable[[int], bytes] = os.urandom, max_queued_per_peer: int = 1024,
                 wall_clock: Callable[[], float] | None = None, under_load_threshold: int = 512) -> None:
        self.static = crypto.StaticKey(private_key)
        self.timers = timers or Timers()
        self.rng = rng
        self.wall_clock = wall_clock
        self.max_queued_per_peer = max_queued_per_peer
        self.cookies = CookieChecker(self.static.public, rng, self.timers.cookie_refresh_time)
        self.peers: dict[bytes, Peer] = {}
        self.indices = IndexTable(rng)
        self.allowed_ips: AllowedIPs[Peer] = AllowedIPs()
        self._out: list[tuple[bytes, tuple[str, int]]] = []
        self._in: list[bytes] = []
        self._events: list[WireGuardEvent] = []
        self.drops: Counter[str] = Counter()
        self.load = LoadMonitor(under_load_threshold)
        self.cookie_replies_sent = 0

    def __repr__(self) -> str:
        public = crypto.encode_key(self.static.public)
        return f"<Device public={public[:8]}... peers={len(self.peers)}>"

    # ---- configuration -------------------------------------------------------------------------------
    def add_peer(self, public_key: bytes, *, preshared_key: bytes | None = None,
                 allowed_ips: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network] = (),
                 endpoint: tuple[str, int] | None = None, persistent_keepalive: float | None = None,
                 candidates: list[tuple[str, int]] | None = None) -> Peer:
        """Add a peer by its 32-byte public key (ValueError otherwise); `endpoint` is an already-resolved
        (ip, port), `candidates` all the addresses its Endpoint name has (endpoint.py moves between them;
        default: just `endpoint`); `persistent_keepalive` in seconds (None or 0: off). Its AllowedIPs join the
        routing table."""
        if len(public_key) != 32:
            raise ValueError("a peer's public key is 32 bytes")
        try:
            precomputed = self.static.dh(public_key)
        except ValueError:
            precomputed = bytes(32)  # a low-order key: no handshake with it can ever authenticate
        peer = Peer(public_key, preshared_key=preshared_key, allowed_ips=tuple(allowed_ips), endpoint=endpoint,
                    candidates=candidates, persistent_keepalive=persistent_keepalive, precomputed_ss=precomputed,
                    timers=self.timers, max_queued=self.max_queued_per_peer)
        self.peers[public_key] = peer
        for net in peer.allowed_ips:
            self.allowed_ips.insert(net, peer)
        return peer

    def peer(self, public_key: bytes) -> Peer:
        """The peer with this public key (KeyError if none)."""
        return self.peers[public_key]

    # ---- the way to the peer (endpoint.py) and whether it answers (liveness.py) ---------------------------
    def set_endpoint(self, public_key: bytes, endpoint: tuple[str, int], now: float) -> None:
        """Send to the peer at `endpoint` from now on (as `wg set ... endpoint`); without a session, a
        handshake starts there at once. Reported as PeerEndpointChanged(reason=SET)."""
        peer = self.peers[public_key]
        peer.candidates.moved_to(endpoint)
        if peer.endpoint != endpoint:
            peer.endpoint = endpoint
            self.announce(PeerEndpointChanged(public_key, endpoint, EndpointReason.SET))
        if not peer.has_session(now):
            self.send_initiation(peer, now, retry=False)

    def set_endpoint_addresses(self, public_key: bytes, addresses: list[tuple[str, int]]) -> bool:
        """The peer's Endpoint name resolved to `addresses` (in order) now; True if the peer's endpoint is
        among them (else the caller decides whether to `set_endpoint`: the peer may have roamed)."""
        peer = self.peers[public_key]
        return peer.candidates.replace(addresses, peer.endpoint)

    def endpoint_refused(self, now: float) -> None:
        """The transport got ICMP port unreachable for something sent (it cannot say to which peer): each
        peer whose handshake is in flight moves to its name's next address and resends now (endpoint.py)."""
        for peer in self.peers.values():
            if peer.has_session(now) or peer.retransmit_at is None:
                peer.candidates.refused = True
                continue
            if (moved := peer.candidates.next_on_refused(peer.endpoint)) is not None:
                self.move_endpoint(peer, moved)
                expiry.retransmit_handshake(self, peer, now, move=False)  # there now, not after REKEY_TIMEOUT
        self.handle_timers(now)

    def move_endpoint(self, peer: Peer, endpoint: tuple[str, int]) -> None:
        """Send to `peer` at `endpoint`, its name's next address, from now on (as PeerEndpointChanged)."""
        peer.endpoint = endpoint
        self.announce(PeerEndpointChanged(peer.public_key, endpoint, EndpointReason.NEXT_ADDRESS))

    def not_answering_since(self, public_key: bytes, now: float) -> float | None:
        """When the peer stopped answering (seconds, monotonic), or None while it answers (liveness.py)."""
        return liveness.not_answering_since(self.peers[public_key], self.timers, now)

    # ---- outputs --------------------------------------------------------------------------------------
    def datagrams_to_send(self) -> list[tuple[bytes, tuple[str, int]]]:
        """UDP payloads to send and where to, drained."""
        out, self._out = self._out, []
        return out

    def pending(self) -> bool:
        """Whether `datagrams_to_send()`, `packets_received()` or `events()` has something now."""
        return bool(self._out or self._in or self._events)

    def packets_received(self) -> list[bytes]:
        """Decrypted inner IP packets that passed cryptokey routing, drained (at most MAX_QUEUED_PACKETS)."""
        packets, self._in = self._in, []
        return packets

    def events(self) -> list[WireGuardEvent]:
        """Events since the last call, drained (at most MAX_QUEUED_EVENTS kept)."""
        events, self._events = self._events, []
        return events

    def send_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        """Queue one UDP payload to `addr` (ip, port) for the next datagrams_to_send()."""
        self._out.append((data, addr))

    def announce(self, event: WireGuardEvent) -> None:
        """Queue `event` for the next events() (dropped beyond MAX_QUEUED_EVENTS)."""
        if len(self._events) < MAX_QUEUED_EVENTS:
            self._events.append(event)

    # ---- routing ---------------------------------------------------------------------------------------
    def route(self, packet: bytes | memoryview) -> Peer | None:
        """The peer whose AllowedIPs hold the IP packet's destination, by longest prefix (whitepaper 2.1);
        None for no match or a packet too short to carry a destination."""
        if not packet:
            return None
        version = packet[0] >> 4
        if version == 4 and len(packet) >= 20:
            dst = bytes(packet[16:20])
        elif version == 6 and len(packet) >= 40:
            dst = bytes(packet[24:40])
        else:
            return None
        return self.allowed_ips.routes_raw(dst)

    # ---- sending ---------------------------------------------------------------------------------------
    def send_packet(self, ip_packet: bytes, now: float) -> bool:
        """Encrypt an IP packet to the peer its destination routes to; without a session, queue it (bounded,
        oldest dropped) and start a handshake. False if no peer's AllowedIPs hold the destination (counted)."""
        peer = self.route(ip_packet)
        if peer is None:
            self.drops["no_route"] += 1
            return False
        keypair = peer.current
        if peer.usable(keypair, now):
            self._encrypt_and_send(peer, keypair, ip_packet, now)  # type: ignore[arg-type]
            timers = self.timers
            if keypair.initiator and (now - keypair.created >= timers.rekey_after_time  # type: ignore[union-attr]
                                      or keypair.send_counter >= timers.rekey_after_messages):  # type: ignore[union-attr]
                self.send_initiation(peer, now, retry=False)
        else:
            if not peer.stage(bytes(ip_packet)):
                self.drops["queue_full"] += 1
            self.send_initiation(peer, now, retry=False)
        return True

    def _encrypt_and_send(self, peer: Peer, keypair: Keypair, packet: bytes, now: float) -> None:
        if peer.endpoint is None:
            self.drops["no_endpoint"] += 1
            return
        pad = -len(packet) % 16
        if pad:
            packet = bytes(packet) + _PADDING[pad]
        counter = keypair.send_counter
        keypair.send_counter = counter + 1
        sealed = keypair.send_aead.encrypt(_NONCE.pack(counter), packet, None)
        self._out.append((TRANSPORT_HEADER.pack(TRANSPORT, keypair.remote_index, counter) + sealed, peer.endpoint))
        peer.tx_bytes += len(sealed) + 16
        peer.tx_packets += 1
        peer.last_send = now
        # Any packet sent satisfies the keepalive obligation; data (not keepalives) wants an answer.
        peer.keepalive_at = None
        if packet and peer.new_handshake_at is None:
            peer.new_handshake_at = now + self.timers.keepalive_timeout + self.timers.rekey_timeout
        if peer.persistent_keepalive:
            peer.persistent_at = now + peer.persistent_keepalive

    def send_keepalive_to(self, peer: Peer, now: float, *, persistent: bool = False) -> None:
        """A keepalive to `peer` if a session is up; else, if `persistent` (it keeps a path open), a handshake (6.5)."""
        if peer.usable(peer.current, now):
            peer.keepalives_sent += 1
            self._encrypt_and_send(peer, peer.current, b"", now)  # type: ignore[arg-type]
        elif persistent:
            self.send_initiation(peer, now, retry=False)

    def send_keepalive(self, public_key: bytes, now: float) -> None:
        """An empty transport message to the peer now, if a session is up: after the way below changed (a
        WebSocket reopened, so a new source address at the peer), the peer learns it from this authenticated
        packet instead of sending into the old one until we next have data (whitepaper section 6.5)."""
        if (peer := self.peers.get(public_key)) is not None:
            self.send_keepalive_to(peer, now)

    def initiate_handshake(self, public_key: bytes, now: float, *, force: bool = False) -> None:
        """Start a handshake now unless a session exists or one is already in flight; `force`: a fresh one now
        whatever the session (a probe of another path, runtime/path_policy.py)."""
        peer = self.peers[public_key]
        if force:
            peer.retransmit_at = peer.last_handshake_sent = None
        if force or not peer.has_session(now):
            self.send_initiation(peer, now, retry=False)

    def send_initiation(self, peer: Peer, now: float, *, retry: bool) -> None:
        """A handshake initiation to `peer` (5.4.2). Unless `retry` (6.4), none while one is in flight or within
        REKEY_TIMEOUT of the last; counted `no_endpoint` without an endpoint."""
        if not retry:
            if peer.retransmit_at is not None:
                return  # one is in flight; its retransmissions carry on
            if peer.last_handshake_sent is not None and now - peer.last_handshake_sent < self.timers.rekey_timeout:
                return
            peer.handshake_attempts = 0
        if peer.endpoint is None:
            self.drops["no_endpoint"] += 1
            return
        if peer.handshake is not None:
            self.indices.forget(peer.handshake.sender_index)
        index = self.indices.new_index()
        wall = self.wall_clock() if self.wall_clock else now
        message, state = create_initiation(self.static, peer.public_key, index, wall, peer.precomputed_ss,
                                           ephemeral=self.rng(32))
        state.sent_at = now
        peer.handshake = state
        self.indices.set(index, peer, None)
        self._out.append((peer.cookies.add_macs(message, INITIATION_MAC1_AT, now), peer.endpoint))
        peer.handshake_initiations_sent += 1
        peer.last_handshake_sent = now
        peer.last_send = now
        jitter = int.from_bytes(self.rng(2), "big") / 65535 * self.timers.rekey_timeout_jitter
        peer.retransmit_at = now + self.timers.rekey_timeout + jitter

    # ---- receiving -------------------------------------------------------------------------------------
    def receive_datagram(self, data: bytes, addr: tuple[str, int], now: float) -> None:
        """One UDP payload from `addr` at `now`: a handshake message, cookie reply or transport message
        (whitepaper 5.4). Never raises; what fails is counted in `drops` by reason."""
        try:
            if data[:4] == _TRANSPORT_PREFIX:  # message_type(data) == TRANSPORT, without the call
                self._receive_transport(data, addr, now)
                return
            kind = message_type(data)
            if kind == INITIATION:
                self._receive_initiation(data, addr, now)
            elif kind == RESPONSE:
                self._receive_response(data, addr, now)
            elif kind == COOKIE_REPLY:
                admission.receive_cookie_reply(self, data, now)
            else:
                self.drops["unknown_type" if len(data) >= 4 else "short"] += 1
        except Exception:  # an input we did not foresee must never reach the caller as an exception
            self.drops["internal_error"] += 1

    def _receive_transport(self, data: bytes, addr: tuple[str, int], now: float) -> None:
        if len(data) < TRANSPORT_MIN_LEN:
            self.drops["short"] += 1
            return
        _, receiver, counter = TRANSPORT_HEADER.unpack_from(data)
        peer, keypair = self.indices.get(receiver) or (None, None)
        if peer is None or keypair is None:
            self.drops["unknown_receiver_index"] += 1
            return
        timers = self.timers
        if now - keypair.created >= timers.reject_after_time or counter >= timers.reject_after_messages:
            self.drops["expired_keypair"] += 1
            return
        if not keypair.replay.check(counter):
            self.drops["replay"] += 1
            return
        try:
            plain = keypair.receive_aead.decrypt(_NONCE_PREFIX + data[8:16], data[16:], None)
        except InvalidTag:
            self.drops["decrypt_failed"] += 1
            return
        if not keypair.replay.record(counter):
            self.drops["replay"] += 1
            return
        if keypair is peer.next:
            self._confirm_next(peer, keypair, now)
        self._authenticated_from(peer, addr, now, len(data))
        if (keypair is peer.current and keypair.initiator and not peer.rekey_requested_by_receive
                and now - keypair.created >= timers.reject_after_time - timers.keepalive_timeout
                - timers.rekey_timeout):
            peer.rekey_requested_by_receive = True
            self.send_initiation(peer, now, retry=False)
        if not plain:
            return  # a keepalive
        if peer.keepalive_at is None:
            peer.keepalive_at = now + timers.keepalive_timeout
        # _trim and _source inlined: the inner header's own length cuts the padding off (IPv4 or IPv6).
        version = plain[0] >> 4
        size = len(plain)
        if version == 4 and size >= 20:
            length = (plain[2] << 8) | plain[3]
        elif version == 6 and size >= 40:
            length = ((plain[4] << 8) | plain[5]) + 40
        else:
            length = 0
        if length > size or length < 20:
            self.drops["malformed_inner"] += 1
            return
        packet = plain if length == size else plain[:length]
        source = packet[12:16] if version == 4 else packet[8:24]
        if self.allowed_ips.routes_raw(source) is not peer:
            self.drops["allowed_ips"] += 1
            return
        if len(self._in) >= MAX_QUEUED_PACKETS:
            self.drops["receive_queue_full"] += 1
            return
        self._in.append(packet)

    def _authenticated_from(self, peer: Peer, addr: tuple[str, int], now: float, size: int) -> None:
        peer.last_receive = now
        peer.rx_bytes += size
        peer.rx_packets += 1
        peer.new_handshake_at = None  # the peer answered
        liveness.answered(peer)
        if peer.persistent_keepalive:
            peer.persistent_at = now + peer.persistent_keepalive
        if peer.endpoint != addr:
            peer.endpoint = addr
            self.announce(PeerEndpointChanged(peer.public_key, addr, EndpointReason.ROAMED))

    def _confirm_next(self, peer: Peer, keypair: Keypair, now: float) -> None:
        """As responder, the initiator's first transport packet under the new keys confirms them."""
        self._install_keypair(peer, keypair, now)
        self.announce(HandshakeCompleted(peer.public_key, None, False))
        self._flush_staged(peer, now)

    def _install_keypair(self, peer: Peer, keypair: Keypair, now: float) -> None:
        """Make `keypair` the peer's current one (whitepaper 5.4.2 and 6.1): the current becomes previous,
        the old previous and any unconfirmed next are retired, the zero-keys timer restarts."""
        self.indices.retire(peer.previous)
        if peer.next is not keypair:
            self.indices.retire(peer.next)
        peer.previous, peer.current, peer.next = peer.current, keypair, None
        self.indices.set(keypair.local_index, peer, keypair)
        peer.candidates.refused = False
        peer.handshakes += 1
        peer.last_handshake_time = now
        peer.rekey_requested_by_receive = False
        peer.zero_keys_at = now + 3 * self.timers.reject_after_time

    def _receive_initiation(self, data: bytes, addr: tuple[str, int], now: float) -> None:
        msg = admission.checked(self, data, parse_initiation, INITIATION_MAC1_AT, INITIATION_MAC2_AT, addr, now)
        if msg is None:
            return
        consumed = consume_initiation(self.static, msg)
        if consumed is None:
            self.drops["handshake_failed"] += 1
            return
        peer = self.peers.get(consumed.peer_public)
        if peer is None:
            self.drops["unknown_peer"] += 1
            return
        if not timestamp_newer(consumed.timestamp, peer.last_initiation_timestamp):
            self.drops["replayed_initiation"] += 1
            return
        if (peer.last_initiation_received is not None
                and now - peer.last_initiation_received < MIN_INITIATION_INTERVAL):
            self.drops["initiation_flood"] += 1
            return
        peer.last_initiation_timestamp = consumed.timestamp
        peer.last_initiation_received = now
        index = self.indices.new_index()
        response, keys = create_response(consumed, index, peer.preshared_key, ephemeral=self.rng(32))
        keypair = Keypair.from_session(keys, initiator=False, created=now)
        self.indices.retire(peer.next)
        peer.next = keypair
        self.indices.set(index, peer, keypair)
        self._authenticated_from(peer, addr, now, len(data))
        self._out.append((peer.cookies.add_macs(response, RESPONSE_MAC1_AT, now), addr))
        peer.last_send = now

    def _receive_response(self, data: bytes, addr: tuple[str, int], now: float) -> None:
        msg = admission.checked(self, data, parse_response, RESPONSE_MAC1_AT, RESPONSE_MAC2_AT, addr, now)
        if msg is None:
            return
        entry = self.indices.get(msg.receiver)
        if entry is None or entry[1] is not None or entry[0].handshake is None:
            self.drops["unknown_receiver_index"] += 1
            return
        peer = entry[0]
        state = peer.handshake
        assert state is not None
        keys = consume_response(state, self.static, msg, peer.preshared_key)
        if keys is None:
            self.drops["handshake_failed"] += 1
            return
        keypair = Keypair.from_session(keys, initiator=True, created=now)
        peer.handshake = None
        self._install_keypair(peer, keypair, now)
        peer.handshake_attempts = 0
        peer.retransmit_at = None
        self._authenticated_from(peer, addr, now, len(data))
        self.announce(HandshakeCompleted(peer.public_key, now - state.sent_at, True))
        # The responder may only send once it has heard from us under the new keys: give it that now.
        if not self._flush_staged(peer, now):
            self.send_keepalive_to(peer, now)

    def _flush_staged(self, peer: Peer, now: float) -> bool:
        if not peer.staged or not peer.usable(peer.current, now):
            return False
        staged, peer.staged = peer.staged, type(peer.staged)()
        for packet in staged:
            self._encrypt_and_send(peer, peer.current, packet, now)  # type: ignore[arg-type]
        return True

    # ---- timers -----------------------------------------------------------------------------------------
    def protocol_time(self, now: float) -> float:
        """The device's time for a caller's `now` (the same here; runtime/suspend.py adds suspended time)."""
        return now

    def next_timer(self) -> float | None:
        """The earliest deadline of any peer's timers (seconds, the caller's clock), or None."""
        return min((d for peer in self.peers.values() if (d := peer.next_deadline()) is not None), default=None)

    def handle_timers(self, now: float) -> None:
        """Fire every peer timer due at `now` (whitepaper 6: retransmit, keepalive, rekey, zero keys; expiry.py)."""
        expiry.fire_due(self, now)

    # ---- introspection ------------------------------------------------------------------------------------
    def stats(self) -> dict[str, object]:
        """{"peers": {key base64: Peer.stats() + session_created}, "drops": {reason: n}, "cookie_replies_sent": n}."""
        peers = {}
        for peer in self.peers.values():
            entry = peer.stats()
            if peer.current is not None:
                entry["session_created"] = peer.current.created
            peers[peer.public_key_b64] = entry
        return {"peers": peers, "drops": dict(self.drops), "cookie_replies_sent": self.cookie_replies_sent}
