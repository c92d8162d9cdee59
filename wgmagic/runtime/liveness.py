"""Per-peer liveness, carried out: the WireGuard device decides *whether* a peer answers
(`Device.not_answering_since`, wgmagic/wireguard/liveness.py); this module decides what the runtime does about
it and how it is worded.

Policy: once a peer has not answered for `fail_connections_after` seconds, every tunnel TCP connection routed to
it (its AllowedIPs) fails with a PeerNotRespondingError (an ETIMEDOUT): relays reset their local sockets,
callers get the reason instead of TCP's bare "connection timed out". `%wg status` shows "not answering" from the
start of the silence. Owns: that policy and its wording; never writes protocol state.
"""

from __future__ import annotations

import errno
from collections import Counter

from wgmagic import explain
from wgmagic.addresses import format_address
from wgmagic.errors import PeerNotRespondingError
from wgmagic.netstack.stack import Stack
from wgmagic.netstack.tcp.state import TcpState
from wgmagic.runtime.peers import PeerRuntime
from wgmagic.wireguard.device import Device


def fail_connections_after(device: Device, stack: Stack) -> float:
    """Seconds of silence after which the peer's TCP connections are failed: one REKEY_TIMEOUT (the
    granularity of the handshake retries that wake the engine) before the TCP user timeout would fail them
    anyway, so they get the clear reason first and yet survive every outage TCP itself survives (a roaming
    endpoint, a relay that moved). No user timeout: when the handshake retries give up (REKEY_ATTEMPT_TIME)."""
    timers = device.timers
    user_timeout = getattr(stack.tcp_options, "user_timeout", None)
    return max(0.0, (user_timeout or timers.rekey_attempt_time) - timers.rekey_timeout)


def describe(runtime: PeerRuntime, silent_for: float, *, refused: bool = False) -> str:
    """The sentence a connection failed for a silent peer carries (and %wg status's reason); `refused`: the
    device's last answer from the Endpoint was ICMP port unreachable (wireguard/endpoint.py)."""
    where = runtime.resolved_endpoint or runtime.configured_endpoint
    return explain.peer_not_answering(runtime.public_key_b64, format_address(where) if where else None,
                                      silent_for, refused=refused)


class LivenessWatch:
    """Carries out the device's liveness decisions for the engine (loop thread): `check(now)` on every timer."""

    def __init__(self, device: Device, stack: Stack, peers: dict[bytes, PeerRuntime], counters: Counter[str]):
        self.device = device
        self.stack = stack
        self.peers = peers
        self.counters = counters

    def reason(self, public_key: bytes, now: float) -> str | None:
        """`describe`'s sentence while the peer is not answering, else None."""
        since = self.device.not_answering_since(public_key, now)
        if since is None:
            return None
        return describe(self.peers[public_key], now - since, refused=self.device.peer(public_key).candidates.refused)

    def check(self, now: float) -> None:
        """Fail each TCP connection of a silent peer once it has heard nothing for `fail_connections_after`
        seconds of that silence: a connection from before the silence fails `fail_after` seconds after the
        silence began; one opened during it (a retry while the peer restarts) gets its own full `fail_after`
        from its opening, as its TCP user timeout would, so it can still succeed when the peer comes back.
        Counted: `peer_not_answering` once per silence, `tcp_failed_peer_not_answering` per connection."""
        fail_after = None
        for runtime in self.peers.values():
            since = self.device.not_answering_since(runtime.public_key, now)
            if since is None:
                runtime.declared_dead = False
                continue
            if fail_after is None:
                fail_after = fail_connections_after(self.device, self.stack)
            if now - since < fail_after:
                continue
            if not runtime.declared_dead:
                runtime.declared_dead = True
                self.counters["peer_not_answering"] += 1
            peer = self.device.peer(runtime.public_key)
            message = describe(runtime, now - since, refused=peer.candidates.refused)
            for conn in list(self.stack.tcp.values()):
                heard = max(since, conn.last_receive)  # a connection opened during the silence counts from then
                if conn.state in (TcpState.CLOSED, TcpState.TIME_WAIT) or now - heard < fail_after:
                    continue
                if self.device.allowed_ips.routes(conn.remote[0]) is peer:
                    error = PeerNotRespondingError(message)
                    error.errno = errno.ETIMEDOUT
                    conn.time_out(error, now)
                    self.stack.wake(conn)
                    self.counters["tcp_failed_peer_not_answering"] += 1

    def silent_since(self, since: float, now: float) -> bool:
        """True when no peer has sent anything since `since` although a live one would have by now.

        A WireGuard peer that receives our packets and has nothing to send back still answers with a keepalive
        within KEEPALIVE_TIMEOUT, and a handshake initiation is answered within a round trip; so silence for
        longer than that while we were sending means the peer is down or unreachable."""
        shift = self.device.protocol_time(now) - now  # the peers' times count suspended time (runtime/suspend.py)
        since, now = since + shift, now + shift
        waited = now - since
        patience = self.device.timers.keepalive_timeout + 1.0
        for peer in self.device.peers.values():
            last_receive, last_send = peer.last_receive, peer.last_send
            if last_receive is not None and last_receive >= since:
                return False
            if last_send is None or last_send < since:
                continue
            if waited >= patience or last_send - (last_receive or since) >= patience:
                return True
        return False
