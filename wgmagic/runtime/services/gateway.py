"""`wgmagic gateway`: the other end of the tunnel, rootless. A user-space WireGuard responder that relays
peers' TCP connections to local services, answers ping, and answers DNS for the names it is given.

It is a Tunnel whose stack listens instead of connecting: each `--expose [ADDR:]PORT=HOST:PORT` is a TCP
listener on a tunnel address; each accepted tunnel connection is relayed to HOST:PORT on this machine by the
same SocketRelay the forwards use (bounded both ways). A peer's SYN is held unanswered while the gateway
connects to the local target without blocking (the target's host name was resolved once, at start): the
SYN-ACK goes out when that connect succeeds, a reset when it fails or takes longer than `connect_timeout`, so a
target that is down refuses the peer's connection and a slow one delays no other peer.

Peers are held to their AllowedIPs by the WireGuard device (cryptokey routing), and under a handshake flood
the device answers with cookies (mac2).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from wgmagic.runtime.relay import SocketRelay
from wgmagic.runtime.services.expose import (
    LOCAL_CONNECT_TIMEOUT,
    Expose,
    ExposeListener,
    IPAddress,
    resolve_target,
)


class Gateway:
    """Run from any thread; all I/O happens on the tunnel's loop thread."""

    def __init__(self, config: Any, exposes: list[Expose], names: dict[str, tuple[IPAddress, ...]] | None = None,
                 *, name: str = "gateway", timers: Any = None,
                 connect_timeout: float = LOCAL_CONNECT_TIMEOUT, websocket: tuple[str, int] | None = None,
                 tls_cert: str | None = None, tls_key: str | None = None, websocket_path: str = "/wg") -> None:
        """config: a wg-quick file or text ([Interface] with Address, one [Peer] per client); `websocket`:
        also accept WebSocket clients on this (host, port) (TLS with tls_cert/tls_key), relayed to our own UDP
        port. Raises ConfigError, ValueError when a target's host does not resolve, OSError when a port cannot
        be bound."""
        from wgmagic.config import load_config
        from wgmagic.runtime.tunnel import Tunnel

        self.config = load_config(config)
        self.exposes = exposes
        self.names = dict(names or {})
        self.connect_timeout = connect_timeout
        # The targets are fixed: resolve them once, here, never on the loop thread for each SYN.
        self.targets = {expose: resolve_target(expose) for expose in exposes}
        self.tunnel = Tunnel(self.config, name=name, timers=timers)
        self.engine = self.tunnel.runtime_engine
        self.listeners: list[ExposeListener] = []
        self.dns_answered = 0
        self._dns_sockets: list[Any] = []
        self.websocket_relay: Any = None
        self.websocket_address: tuple[str, int] | None = None
        try:
            self.tunnel.call_on_loop(self._setup)
            if websocket is not None:
                self._start_websocket(websocket, tls_cert, tls_key, websocket_path)
        except BaseException:
            self.tunnel.close()
            raise

    @property
    def accepted(self) -> int:
        return sum(x.accepted for x in self.listeners)

    @property
    def refused(self) -> int:
        return sum(x.refused for x in self.listeners)

    @property
    def relays(self) -> set[SocketRelay]:
        return {relay for x in self.listeners for relay in x.relays}

    def __repr__(self) -> str:
        return f"<Gateway {self.tunnel.name}: {', '.join(map(str, self.exposes))}>"

    @property
    def listen_port(self) -> int:
        """The UDP port WireGuard listens on (ListenPort, or the one the kernel chose)."""
        return self.tunnel.call_on_loop(lambda: self.engine.local_port)

    def _start_websocket(self, listen: tuple[str, int], tls_cert: str | None, tls_key: str | None,
                         path: str) -> None:
        """WireGuard over WebSocket beside UDP: the relay of `wgmagic relay`, on this gateway's own
        loop thread, toward this gateway's UDP port on loopback. Each WebSocket client gets a UDP socket of its
        own, so the WireGuard device sees one endpoint per client and roaming between UDP and WebSocket works
        unchanged (see docs/layers.md)."""
        from wgmagic.runtime.services.wsrelay import WebSocketRelay

        self.websocket_relay = WebSocketRelay(("127.0.0.1", self.listen_port), path=path)
        self.websocket_address = self.tunnel.run_on_loop(
            self.websocket_relay.start(*listen, tls_cert=tls_cert, tls_key=tls_key), timeout=15)

    # ---- loop thread ---------------------------------------------------------------------------------
    def _setup(self) -> None:
        stack = self.engine.stack
        for expose in self.exposes:
            self.listeners.append(ExposeListener(self.engine, expose, self.targets[expose],
                                                 connect_timeout=self.connect_timeout, counter_prefix="gateway"))
        if self.names:
            own = [iface.ip for iface in self.config.interface.addresses]
            families = sorted({address.version for address in own})
            for family in families:
                sock = stack.udp_open(53, family=family)
                self._dns_sockets.append(sock)
                self.engine.udp_handlers[id(sock)] = self._on_dns

    def _on_dns(self, sock: Any) -> None:
        from wgmagic.netstack.dns import answer_query

        while (item := sock.recvfrom()) is not None:
            data, source = item
            reply = answer_query(data, self.names)
            if reply is None:
                self.engine.counters["dns_malformed_queries"] += 1
                continue
            self.dns_answered += 1
            sock.sendto(reply, source, time.monotonic())
        self.engine.pump()

    # ---- any thread ------------------------------------------------------------------------------------
    def stats(self) -> dict[str, object]:
        snapshot = self.tunnel.stats()
        connecting = self.tunnel.call_on_loop(lambda: sum(x.connecting for x in self.listeners))
        snapshot.update(accepted=self.accepted, refused=self.refused, dns_answered=self.dns_answered,
                        open_relays=len(self.relays), connecting=connecting)
        if self.websocket_relay is not None:
            snapshot["websocket"] = self.tunnel.call_on_loop(self.websocket_relay.stats)
        return snapshot

    def close(self) -> None:
        if self.tunnel.closed:
            return
        if self.websocket_relay is not None:
            with contextlib.suppress(Exception):
                self.tunnel.run_on_loop(self.websocket_relay.close(), timeout=10)
        with contextlib.suppress(Exception):
            self.tunnel.call_on_loop(self._close_on_loop, timeout=5.0)
        self.tunnel.close()

    def _close_on_loop(self) -> None:
        for listener in self.listeners:
            listener.close_on_loop()
        for sock in self._dns_sockets:
            self.engine.udp_handlers.pop(id(sock), None)
            sock.close()

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
