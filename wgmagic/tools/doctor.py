"""`%wg doctor` / `wgmagic doctor`: why a tunnel or a connection fails, in plain words.

Checks run in the order a packet meets the problems: the config, the endpoint's name, the handshake, its
RTT, DNS through the tunnel, a TCP connect to the target, the path MTU, then loss and RTT over a burst.
Each gives a verdict (ok, warning, failed, skipped) and, when something is wrong, the likely cause and the fix.
A failed step stops the steps that depend on it. Nothing here prints a key: peers are named by fingerprint.
The words for a fault are wgmagic.explain's, the same the exceptions carry elsewhere.
"""

from __future__ import annotations

import html
import ipaddress
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from wgmagic import explain

if TYPE_CHECKING:
    import os

    from wgmagic.config import WireGuardConfig
    from wgmagic.errors import ConfigError
    from wgmagic.runtime.seams import IPAddress
    from wgmagic.runtime.tunnel import Tunnel

OK, WARN, FAIL, SKIP = "ok", "warning", "failed", "skipped"
MARK = {OK: "✔", WARN: "!", FAIL: "✘", SKIP: "-"}
BURST = 40  # echoes in the loss/RTT burst
LOSS_WARNING = 0.05
CONNECT_TIMEOUT = 5.0  # seconds the TCP connect check waits


@dataclass
class Check:
    """One doctor step: its name, verdict (OK, WARN, FAIL, SKIP), what was found and the fix."""

    name: str
    verdict: str
    detail: str
    fix: str = ""


@dataclass
class Report:
    """The doctor's checks in the order they ran; `verdict(name)`, and a summary for text and HTML."""

    checks: list[Check] = field(default_factory=list)

    def add(self, name: str, verdict: str, detail: str, fix: str = "") -> Check:
        check = Check(name, verdict, detail, fix)
        self.checks.append(check)
        return check

    def verdict(self, name: str) -> str | None:
        return next((c.verdict for c in self.checks if c.name == name), None)

    @property
    def healthy(self) -> bool:
        return all(c.verdict in (OK, SKIP) for c in self.checks)

    def __str__(self) -> str:
        lines = []
        for c in self.checks:
            lines.append(f"{MARK[c.verdict]} {c.name}: {c.detail}")
            if c.fix:
                lines.append(f"    fix: {c.fix}")
        from wgmagic.runtime.health import doctor_health  # the one verdict %wg status and the dashboard show

        lines.append(f"doctor: {doctor_health(self.checks).word}")
        return "\n".join(lines)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        colours = {OK: "#2e7d32", WARN: "#b26a00", FAIL: "#c62828", SKIP: "#757575"}
        rows = "".join(
            f"<tr><td style='color:{colours[c.verdict]};font-weight:bold'>{c.verdict}</td>"
            f"<td>{html.escape(c.name)}</td><td>{html.escape(c.detail)}"
            + (f"<br><i>fix:</i> {html.escape(c.fix)}" if c.fix else "") + "</td></tr>"
            for c in self.checks)
        return f"<table><caption>wgmagic doctor</caption>{rows}</table>"


