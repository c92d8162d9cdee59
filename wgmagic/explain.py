"""Why something failed, in plain words: the one home of wgmagic's failure explanations.

Every layer that tells a user why something failed -- the engine's handshake timeout, `Tunnel`'s connection
errors, a forward's or the SOCKS5 client's refusals, `%%wgsql`'s stage errors, the doctor's verdicts -- takes
its sentences from here, so the same fault reads the same wherever it surfaces. The functions are pure: they
take plain data (host names, ports, seconds, flags, already-masked descriptions) and return an `Explanation`;
they never see an engine, a socket or a config object.

No secret ever goes in: a peer is named by the first 8 characters of its base64 public key (`key_prefix`
cuts whatever it is given to 8), a URL only as the caller already masked it. This module imports nothing of
wgmagic (layer 0, beside errors.py; docs/layers.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# ---- the shared pieces: each says one thing, once -----------------------------------------------------------
PEER_KEY_CHARS = 8  # how much of a peer's base64 public key a message shows (a fingerprint, never a secret)

HANDSHAKE_SILENT_CAUSES = (
    "the peer's PublicKey in this config is wrong (a peer silently drops handshakes it cannot decrypt), or this "
    "client's public key is not configured on the peer; else the Endpoint host or port is wrong, UDP to that "
    "port is blocked on this network (firewall, proxy), or this machine's clock is far behind (the peer "
    "rejects old handshake timestamps)")
HANDSHAKE_REFUSED_ADVICE = ("check the port in the config's Endpoint, and that WireGuard is running on the peer (a "
                            "gateway: that it is up); %wg doctor (wgmagic doctor) checks each step")
HANDSHAKE_RELAY_CAUSES = ("the relay's --to is not this peer's WireGuard port, or this client's public key is not "
                          "configured on the peer")
REFUSED_CAUSES = ("nothing listens on that port, or a firewall rejects it: check the port, and that the server "
                  "listens on its private address")
PEER_SILENT_ADVICE = ("it may be down or unreachable, and the tunnel keeps retrying; %wg status shows the "
                      "handshake age")
HOST_SILENT_CAUSES = "the host may be down, or a firewall on the private network drops the connection"
OUTSIDE_ALLOWED_IPS = "outside every peer's AllowedIPs"
NO_ROUTE_ADVICE = "add the address to a peer's AllowedIPs, or give the [Interface] an Address of that family"
NAME_NOT_FOUND_ADVICE = "check the name (and the search domains in DNS =); `%wg resolve NAME` tries one"
DNS_SILENT_ADVICE = "check that DNS = is inside the peer's AllowedIPs and that a resolver runs there"
NO_DNS_SERVER_ADVICE = "add DNS = <the private resolver> to [Interface], or use an address"
ENDPOINT_UNRESOLVABLE_ADVICE = "check the Endpoint's spelling and this machine's DNS, or use an IP address"


@dataclass(frozen=True)
class Explanation:
    """One failure, explained. `fault`: what happened (a clause, no final period); `advice`: the likely
    causes or what to check (a clause); `text`: the whole message an exception carries (str(explanation)).
    The doctor shows fault and advice as its verdict's detail and fix; `%%wgsql` shows advice after "check:".
    """

    fault: str
    advice: str
    text: str

    def __str__(self) -> str:
        return self.text


def key_prefix(peer: str) -> str:
    """The fingerprint a message names a peer by: the first 8 characters of its base64 public key `peer`."""
    return peer[:PEER_KEY_CHARS]


def _hostport(host: str, port: int) -> str:
    """host:port, with an IPv6 literal in brackets (RFC 3986 section 3.2.2)."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


# ---- the WireGuard handshake ----------------------------------------------------------------------------------
def no_handshake(peer: str, endpoint: str | None, *, refused: bool = False, tried: Sequence[str] = (),
                 address: str | None = None, transport: str | None = None,
                 transport_state: str | None = None) -> Explanation:
    """The peer never completed a handshake (whitepaper 6.4: REKEY_ATTEMPT_TIME passed, or the caller's
    timeout did).

    peer: the peer's base64 public key or its prefix (only 8 characters are shown); endpoint: the configured
    Endpoint as "host:port", or None; refused: the host answered ICMP port unreachable; tried: the Endpoint
    name's addresses when there were several; address: the address in use, given when it differs from the name;
    transport/transport_state: set when the datagrams travel another way than UDP (the transport's masked
    description, e.g. "WebSocket wss://relay/wg (open)", and why it is not carrying them, or its state).
    """
    who = f"peer {key_prefix(peer)}..."
    if transport is not None:
        fault = f"{who} never answered the handshake through the {transport}"
        if transport_state:
            fault += f": {transport_state}"
        return Explanation(fault, HANDSHAKE_RELAY_CAUSES, f"{fault}. Likely causes: {HANDSHAKE_RELAY_CAUSES}.")
    shown = endpoint or "(no Endpoint configured)"
    if len(tried) > 1:
        shown += f" (tried {', '.join(tried)})"
    elif address and endpoint:
        shown += f" ({address})"
    if refused:
        fault = f"{who}: {shown} refused (ICMP port unreachable: nothing listens on that UDP port)"
        return Explanation(fault, HANDSHAKE_REFUSED_ADVICE, f"{fault}: {HANDSHAKE_REFUSED_ADVICE}.")
    fault = f"{who} at {shown} never answered the handshake"
    return Explanation(fault, HANDSHAKE_SILENT_CAUSES, f"{fault}. Likely causes: {HANDSHAKE_SILENT_CAUSES}.")


