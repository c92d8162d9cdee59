"""How a tunnel reaches its peer: plain UDP, a WebSocket URL, or "auto"; parsing only.

The transports themselves live in wgmagic/runtime/ (transport.py, websocket.py); this module sits at the
config layer so that wgmagic/config.py can check a `#@wgmagic Via = ...` comment without importing upward.

A WebSocket URL may name the framing of the datagrams inside it in its scheme: `ws://` and `wss://` carry one
WireGuard datagram per binary message (a `wgmagic relay`); `fly+wss://` and `fly+ws://` carry Fly.io's framing
(wgmagic/proto/flyframe.py), which Fly's WireGuard gateways speak. `fly` alone means `fly+wss://<the peer's
Endpoint host>:443/`, as flyctl dials it; `auto` takes that URL by itself when the peer is a Fly gateway
(`is_fly_gateway`). The framings' code is in wgmagic/runtime/wsframing.py, keyed by the names in FRAMINGS.
"""

from __future__ import annotations

import enum
import ipaddress
import os
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from wgmagic.errors import ConfigError

VIA_ENV = "WGMAGIC_VIA"
VIA_CA_ENV = "WGMAGIC_VIA_CA"

# The framings a WebSocket URL can name as `NAME+ws://` / `NAME+wss://` (none: "binary", a `wgmagic relay`'s
# one datagram per binary message). wgmagic/runtime/wsframing.py has their code under the same names.
BINARY_FRAMING = "binary"
FRAMINGS = (BINARY_FRAMING, "fly")
# Fly.io: its WireGuard gateways are named under gateway.6pn.dev, and its private network (6PN) is fdaa::/16.
FLY_GATEWAY_DOMAIN = "gateway.6pn.dev"
FLY_6PN = ipaddress.ip_network("fdaa::/16")
FLY_PORT = 443


class ViaMode(str, enum.Enum):
    """How the datagrams travel: UDP only, a WebSocket only, or AUTO (UDP first, the WebSocket if UDP gets no
    handshake; the ladder is wgmagic.runtime.fallback.plan). A str enum: its value is the word
    users write (`--via udp`)."""

    UDP = "udp"
    WEBSOCKET = "websocket"
    AUTO = "auto"
    # `--via fly`: Fly.io's framing to wss://<the peer's Endpoint host>:443/. Only ever a word parsed: choose_via
    # turns it into WEBSOCKET with that URL (fly+wss://HOST:443/), so no transport sees this mode.
    FLY = "fly"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Via:
    """How the tunnel reaches its peer: `mode` (ViaMode; a plain word is converted, ValueError if unknown),
    `url` (the ws:// or wss:// URL for WEBSOCKET and AUTO, or fly+wss:// / fly+ws:// for Fly.io's framing),
    `ca_file` (PEM file to verify wss:// with; with Fly's framing, verification happens only when one is given).
    `framing` is the framing the URL names ("binary" or "fly")."""

    mode: ViaMode = ViaMode.UDP
    url: str | None = None
    ca_file: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.mode, ViaMode):
            object.__setattr__(self, "mode", ViaMode(self.mode))

    @property
    def framing(self) -> str:
        """The framing inside the WebSocket: "fly" for a fly+ws(s):// URL, else "binary"."""
        return split_framing(self.url)[0] if self.url else BINARY_FRAMING

    def __str__(self) -> str:
        if self.mode is ViaMode.UDP:
            return "udp"
        if self.mode is ViaMode.FLY:
            return "fly"
        shown = mask_url(self.url) if self.url else "(no WebSocket URL)"
        return shown if self.mode is ViaMode.WEBSOCKET else f"auto {shown}"

    def __repr__(self) -> str:
        return f"Via({self})"


def mask_url(url: str) -> str:
    """The URL without its password (user:***@host), for messages and reprs."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "(an unparsable URL)"
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def split_framing(url: str) -> tuple[str, str]:
    """(framing, the plain ws:// or wss:// URL): "fly+wss://h/" -> ("fly", "wss://h/"); "wss://h/wg" ->
    ("binary", "wss://h/wg"). The URL is not checked here (check_url does)."""
    scheme, sep, rest = url.partition("://")
    framing, plus, plain = scheme.rpartition("+")
    if sep and plus and framing.lower() in FRAMINGS and framing.lower() != BINARY_FRAMING:
        return framing.lower(), f"{plain}://{rest}"
    return BINARY_FRAMING, url


def check_url(url: str) -> str:
    """A ws:// or wss:// URL with a host, or fly+ws:// / fly+wss:// (Fly.io's framing), else ValueError (the
    message never repeats a password)."""
    framing, plain = split_framing(url)
    try:
        parts = urllib.parse.urlsplit(plain)
        port = parts.port
    except ValueError:
        raise ValueError(f"{mask_url(url)} is not a valid URL") from None
    if parts.scheme.lower() not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"{mask_url(url)!r} is not a WebSocket URL: expected ws://HOST[:PORT]/PATH or "
                         "wss://HOST[:PORT]/PATH (or fly+wss://HOST[:PORT]/PATH for Fly.io's framing)")
    del port, framing
    return url


def fly_url(host: str, port: int = FLY_PORT) -> str:
    """flyctl's URL for a gateway host: fly+wss://HOST:443/ (an IPv6 literal in brackets)."""
    host = host.strip("[]")
    shown = f"[{host}]" if ":" in host else host
    return f"fly+wss://{shown}:{port}/"