def run_doctor(config_source: str | os.PathLike[str] | WireGuardConfig | None, *, target: str | None = None,
               tunnel: Tunnel | None = None,
               timeout: float = 5.0, progress: Callable[[Check], None] | None = None) -> Report:
    """Diagnose `config_source` (a path, wg-quick text or parsed config; None with `tunnel`), optionally toward
    `target` ("db.internal:5432"). An already open `tunnel` is used as is (its config is checked); otherwise one
    is opened and closed here. Each check goes to `progress` as it is made; the Report holds them all."""
    from wgmagic.config import load_config
    from wgmagic.errors import ConfigError

    report = Report()

    def add(name: str, verdict: str, detail: str, fix: str = "") -> Check:
        check = report.add(name, verdict, detail, fix)
        if progress is not None:
            progress(check)
        return check

    try:
        if tunnel is not None:
            config = tunnel.config
        elif config_source is not None:
            config = load_config(config_source)
        else:
            raise ValueError("run_doctor: give config_source or tunnel")
    except ConfigError as exc:
        add("config", FAIL, str(exc), config_fix(exc))
        return report
    try:
        host, port = _split_target(target)
    except ValueError as exc:
        add("target", FAIL, str(exc), "give the target as HOST, HOST:PORT or [IPv6]:PORT")
        return report
    _check_config(config, host, add)
    if report.verdict("config") == FAIL:
        return report
    _check_endpoint(config, add)
    if report.verdict("endpoint") == FAIL:
        return report
    if tunnel is None:
        from wgmagic.runtime.tunnel import find_twin

        tunnel = find_twin(config)  # a second tunnel with the same key would steal the first one's traffic
    own = tunnel is None
    if own:
        from wgmagic.errors import WgMagicError
        from wgmagic.runtime.tunnel import connect

        started = time.monotonic()
        try:
            tunnel = connect(config, name=f"doctor-{int(started * 1000) % 100000}", timeout=timeout)
        except WgMagicError as exc:
            tunnel = _try_websocket(config, exc, timeout, add)
    if tunnel is None:
        return report
    try:
        rtt = tunnel.wait_handshake(timeout=timeout)
        add("handshake", OK, "the peer answered the handshake")
        _check_rtt(rtt, add)
        address = _check_dns(tunnel, config, host, add)
        if address is not None and port is not None:
            _check_tcp(tunnel, address, port, add)
        probe = address or _probe_address(config)
        if probe is not None:
            _check_mtu(tunnel, config, probe, add)
            _check_burst(tunnel, probe, add)
        else:
            add("path MTU", SKIP, "no address to probe (give a target, or DNS = in the config)")
    except Exception as exc:  # the handshake stopped answering mid-way, mostly
        _handshake_failed(exc, add)
    finally:
        if own:
            tunnel.close()
    return report


def config_fix(error: ConfigError) -> str:
    """The fix line for a ConfigError, by its kind: the file itself, a missing key, a key's value, a line."""
    message, key = str(error), (getattr(error, "key", None) or "")
    reason = message.rsplit(": ", 1)[-1] if not key else message.split(f"{key}: ", 1)[-1]
    if getattr(error, "line", None) is None and not key:
        if "no such file" in reason:
            return "check the path (and the current directory): give the wg-quick file that exists"
        if "is a directory" in reason:
            return "give the wg-quick file inside that directory (for example wg0.conf), not the directory"
        if "permission denied" in reason:
            return "make the file readable by this user (chmod u+r), or run as its owner"
        if "not a text file" in reason or "larger than" in reason:
            return "give the wg-quick file itself (text with [Interface] and [Peer] sections)"
        if "[Peer]" in reason:
            return "add a [Peer] section with the server's PublicKey, Endpoint and AllowedIPs"
    if key == "PrivateKey" and reason.startswith("is missing"):
        return ("add `PrivateKey = ...` under [Interface], or set WGMAGIC_PRIVATE_KEY (on a terminal wgmagic "
                "asks for it)")
    if reason.startswith("is missing"):
        return f"add the {key} line to that section"
    if "Curve25519" in reason:
        return "copy the peer's real public key (`wg show` or `wg pubkey` on the peer) into PublicKey"
    if key in ("PrivateKey", "PublicKey", "PresharedKey"):
        return f"correct {key} on that line: a WireGuard key is 44 characters of base64 ending in '='"
    if key == "Endpoint":
        return "write Endpoint as HOST:PORT or [IPv6]:PORT"
    if key in ("Address", "AllowedIPs"):
        return f"write {key} as comma-separated addresses with a /prefix, such as 198.18.0.2/32 or fd00::2/128"
    if key == "DNS":
        return "write DNS as comma-separated server addresses and search domains"
    if "given twice" in reason or "appears twice" in reason:
        return "remove the duplicate line (or the duplicate [Peer])"
    if "not a key wgmagic knows" in reason or "section" in reason:
        return "correct or remove that line (wg-quick's keys: see `man wg-quick`)"
    return "correct that line of the wg-quick file"


def _split_target(target: str | None) -> tuple[str | None, int | None]:
    if not target:
        return None, None
    from wgmagic.addresses import split_host_optional_port

    return split_host_optional_port(target)