def endpoint_unresolvable(host: str, port: int, reason: str) -> Explanation:
    """The peer's Endpoint name does not resolve with this machine's resolver (reason: gai_strerror's text)."""
    fault = f"the peer's Endpoint {_hostport(host, port)} does not resolve on this machine ({reason})"
    return Explanation(fault, ENDPOINT_UNRESOLVABLE_ADVICE, f"{fault}; {ENDPOINT_UNRESOLVABLE_ADVICE}")


# ---- connections through the tunnel ---------------------------------------------------------------------------
def connection_refused(host: str, port: int, *, through: str = "the tunnel") -> Explanation:
    """The target answered the SYN with a reset (or ICMP port unreachable): ECONNREFUSED. through: the way in,
    e.g. "tunnel 'wg0'" or "the SOCKS5 proxy"."""
    fault = f"{_hostport(host, port)} refused the connection (reached through {through})"
    return Explanation(fault, REFUSED_CAUSES, f"{fault}: {REFUSED_CAUSES}")


def connect_timed_out(host: str, port: int, timeout: float, *, peer_silent: bool) -> Explanation:
    """A connection through the tunnel was not answered within `timeout` seconds. peer_silent: the WireGuard
    peer itself sent nothing (no handshake, no data) meanwhile, so the fault is the peer's, not the host's."""
    head = f"connecting to {_hostport(host, port)} timed out after {timeout:g} s"
    if peer_silent:
        fault = f"{head}: the WireGuard peer is not answering (no handshake or data from it recently)"
        return Explanation(fault, PEER_SILENT_ADVICE, f"{fault}; {PEER_SILENT_ADVICE}")
    fault = f"{head}: the tunnel is up but nothing answered"
    return Explanation(fault, HOST_SILENT_CAUSES, f"{fault}; {HOST_SILENT_CAUSES}")


def connect_failed(host: str, port: int, reason: str) -> Explanation:
    """Any other failure of a connection through the tunnel; reason: the error's own text."""
    fault = f"connecting to {_hostport(host, port)} through the tunnel failed: {reason}"
    return Explanation(fault, "check the address and the peer's routes", fault)


def proxy_unreachable(host: str, port: int, reply: int) -> Explanation:
    """A SOCKS5 proxy answered Host unreachable or TTL expired (RFC 1928 section 6, REP 4 or 6)."""
    fault = f"{_hostport(host, port)} is unreachable through the SOCKS5 proxy (reply {reply})"
    return Explanation(fault, HOST_SILENT_CAUSES, fault)


def proxy_failed(host: str, port: int, reply: int) -> Explanation:
    """A SOCKS5 proxy answered any other failure (RFC 1928 section 6)."""
    fault = f"the SOCKS5 proxy could not reach {_hostport(host, port)} (reply {reply})"
    return Explanation(fault, "check the address and the peer's routes", fault)


# ---- routing (cryptokey routing, whitepaper 2.1) --------------------------------------------------------------
def outside_allowed_ips(address: str) -> str:
    """Why one address cannot be routed: no peer's AllowedIPs cover it."""
    return f"{address}: {OUTSIDE_ALLOWED_IPS}"


def no_interface_address(address: str, version: int) -> str:
    """Why one address cannot be sent to: the [Interface] has no Address of its family to send from."""
    return f"{address}: the [Interface] has no IPv{version} Address"


def no_route(name: str, reasons: Sequence[str], *, literal: bool = False) -> Explanation:
    """None of a destination's addresses can be reached through the tunnel. name: what the user asked for;
    reasons: one per address (outside_allowed_ips, no_interface_address); literal: the name is itself the
    one address (then it is not repeated)."""
    shown = "; ".join(reasons) or "it has no addresses"
    fault = f"no route to {shown if literal else f'{name} ({shown})'} through the tunnel"
    return Explanation(fault, NO_ROUTE_ADVICE, f"{fault}: {NO_ROUTE_ADVICE}")