def is_fly_gateway(endpoint_host: str | None, allowed_ips: Iterable[Any] = ()) -> bool:
    """Whether a peer is one of Fly.io's WireGuard gateways: its Endpoint host is under gateway.6pn.dev, or its
    AllowedIPs lie inside Fly's private network fdaa::/16 (what `fly wireguard create` writes)."""
    if endpoint_host:
        name = endpoint_host.strip("[]").rstrip(".").lower()
        if name == FLY_GATEWAY_DOMAIN or name.endswith("." + FLY_GATEWAY_DOMAIN):
            return True
    networks = []
    for item in allowed_ips:
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except (TypeError, ValueError):
            continue
    return bool(networks) and all(n.version == 6 and n.subnet_of(FLY_6PN) for n in networks)  # type: ignore[arg-type]


def parse_via(text: str) -> Via:
    """'udp', 'fly', 'auto', 'auto wss://...', or a ws:// / wss:// / fly+wss:// / fly+ws:// URL -> Via. Raises
    ValueError."""
    words = text.split()
    if not words:
        raise ValueError("empty: expected udp, fly, auto, or a ws:// or wss:// URL")
    head = words[0].lower()
    if head == ViaMode.UDP and len(words) == 1:
        return Via(ViaMode.UDP)
    if head == ViaMode.FLY and len(words) == 1:
        return Via(ViaMode.FLY)
    if head == ViaMode.AUTO and len(words) <= 2:
        return Via(ViaMode.AUTO, check_url(words[1]) if len(words) == 2 else None)
    if len(words) == 1:
        return Via(ViaMode.WEBSOCKET, check_url(words[0]))
    raise ValueError(f"{mask_url(text)!r}: expected udp, fly, auto, 'auto URL', or a ws:// or wss:// URL")


def choose_via(explicit: str | Via | None, config_via: str | None, *, ca_file: str | None = None,
               environ: Mapping[str, str] | None = None, peer: Any = None) -> Via:
    """The transport to use: the caller's `via` (argument, --via), else $WGMAGIC_VIA, else the config's
    `#@wgmagic Via = ...` comment, else UDP. "auto" without a URL takes one from the next source down, else,
    when `peer` is a Fly.io gateway (`is_fly_gateway`), Fly's framing to its Endpoint host. "fly" becomes
    fly+wss://<peer's Endpoint host>:443/. `peer`: the config's peer (anything with `.endpoint`, a (host, port)
    or None, and `.allowed_ips`), or None.
    The CA file for wss:// comes from `ca_file`, else $WGMAGIC_VIA_CA (else the system trust store).
    Raises ConfigError naming the source."""
    env = os.environ if environ is None else environ
    sources: list[tuple[str, str | Via]] = []
    if explicit:
        sources.append(("via", explicit))
    if env.get(VIA_ENV, "").strip():
        sources.append((VIA_ENV, env[VIA_ENV]))
    if config_via:
        sources.append(("the config's Via", config_via))
    parsed: list[Via] = []
    for name, value in sources:
        if isinstance(value, Via):
            parsed.append(value)
            continue
        try:
            parsed.append(parse_via(value))
        except ValueError as exc:
            raise ConfigError(f"{name}: {exc}") from None
    ca = ca_file or env.get(VIA_CA_ENV) or None
    endpoint = getattr(peer, "endpoint", None)
    endpoint_host = endpoint[0] if endpoint else None
    # "fly": Fly's framing to the Endpoint's host, port 443 (flyctl's URL); unresolved without an Endpoint.
    parsed = [Via(ViaMode.WEBSOCKET, fly_url(endpoint_host), v.ca_file)
              if v.mode is ViaMode.FLY and endpoint_host else v for v in parsed]
    if not parsed:
        return Via(ViaMode.UDP, None, ca)
    first = parsed[0]
    if first.mode is ViaMode.FLY:
        source = sources[0][0]
        raise ConfigError(f"{source}: fly takes the gateway's host from the peer's Endpoint, and there is none "
                          "here: give the gateway's URL instead (fly+wss://HOST/)")
    url = first.url
    if first.mode is ViaMode.AUTO and url is None:
        url = next((v.url for v in parsed[1:] if v.url), None)
    if (first.mode is ViaMode.AUTO and url is None and endpoint_host
            and is_fly_gateway(endpoint_host, getattr(peer, "allowed_ips", ()))):
        url = fly_url(endpoint_host)
    return Via(first.mode, url, ca or first.ca_file)