def _check_config(config: WireGuardConfig, host: str | None, add: Callable[..., Check]) -> None:
    networks = [net for peer in config.peers for net in peer.allowed_ips]
    problems, warnings = [], []
    if not config.peers:
        problems.append("there is no [Peer] section")
    for peer in config.peers:
        if not peer.allowed_ips:
            problems.append(f"peer {peer.public_key_b64[:8]}... has no AllowedIPs: nothing would be routed to it")
    for server in config.interface.dns_servers:
        if not any(server in net for net in networks if net.version == server.version):
            problems.append(f"the DNS server {server} is {explain.OUTSIDE_ALLOWED_IPS}, so DNS cannot go "
                            "through the tunnel")
    if host is not None:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            address = None
        if address is not None and not any(address in net for net in networks if net.version == address.version):
            problems.append(f"the target {address} is {explain.OUTSIDE_ALLOWED_IPS} "
                            f"({', '.join(map(str, networks))})")
    for interface in config.interface.addresses:
        if not any(interface.ip in net for net in networks if net.version == interface.version):
            warnings.append(f"this side's Address {interface.ip} is outside the peer's AllowedIPs (fine for a "
                            "gateway that NATs; otherwise replies cannot be routed back)")
    if problems:
        add("config", FAIL, "; ".join(problems), f"{explain.NO_ROUTE_ADVICE} (or fix the address you are "
            "trying to reach)")
    elif warnings:
        add("config", WARN, "; ".join(warnings))
    else:
        add("config", OK, f"{len(config.peers)} peer(s), AllowedIPs {', '.join(map(str, networks))}")


def _check_endpoint(config: WireGuardConfig, add: Callable[..., Check]) -> None:
    for peer in config.peers:
        if not peer.endpoint:
            add("endpoint", WARN, f"peer {peer.public_key_b64[:8]}... has no Endpoint: it must contact us first")
            continue
        name, port = peer.endpoint
        try:
            infos = socket.getaddrinfo(name, port, type=socket.SOCK_DGRAM)
        except socket.gaierror as exc:
            failure = explain.endpoint_unresolvable(name, port, str(exc.strerror))
            add("endpoint", FAIL, failure.fault, failure.advice)
            return
        add("endpoint", OK, f"{name}:{port} is {infos[0][4][0]}")


def _try_websocket(config: WireGuardConfig, error: Exception, timeout: float,
                   add: Callable[..., Check]) -> Tunnel | None:
    """The first connect failed. Tell a WebSocket/proxy/TLS failure for what it is; after a UDP failure, try
    the WebSocket URL known (config `#@wgmagic Via`, $WGMAGIC_VIA) to tell "UDP is blocked here" from "neither
    works". Returns a tunnel over the WebSocket, or None."""
    from wgmagic.errors import HandshakeTimeoutError, TransportError, WgMagicError
    from wgmagic.runtime.fallback import websocket_probe
    from wgmagic.runtime.tunnel import connect
    from wgmagic.via import mask_url

    if isinstance(error, TransportError):
        add("websocket", FAIL, str(error), _transport_fix(str(error)))
        return None
    _handshake_failed(error, add)
    try:
        known = websocket_probe(config)  # the one fallback policy (runtime/fallback.py), as connect() climbs it
    except WgMagicError:
        return None
    if known is None or known.url is None:
        return None
    shown = mask_url(known.url)
    try:
        tunnel = connect(config, name=f"doctor-ws-{int(time.monotonic() * 1000) % 100000}", timeout=timeout,
                         via=known)
    except TransportError as exc:
        add("transport", FAIL, f"neither works: UDP to the endpoint gets no answer, and the WebSocket {shown} "
            f"failed: {exc}", _transport_fix(str(exc)))
        return None
    except WgMagicError as exc:
        why = exc.explanation if isinstance(exc, HandshakeTimeoutError) else None
        add("transport", FAIL, f"neither works: UDP to the endpoint gets no answer, and over the WebSocket {shown} "
            f"{why.fault if why else 'the peer did not answer either'}",
            why.advice if why else explain.HANDSHAKE_RELAY_CAUSES)
        return None
    add("transport", WARN, f"UDP to the endpoint gets no answer but the WebSocket {shown} works: UDP is blocked "
        "on this network", f"connect with --via {shown} (or --via auto, or `#@wgmagic Via = auto {shown}` "
        "under [Peer])")
    return tunnel