# ---- DNS through the tunnel -----------------------------------------------------------------------------------
def no_dns_server(name: str) -> Explanation:
    """A name was to be resolved but the config has no DNS = server."""
    fault = f"cannot resolve {name!r}: the config has no DNS = server for the tunnel"
    return Explanation(fault, NO_DNS_SERVER_ADVICE, f"{fault}; {NO_DNS_SERVER_ADVICE}")


def name_not_found(name: str, servers: Sequence[str]) -> Explanation:
    """The tunnel's DNS answered, without an address for the name (NXDOMAIN, no A/AAAA, or a failure)."""
    fault = f"{name!r} not found by the tunnel's DNS ({', '.join(servers)})"
    return Explanation(fault, NAME_NOT_FOUND_ADVICE, fault)


def dns_timed_out(name: str, servers: Sequence[str]) -> Explanation:
    """None of the tunnel's DNS servers answered for the name (RFC 1035 section 4.2.1 retries spent)."""
    fault = f"the tunnel's DNS server ({', '.join(servers)}) did not answer for {name!r}"
    return Explanation(fault, DNS_SILENT_ADVICE, f"{fault}; {DNS_SILENT_ADVICE}")


# ---- the stages of a database connection (`%%wgsql`) ----------------------------------------------------------
def stage_advice(stage: str, host: str, port: int, *, peer_silent: bool = False) -> str:
    """What to check when a database connection failed at `stage` ("handshake", "DNS", "TCP connect", "TLS",
    "authentication", "server"); host, port: the database as the user named it."""
    where = _hostport(host, port)
    if stage == "handshake":
        return ("the tunnel is up (%wg status), the peer's Endpoint and PublicKey, and that UDP to it is not "
                "blocked; %wg doctor tells which")
    if stage == "DNS":
        return (f"the name {host!r} (and the search domains in DNS =) and that the DNS = servers of the WireGuard "
                "config answer through the tunnel; `%wg resolve NAME` tries one")
    if stage == "TCP connect":
        if peer_silent:
            return f"the WireGuard peer is not answering: {PEER_SILENT_ADVICE}"
        return (f"that a server listens on {where} and that the peer's AllowedIPs and firewall let you reach it "
                "(%wg ping HOST)")
    if stage == "authentication":
        return "the user name and password (the DSN, PGPASSWORD or ~/.pgpass) and the server's pg_hba.conf"
    if stage == "TLS":
        return ("sslmode, sslrootcert (the CA that signed the server's certificate) and that the certificate "
                "names the host you connect to")
    return f"the database name and the server's log on {where}"


__all__ = [
    "Explanation", "connect_failed", "connect_timed_out", "connection_refused", "dns_timed_out",
    "endpoint_unresolvable", "key_prefix", "name_not_found", "no_dns_server", "no_handshake",
    "no_interface_address", "no_route", "outside_allowed_ips", "proxy_failed", "proxy_unreachable",
    "stage_advice",
]


def peer_not_answering(peer: str, endpoint: str | None, silent_for: float, *, refused: bool = False) -> str:
    """A tunnel connection failed because its WireGuard peer went silent (the engine's liveness check, and
    %wg status's reason). peer: the base64 public key (only its prefix is shown); endpoint: "host:port" or None;
    silent_for: seconds since anything came back while data was sent; refused: its host answers ICMP port
    unreachable (the handshakes keep being retried)."""
    shown = endpoint or "(no endpoint)"
    why = ("its host answers ICMP port unreachable: nothing listens on that UDP port now (is WireGuard running "
           "there?)") if refused else "it may be down or unreachable"
    return (f"the WireGuard peer at {shown} ({key_prefix(peer)}...) is not answering: nothing came back for "
            f"{silent_for:.0f} s while data was sent to it, not even to a new handshake; {why} (the connection "
            "was closed)")


def connection_lost(reason: str) -> str:
    """A statement failed because the tunnel's peer stopped answering (%%wgsql); reason: peer_not_answering's."""
    return (f"The connection to the server was lost: {reason}. The statement was not run again; check whether "
            "it took effect once the peer answers (%wg status), then re-run the cell: it reconnects.")


def cancel_unconfirmed(reason: str | None) -> str:
    """After an interrupt, when the server-side cancel could not be confirmed (never claim the server stopped
    the query unless the connection is idle again)."""
    why = f" ({reason})" if reason else ""
    return ("Query interrupted, but the cancel could not be confirmed" + why + ": the query may still be running "
            "on the server. The connection was closed; the next cell opens a new one.")