def _transport_fix(message: str) -> str:
    if "HTTP proxy" in message:
        return "check HTTPS_PROXY (host, port, user name and password) or ask for CONNECT to the relay's port"
    if "TLS" in message:
        return "give the CA that signed the relay's certificate (--via-ca FILE or WGMAGIC_VIA_CA), or fix the name"
    return "check the URL (host, port, path) and that `wgmagic relay` runs there"


def _handshake_failed(error: BaseException, add: Callable[..., Check]) -> None:
    """The handshake check failed: the engine's explanation (the same words as the exception's), or the error's
    own text when it is not a handshake timeout."""
    from wgmagic.errors import HandshakeTimeoutError

    why = error.explanation if isinstance(error, HandshakeTimeoutError) else None
    if why is not None:
        add("handshake", FAIL, why.fault, why.advice)
    else:
        add("handshake", FAIL, str(error) or type(error).__name__)


def _check_rtt(rtt: float | None, add: Callable[..., Check]) -> None:
    if rtt is None:
        add("handshake RTT", SKIP, "the session was already up: no fresh measurement")
    elif rtt > 0.3:
        add("handshake RTT", WARN, f"{rtt * 1000:.0f} ms: a long way, every query pays it at least once",
            "use a gateway nearer to this machine, or batch queries")
    else:
        add("handshake RTT", OK, f"{rtt * 1000:.1f} ms")


def _check_dns(tunnel: Tunnel, config: WireGuardConfig, host: str | None,
               add: Callable[..., Check]) -> IPAddress | None:
    from wgmagic.errors import DNSTimeoutError, NameNotFoundError

    if host is None:
        add("DNS", SKIP, "no target name to look up")
        return None
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    servers = [str(s) for s in config.interface.dns_servers]
    if not servers:
        failure = explain.no_dns_server(host)
        add("DNS", FAIL, failure.fault, failure.advice)
        return None
    try:
        addresses = tunnel.resolve(host)
    except NameNotFoundError:
        failure = explain.name_not_found(host, servers)
        add("DNS", FAIL, failure.fault, failure.advice)
        return None
    except DNSTimeoutError:
        failure = explain.dns_timed_out(host, servers)
        add("DNS", FAIL, failure.fault, failure.advice)
        return None
    add("DNS", OK, f"{host} is {', '.join(map(str, addresses))}")
    return addresses[0]


def _check_tcp(tunnel: Tunnel, address: IPAddress, port: int, add: Callable[..., Check]) -> None:
    from wgmagic.errors import PeerNotRespondingError

    started = time.monotonic()
    try:
        tunnel.open_connection(str(address), port, timeout=CONNECT_TIMEOUT).close()
    except ConnectionRefusedError:
        failure = explain.connection_refused(str(address), port, through=f"tunnel {tunnel.name!r}")
    except TimeoutError as exc:
        failure = explain.connect_timed_out(str(address), port, CONNECT_TIMEOUT,
                                            peer_silent=isinstance(exc, PeerNotRespondingError))
    except OSError as exc:
        failure = explain.connect_failed(str(address), port, str(exc))
    else:
        add("TCP connect", OK, f"{address}:{port} accepted in {(time.monotonic() - started) * 1000:.1f} ms")
        return
    add("TCP connect", FAIL, failure.fault, failure.advice)


def _probe_address(config: WireGuardConfig) -> IPAddress | None:
    servers = list(config.interface.dns_servers)
    return servers[0] if servers else None


def _echo(tunnel: Tunnel, address: IPAddress, size: int, timeout: float = 1.0) -> float | None:
    replies = tunnel.ping(str(address), 1, timeout=timeout, size=size)
    return replies[0].rtt if replies else None


WIREGUARD_OVERHEAD = 32  # a data message's header (16) and authentication tag (16) around the padded packet
UDP_HEADER = 8


def _check_mtu(tunnel: Tunnel, config: WireGuardConfig, address: IPAddress, add: Callable[..., Check]) -> None:
    """The path MTU through the tunnel, measured with ICMP echoes (binary search), and the `MTU =` to set.

    WireGuard pads every inner packet to a multiple of 16 bytes (wgmagic always; wireguard-go up to the
    interface's MTU), so the datagram on the wire grows in 16-byte steps: the search runs over inner sizes
    that are multiples of 16, and the largest that comes back is the MTU to set (packets of that size and
    smaller cross; any larger one is padded past what the path carries)."""
    overhead = 28 if ipaddress.ip_address(str(address)).version == 4 else 48  # inner IP + ICMP headers
    mtu = config.interface.mtu or 1420
    # Several tries each: on a lossy path one lost echo must not pass for an MTU problem.
    small = next((rtt for rtt in (_echo(tunnel, address, 56) for _ in range(5)) if rtt is not None), None)
    if small is None:
        add("path MTU", SKIP, f"{address} does not answer ICMP echo at all, so the MTU cannot be probed")
        return
    if any(_echo(tunnel, address, mtu - overhead) is not None for _ in range(6)):
        add("path MTU", OK, f"packets of the full tunnel MTU ({mtu} bytes) reach {address} and come back")
        return
    low = -(-(56 + overhead) // 16) * 16  # the small echo's padded size passed
    high = mtu  # did not
    while high - low > 16:
        middle = max(low + 16, (low + high) // 2 // 16 * 16)
        if middle >= high:
            break
        if any(_echo(tunnel, address, middle - overhead, timeout=0.7) is not None for _ in range(3)):
            low = middle
        else:
            high = middle
    outer_ip = _endpoint_ip_header(tunnel)
    wire = low + WIREGUARD_OVERHEAD + UDP_HEADER + outer_ip
    add("path MTU", FAIL,
        f"small packets pass but {mtu}-byte ones vanish without an ICMP 'too big' coming back: an MTU black "
        f"hole on the path to the endpoint. The largest packet that crossed the tunnel was {low} bytes "
        f"({wire} on the wire: + {WIREGUARD_OVERHEAD} WireGuard, {UDP_HEADER} UDP, {outer_ip} IPv"
        f"{4 if outer_ip == 20 else 6}); {min(low + 16, mtu)} did not",
        f"set MTU = {low} in [Interface] (the path carries about {wire}-byte packets; wg-quick's default 1420 "
        f"assumes 1500). wgmagic's TCP already works around the hole by itself, more slowly; ping, UDP and "
        f"other WireGuard clients do not")


def _endpoint_ip_header(tunnel: Tunnel) -> int:
    """20 (IPv4) or 40 (IPv6): the outer IP header of the first peer's endpoint in use (IPv4 when unknown)."""
    try:
        endpoint = str(tunnel.peer_report()[0]["endpoint"])
    except Exception:  # a report missing or shaped otherwise: the common case
        return 20
    return 40 if endpoint.startswith("[") or endpoint.count(":") > 1 else 20


def _check_burst(tunnel: Tunnel, address: IPAddress, add: Callable[..., Check]) -> None:
    rtts = [reply.rtt for reply in tunnel.ping(str(address), BURST, interval=0.02, timeout=0.5)]
    answered = sorted(r * 1000 for r in rtts if r is not None)
    loss = 1 - len(answered) / BURST
    if not answered:
        add("loss and RTT", FAIL, f"none of {BURST} echoes came back",
            "the path stopped working, or another client with this same private key (another notebook, a "
            "`wgmagic up`, wg-quick elsewhere) spoke to the peer since, and the peer now answers it: "
            "give each client its own key, then re-run doctor")
        return
    p50 = answered[len(answered) // 2]
    detail = f"{loss:.0%} loss over {BURST} echoes, RTT p50 {p50:.2f} ms, max {answered[-1]:.2f} ms"
    if loss > LOSS_WARNING:
        add("loss and RTT", WARN, detail, "queries will stall on retransmissions: look for a congested or "
            "lossy link (Wi-Fi, VPN in a VPN), or a shaping rule on the path")
    else:
        add("loss and RTT", OK, detail)
